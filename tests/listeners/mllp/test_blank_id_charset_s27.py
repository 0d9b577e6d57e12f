"""An MSH-10 judged blank or not in the charset the message is finally read in (session 27).

``read_header`` judged MSH-10 in the service's ``converter.charset`` (and with a U+FFFD for
each byte that set does not decode), before the route was known; a message without MSH-18
is then read, and its control id stored, in its route's ``converter.charset``, bytes
invalid there read as Latin-1 (:func:`converter.hl7v2.peek_header`). So a control id that
is only a no-break space in the route's set (0xA0 in Latin-1, C2 A0 in UTF-8) or a C1
control (0x80 in Latin-1, € in windows-1252) got AA and was stored as a blank id, and a
0x80 that the route reads as € got AR 101 for a real id. A real service (MLLP on a socket,
SQLite queue, folder destination); the ACKs are the bytes the socket gave.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.listeners.service.support import adt, make_config, running
from tests.listeners.test_header_charset_s26 import _exchange, _segment

_PLACEHOLDER = "ZZCTRLZZ"


def _routes(charset: str) -> str:
    return f"""
[[routes]]
name = "legacy"
sending_facility = "FAC-OLD"
converter = {{ charset = "{charset}" }}
"""


def _message(control_id: bytes, *, facility: str, mrn: str) -> bytes:
    """An ADT^A01 without MSH-18 whose MSH-10 is ``control_id``, byte for byte."""
    return adt(_PLACEHOLDER, facility=facility, mrn=mrn).replace(_PLACEHOLDER.encode(), control_id)


def _stored(service_db: Path) -> list[str | None]:
    with sqlite3.connect(f"file:{service_db}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT control_id FROM messages ORDER BY seq")]


@pytest.mark.parametrize(
    ("service_charset", "route_charset", "facility", "control_id"),
    [
        # NBSP in the route's Latin-1; U+FFFD (not blank) as the UTF-8 default judged it.
        ("utf-8", "8859/1", "FAC-OLD", b"\xa0"),
        # € in the default windows-1252, a C1 control in the route's Latin-1.
        ("windows-1252", "8859/1", "FAC-OLD", b"\x80"),
        # "Â" + NBSP in the default Latin-1, one NBSP in the route's UTF-8.
        ("8859/1", "utf-8", "FAC-OLD", b"\xc2\xa0"),
        # No route: a byte UTF-8 does not decode is read (and stored) as Latin-1's NBSP.
        ("utf-8", "8859/1", "FAC-NEW", b"\xa0"),
    ],
)
def test_an_id_blank_in_the_charset_it_is_read_in_gets_ar_101_and_is_not_stored(
    tmp_path: Path, service_charset: str, route_charset: str, facility: str, control_id: bytes
) -> None:
    config = make_config(
        tmp_path, {"converter": {"charset": service_charset}}, extra=_routes(route_charset)
    )
    blank = _message(control_id, facility=facility, mrn="MRN-B1")
    after = _message(b"AFTER-1", facility=facility, mrn="MRN-B2")
    with running(config) as service:
        refused, accepted = _exchange(service, [blank, after])
        service.drained()
    # The AR every blank id gets: MSA-2 echoing MSH-10 as sent, 101 at MSH^1^10.
    assert _segment(refused, b"MSA")[1:3] == [b"AR", control_id]
    err = _segment(refused, b"ERR")
    assert (err[2], err[3].split(b"^")[0]) == (b"MSH^1^10", b"101")
    assert _segment(accepted, b"MSA")[1:3] == [b"AA", b"AFTER-1"]
    assert _stored(config.queue.path) == ["AFTER-1"]


@pytest.mark.parametrize(("control_id", "read_as"), [(b"\x80", "€"), (b"\x85", "…")])
def test_an_id_blank_only_in_the_default_charset_is_a_real_one_in_its_route(
    tmp_path: Path, control_id: bytes, read_as: str
) -> None:
    # Latin-1 reads 0x80 and 0x85 as C1 controls; this sender's route reads windows-1252.
    config = make_config(
        tmp_path, {"converter": {"charset": "8859/1"}}, extra=_routes("windows-1252")
    )
    message = _message(control_id, facility="FAC-OLD", mrn="MRN-R1")
    with running(config) as service:
        [ack] = _exchange(service, [message])
        service.drained()
    assert _segment(ack, b"MSA")[1:3] == [b"AA", control_id]
    assert _stored(config.queue.path) == [read_as]
