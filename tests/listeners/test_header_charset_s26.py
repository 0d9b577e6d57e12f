"""Header values of a received message read in its character set, end to end (session 26).

``peek_header`` read MSH as Latin-1 whatever MSH-18 said. Over MLLP, a UTF-8 message
typed ``ZÉ^Z01`` got an AR whose ERR-8 quoted ``ZÃ\\x89^Z01`` (written in UTF-8: double
encoded), and a UTF-8 MSH-10 ``CTRL-é`` was stored as ``CTRL-Ã©``. The ACK's MSA-2 was
right (copied byte for byte), and stays so. A real service (MLLP on a socket, SQLite
queue, folder destination); the ACKs are read as the bytes the socket gave.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from listeners.mllp import MllpClient, parse_ack
from tests.listeners.service.support import (
    RunningService,
    adt,
    latin_name_adt,
    make_config,
    run,
    running,
)

UNSUPPORTED_UTF8 = (
    "MSH|^~\\&|SND|SFAC|RCV|RFAC|20240101120000||ZÉ^Z01|Q2-é|P|2.5||||||UNICODE UTF-8\r"
).encode()


def _exchange(service: RunningService, messages: Sequence[bytes]) -> list[bytes]:
    """Each message sent on one MLLP connection; the ACKs' bytes, unframed."""

    async def scenario() -> list[bytes]:
        async with MllpClient("127.0.0.1", service.mllp_port(), timeout=20) as client:
            return [await client.send(message) for message in messages]

    return run(scenario())


def _segment(ack: bytes, name: bytes) -> list[bytes]:
    [segment] = [s for s in ack.split(b"\r") if s.startswith(name + b"|")]
    return segment.split(b"|")


def _stored(config_path: Path) -> list[tuple[str, str]]:
    """(control_id, message_type) of every message the queue holds, in order."""
    with sqlite3.connect(f"file:{config_path}?mode=ro", uri=True) as db:
        return list(db.execute("SELECT control_id, message_type FROM messages ORDER BY seq"))


def _families(folder: Path) -> list[str]:
    families = []
    for path in sorted(folder.rglob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]:
            if entry["resource"]["resourceType"] == "Patient":
                families.append(entry["resource"]["name"][0]["family"])
    return sorted(families)


def test_utf8_and_latin1_header_values_reach_the_ack_and_the_queue_unchanged(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    utf8 = adt("CTRL-é", family="Zoéline", mrn="MRN-U1", charset="UNICODE UTF-8")
    latin1 = latin_name_adt("CTRL-è", "MRN-L1", charset="8859/1", encoding="latin-1")
    with running(config) as service:
        refused, accepted, accepted_latin1 = _exchange(service, [UNSUPPORTED_UTF8, utf8, latin1])
        service.drained()
    # The AR: MSA-2 the bytes sent, ERR-8 naming the type in UTF-8 once (^ escaped).
    assert _segment(refused, b"MSA")[1:3] == [b"AR", "Q2-é".encode()]
    err8 = _segment(refused, b"ERR")[8]
    assert "ZÉ\\S\\Z01".encode() in err8, err8
    assert parse_ack(refused).texts == ("unsupported message type ZÉ^Z01",)
    # Accepted, acknowledged by the id sent, in the message's own charset.
    assert _segment(accepted, b"MSA")[1:3] == [b"AA", "CTRL-é".encode()]
    assert _segment(accepted_latin1, b"MSA")[1:3] == [b"AA", "CTRL-è".encode("latin-1")]
    # Stored under the control ids sent (CTRL-Ã© before), and both delivered.
    assert _stored(config.queue.path) == [
        ("CTRL-é", "ADT^A01^ADT_A01"),
        ("CTRL-è", "ADT^A08^ADT_A01"),
    ]
    folder = config.destinations["default"].folder
    assert folder is not None
    assert _families(folder) == ["Lefèvre", "Zoéline"]


def test_without_msh18_the_route_default_charset_reads_the_control_id(tmp_path: Path) -> None:
    # The service default is UTF-8; this sender's route says ISO 8859-15, whose 0xA4 is €
    # (Latin-1's ¤): the stored id is the one the route's converter reads.
    routes = """
[[routes]]
name = "legacy"
sending_facility = "FAC-OLD"
converter = { charset = "8859/15" }
"""
    config = make_config(tmp_path, extra=routes)
    legacy = adt("CTRL-€", facility="FAC-OLD", mrn="MRN-E1", encoding="iso-8859-15")
    modern = adt("CTRL-é", mrn="MRN-E2")  # no MSH-18: the service default, UTF-8
    with running(config) as service:
        acks = _exchange(service, [legacy, modern])
        service.drained()
    assert [_segment(ack, b"MSA")[1] for ack in acks] == [b"AA", b"AA"]
    assert [row[0] for row in _stored(config.queue.path)] == ["CTRL-€", "CTRL-é"]
