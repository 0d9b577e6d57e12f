"""The ordering key of an MLLP message naming no patient and whose control id reads empty.
Real sockets, the real client, a real service and its SQLite queue."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from tests.listeners.service.support import RunningService, make_config, running

# MSH-10 ``\H\`` (start highlighting): not blank, so the listener takes the message, but
# it unescapes to nothing — the control id the ingest reads is "".
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


def test_messages_without_patient_or_control_id_get_a_lane_each(tmp_path: Path) -> None:
    # Before: both keyed "mllp/APP-A^FAC-A|message:" — every such message of the sender in
    # one serial chain, each waiting behind the one before (a dead letter there, or a
    # retry in place, held up all the others).
    first, second = no_patient("20240314083512"), no_patient("20240314083513")
    config = make_config(tmp_path)
    with running(config) as service:
        acks = service.send([first, second])
        assert [a.code for a in acks] == ["AA", "AA"]
        keys = stored_keys(service)
    assert keys == [
        "mllp/APP-A^FAC-A|message:sha256:" + hashlib.sha256(body).hexdigest()[:16]
        for body in (first, second)
    ]


def test_a_control_id_still_names_the_lane(tmp_path: Path) -> None:
    body = no_patient("20240314083512").replace(EMPTY_ONCE_UNESCAPED.encode(), b"CID-7", 1)
    with running(make_config(tmp_path)) as service:
        assert [a.code for a in service.send([body])] == ["AA"]
        assert stored_keys(service) == ["mllp/APP-A^FAC-A|message:CID-7"]
