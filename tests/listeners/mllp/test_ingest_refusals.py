"""What the running service answers to frames it must not store: oversized messages and
acknowledgements sent to the listener. Real sockets, the real client, a real service."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from listeners.mllp import MllpClient, parse_ack
from listeners.mllp.framing import FrameReader, frame
from tests.listeners.service.support import (
    RunningService,
    adt,
    make_config,
    run,
    running,
    wait_until,
)
from tests.support.log_records import log_records

LIMIT = 4096
PATIENT = "Secretfamily"


def big(control_id: str, **kwargs: str) -> bytes:
    """An ADT message over :data:`LIMIT` bytes."""
    return adt(control_id, family=PATIENT, **kwargs) + b"NTE|1||" + b"X" * (2 * LIMIT) + b"\r"


def ack_message(control_id: str, acknowledged: str) -> bytes:
    """An original-mode ACK such as an engine sends back (MSH-9 ``ACK^A01^ACK``)."""
    return (
        f"MSH|^~\\&|ENGINE|FAC-A|PASSERELLE|GHT|20240314083512+0100||ACK^A01^ACK|{control_id}"
        f"|P|2.5.1\rMSA|AA|{acknowledged}\r"
    ).encode()


def stored_control_ids(service: RunningService) -> set[str]:
    """Every control id in the queue file (pending, delivered or dead letter)."""
    with sqlite3.connect(service.config.queue.path, timeout=30) as conn:
        return {row[0] for row in conn.execute("SELECT control_id FROM messages")}


@pytest.fixture
def ingest_logs() -> Iterator[list[logging.LogRecord]]:
    """Records of ``passerelle.ingest`` (whatever the logging configuration left behind)."""
    with log_records("passerelle.ingest") as records:
        yield records


def framing_errors(service: RunningService) -> float:
    return service.metrics().value("passerelle_mllp_framing_errors_total", listener="mllp")


def test_an_oversized_message_gets_ar_207_and_the_feed_goes_on(
    tmp_path: Path, ingest_logs: list[logging.LogRecord]
) -> None:
    config = make_config(tmp_path, {"mllp": {"max_frame_bytes": LIMIT}})
    first, enhanced = big("BIG-1"), big("BIG-2", accept_ack="AL", application_ack="NE")
    with running(config) as service:
        # One connection: the oversized message, the next one, an enhanced-mode one.
        acks = service.send([first, adt("AFTER-1"), enhanced, adt("AFTER-2")])
        assert [(a.code, a.acknowledged_id) for a in acks] == [
            ("AR", "BIG-1"),
            ("AA", "AFTER-1"),
            ("CR", "BIG-2"),
            ("AA", "AFTER-2"),
        ]
        for ack, message in ((acks[0], first), (acks[2], enhanced)):
            assert ack.error_codes == ("207",)
            assert ack.texts == (
                f"message of {len(message)} bytes exceeds the maximum of {LIMIT} bytes "
                "(mllp.max_frame_bytes)",
            )
        service.drained()
        assert stored_control_ids(service) == {"AFTER-1", "AFTER-2"}
        wait_until(lambda: framing_errors(service) == 2, timeout=5, what="the framing counter")
        metrics = service.metrics()
        assert metrics.value("passerelle_messages_received_total", type="oversized") == 2
        assert metrics.value("passerelle_messages_acknowledged_total", code="AR") == 1
        assert metrics.value("passerelle_messages_acknowledged_total", code="CR") == 1
        assert metrics.value("passerelle_ack_seconds_count", listener="mllp") == 4
        assert service.service.mllp is not None
        assert service.service.mllp.stats().connections_total == 1
    warnings = [r for r in ingest_logs if r.levelno == logging.WARNING]
    assert [(r.getMessage(), r.__dict__["control_id"], r.__dict__["size"]) for r in warnings] == [
        (f"oversized message rejected, not stored (mllp.max_frame_bytes = {LIMIT})", cid, size)
        for cid, size in (("BIG-1", len(first)), ("BIG-2", len(enhanced)))
    ]
    assert all(r.__dict__["listener"] == "mllp" and r.__dict__["peer"] for r in warnings)
    assert PATIENT not in str([r.__dict__ for r in ingest_logs])


def test_an_oversized_frame_without_a_readable_msh_gets_the_ar_of_an_unreadable_message(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, {"mllp": {"max_frame_bytes": LIMIT}})
    # MSH-10 straddles the end of the head: a cut "LONG-CONTROL-ID" must not be named.
    msh = adt("X").split(b"\r", 1)[0].decode()
    padded = msh.split("|")
    padded[7] = "S" * (LIMIT - len(msh) - 5)  # MSH-8 (security) pushes MSH-10 to the limit
    straddling = "|".join(padded).replace("|X|", "|LONG-CONTROL-ID|").encode() + b"\r"
    assert straddling.index(b"LONG-CONTROL-ID") < LIMIT < straddling.index(b"|P|2.5.1")
    with running(config) as service:
        acks = service.send(
            [
                b"NOT HL7 AT ALL " * 1000,
                adt("AFTER-1"),
                straddling + big("IGNORED").split(b"\r", 1)[1],
                adt("AFTER-2"),
            ]
        )
        assert [(a.code, a.acknowledged_id, a.error_codes) for a in acks] == [
            ("AR", "", ("100",)),  # as for any message that does not start with MSH
            ("AA", "AFTER-1", ()),
            ("AR", "", ("101",)),  # MSH-10 cut short: missing, not truncated
            ("AA", "AFTER-2", ()),
        ]
        service.drained()
        assert stored_control_ids(service) == {"AFTER-1", "AFTER-2"}
        wait_until(lambda: framing_errors(service) == 2, timeout=5, what="the framing counter")


def test_an_ack_sent_to_the_listener_is_not_acknowledged(
    tmp_path: Path, ingest_logs: list[logging.LogRecord]
) -> None:
    """ACKing an ACK starts a ping-pong between engines: no reply, nothing stored."""

    async def exchange(port: int) -> tuple[list[bytes], bytes]:
        async with MllpClient("127.0.0.1", port, timeout=10) as client:
            # Were the ACK answered, this send would read that answer (in-order replies).
            await client.send_only(ack_message("ENG-1", "OUR-1"))
            await client.send_only(ack_message("ENG-2", "OUR-2"))
            after = await client.send(adt("AFTER-ACK-1"))
        # A raw connection: nothing at all comes back for an ACK.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = FrameReader(reader)
        writer.write(frame(ack_message("ENG-3", "OUR-3")))
        await writer.drain()
        silence: list[bytes] = []
        try:
            reply = await asyncio.wait_for(frames.read_frame(), 1.0)
            silence.append(reply or b"(closed)")
        except TimeoutError:
            pass
        writer.close()
        return silence, after

    config = make_config(tmp_path)
    with running(config) as service:
        silence, after = run(exchange(service.mllp_port()))
        assert silence == []
        info = parse_ack(after)
        assert (info.code, info.acknowledged_id) == ("AA", "AFTER-ACK-1")
        service.drained()
        assert stored_control_ids(service) == {"AFTER-ACK-1"}
        metrics = service.metrics()
        assert metrics.value("passerelle_messages_received_total", type="ACK") == 3
        assert metrics.value("passerelle_messages_acknowledged_total") == 1
        assert metrics.value("passerelle_messages_dead_lettered_total") == 0
    # One WARNING per connection; the second ACK on the first connection at DEBUG.
    about_acks = [r for r in ingest_logs if r.__dict__.get("event") == "ack_received"]
    assert [(r.levelno, r.__dict__["control_id"]) for r in about_acks] == [
        (logging.WARNING, "ENG-1"),
        (logging.DEBUG, "ENG-2"),
        (logging.WARNING, "ENG-3"),
    ]
    assert all(r.__dict__["listener"] == "mllp" and r.__dict__["peer"] for r in about_acks)
