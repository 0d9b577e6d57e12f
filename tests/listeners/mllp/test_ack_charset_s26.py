"""ACKs of a message without MSH-18 written in its route's charset (session 26).

``read_header``, which the ACK is built from, read a message without MSH-18 in the
service's default charset even when its route's converter has a charset of its own
(``converter = { charset = "8859/15" }``): MSA-2 came back right (received bytes are copied
as sent), but text of the service's own was encoded in the service's default, UTF-8. An
ISO 8859-15 sender whose ``Z€^Z01`` was refused read ERR-8 ``Zâ\\x82¬\\S\\Z01``.
:meth:`MessageHeader.with_default_charset` gives the header the route reads it with.
The service test runs a real service (MLLP on a socket) and reads the ACK's bytes.
"""

from __future__ import annotations

from pathlib import Path

from listeners.mllp import AckOutcome, build_ack, parse_ack, read_header
from tests.listeners.service.support import adt, make_config, running
from tests.listeners.test_header_charset_s26 import _exchange, _segment

#: The service default is UTF-8; this sender's route reads ISO 8859-15, whose 0xA4 is €.
ROUTES = """
[[routes]]
name = "legacy"
sending_facility = "FAC-OLD"
converter = { charset = "8859/15" }
"""


def _unsupported(facility: str, encoding: str) -> bytes:
    """A ``Z€^Z01`` (no such type is converted) with MSH-10 ``CTRL-€`` and no MSH-18."""
    msh = f"MSH|^~\\&|SND|{facility}|RCV|RFAC|20240101120000||Z€^Z01|CTRL-€|P|2.5"
    return f"{msh}\rEVN|Z01|20240101120000\r".encode(encoding)


def test_a_route_charset_writes_the_ack_of_a_message_without_msh18(tmp_path: Path) -> None:
    config = make_config(tmp_path, extra=ROUTES)
    legacy = _unsupported("FAC-OLD", "iso-8859-15")
    modern = _unsupported("FAC-NEW", "utf-8")
    accepted = adt("CTRL-€", facility="FAC-OLD", mrn="MRN-E1", encoding="iso-8859-15")
    with running(config) as service:
        refused_legacy, refused_modern, accepted_ack = _exchange(
            service, [legacy, modern, accepted]
        )
    # MSA-2: the bytes sent, in both charsets (copied, as before).
    assert _segment(refused_legacy, b"MSA")[1:3] == [b"AR", b"CTRL-\xa4"]
    assert _segment(refused_modern, b"MSA")[1:3] == [b"AR", "CTRL-€".encode()]
    assert _segment(accepted_ack, b"MSA")[1:3] == [b"AA", b"CTRL-\xa4"]
    # ERR-8 quotes MSH-9 in the charset the sender reads: the route's for FAC-OLD (before:
    # UTF-8's E2 82 AC), the service's default for the other sender.
    assert b"Z\xa4\\S\\Z01" in _segment(refused_legacy, b"ERR")[8]
    assert "Z€\\S\\Z01".encode() in _segment(refused_modern, b"ERR")[8]
    # MSH-18 stays empty: the sender reads the ACK in its own default, as it wrote.
    assert len(_segment(refused_legacy, b"MSH")) < 18
    assert parse_ack(refused_modern).texts == ("unsupported message type Z€^Z01",)


def test_with_default_charset_writes_our_text_in_that_set() -> None:
    data = _unsupported("FAC-OLD", "iso-8859-15")
    header = read_header(data, default_charset="utf-8")
    routed = header.with_default_charset("iso-8859-15")
    assert (header.codec, routed.codec) == ("utf-8", "iso-8859-15")
    outcome = AckOutcome.reject("200", "unsupported message type Z€^Z01")
    ack = build_ack(routed, outcome, control_id="A1")
    assert _segment(ack, b"MSA")[1:3] == [b"AR", b"CTRL-\xa4"]
    assert _segment(ack, b"ERR")[8] == b"unsupported message type Z\xa4\\S\\Z01"
    # What the header was judged by is kept; unchanged when the default is the same.
    assert routed.readable and routed.control_id == header.control_id
    assert header.with_default_charset("utf-8") is header


def test_a_message_naming_its_charset_keeps_it() -> None:
    msh = "MSH|^~\\&|SND|FAC-OLD|RCV|RFAC|20240101120000||Z€^Z01|CTRL-€|P|2.5||||||UNICODE UTF-8"
    header = read_header(msh.encode(), default_charset="utf-8")
    assert header.with_default_charset("iso-8859-15") is header
    # An MSH-18 this service cannot write stays so (the ACK is ASCII, AR 103).
    unknown = read_header(
        b"MSH|^~\\&|S|F|R|RF|20240101||ADT^A01|C1|P|2.5||||||EBCDIC-XYZ",
        default_charset="utf-8",
    )
    assert unknown.codec is None
    assert unknown.with_default_charset("iso-8859-15").codec is None
