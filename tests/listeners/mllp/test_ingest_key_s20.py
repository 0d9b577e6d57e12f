"""The ordering key of a message naming no patient and whose control id reads empty
(``message_lane``), and of an MLLP message naming no patient. Real sockets, the real
client, a real service and its SQLite queue."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from listeners.ingest import message_lane
from tests.listeners.service.support import RunningService, make_config, running

# MSH-10 ``\H\`` (start highlighting): not blank as written, but it unescapes to nothing.
EMPTY_ONCE_UNESCAPED = "\\H\\"


def no_patient(event_time: str) -> bytes:
    """An A08 without PID (no patient to key on) whose MSH-10 unescapes to ""."""
    return (
        "MSH|^~\\&|APP-A|FAC-A|PASSERELLE|GHT|20240314083512+0100||ADT^A08^ADT_A01"
        f"|{EMPTY_ONCE_UNESCAPED}|P|2.5.1\r"
        f"EVN|A08|{event_time}\r"
        "PV1|1|O\r"
    ).encode()


def stored_keys(service: RunningService) -> list[str]:
    with sqlite3.connect(service.config.queue.path, timeout=30) as conn:
        return [row[0] for row in conn.execute("SELECT ordering_key FROM messages ORDER BY seq")]


def test_a_control_id_reading_empty_gets_a_lane_of_its_own() -> None:
    # Before: both keyed "…|message:" — every such message of a sender in one serial
    # chain, each waiting behind the one before. The MLLP listener now refuses such a
    # control id (AR 101, tests/listeners/mllp/test_mllp_s21.py); the AMQP intake still
    # keys its messages with message_lane, falling back to a digest of the body.
    first, second = no_patient("20240314083512"), no_patient("20240314083513")
    lanes = [message_lane("", body) for body in (first, second)]
    assert lanes == ["sha256:" + hashlib.sha256(body).hexdigest()[:16] for body in (first, second)]
    assert message_lane("CID-7", first) == "CID-7"


def test_a_control_id_still_names_the_lane(tmp_path: Path) -> None:
    body = no_patient("20240314083512").replace(EMPTY_ONCE_UNESCAPED.encode(), b"CID-7", 1)
    with running(make_config(tmp_path)) as service:
        assert [a.code for a in service.send([body])] == ["AA"]
        assert stored_keys(service) == ["mllp/APP-A^FAC-A|message:CID-7"]
