"""MLLP release 2 with ``ack_after = "delivery"``: the commit block is written as soon as
the message is stored, the HL7 ACK once the FHIR server answered. Before, the commit
waited for the delivery too, and a sender whose commit timeout is shorter than a
delivery (Mirth Connect's MLLPv2 mode) took the message as not committed and sent it
again. The real service, the real FHIR server (made slow), a raw socket."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from listeners.mllp import CommitAck, frame, parse_ack
from tests.listeners.service.support import adt, make_config, patients, running
from tests.support.fhirserver import FhirServer

SLOW_SERVER_MS = 4000


def _read_block(sock: socket.socket, pending: bytearray) -> bytes:
    """The next MLLP block's content (VT … FS CR), reading as needed."""
    while b"\x1c\r" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the service")
        pending += chunk
    end = pending.index(b"\x1c\r")
    block = bytes(pending[:end])
    del pending[: end + 2]
    return block.removeprefix(b"\x0b")


def test_the_commit_comes_once_stored_and_the_ack_once_delivered(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = make_config(
        tmp_path,
        {"mllp": {"ack_after": "delivery", "delivery_ack_timeout": 30, "release": 2}},
        fhir_url=fhir.base_url,
    )
    fhir.delay(SLOW_SERVER_MS, count=1)
    with running(config) as service:
        with socket.create_connection(("127.0.0.1", service.mllp_port()), timeout=30) as sock:
            pending = bytearray()
            started = time.monotonic()
            sock.sendall(frame(adt("R2-DLV-1", mrn="MRN-R2-DLV")))
            commit = _read_block(sock, pending)
            committed_after = time.monotonic() - started
            ack = _read_block(sock, pending)
            acked_after = time.monotonic() - started
        assert commit == CommitAck.ACK.value
        parsed = parse_ack(ack)
        assert (parsed.code, parsed.acknowledged_id) == ("AA", "R2-DLV-1")
        # The ACK waited for the slow server; the commit did not.
        assert acked_after >= SLOW_SERVER_MS / 1000 - 0.1
        assert committed_after < SLOW_SERVER_MS / 1000 / 2
        assert patients(fhir, "MRN-R2-DLV")
