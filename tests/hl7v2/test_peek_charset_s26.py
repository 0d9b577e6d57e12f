"""peek_header reads header values in the message's character set (session 26).

It read MSH and PID as Latin-1 whatever MSH-18 said: a UTF-8 ``CTRL-é`` in MSH-10 was
stored as ``CTRL-Ã©``, a UTF-8 MSH-9 was logged as ``ZÃ\\x89^Z01`` and quoted
double-encoded in an AR's ERR-8. It now reads them as the parser does: MSH-18, UTF-8 behind
a byte order mark, the default charset it is given when MSH-18 is empty; a line that is not
valid in that set (or an unknown MSH-18) still reads as Latin-1, byte for byte, and never
raises.
"""

from __future__ import annotations

import pytest

from converter.hl7v2 import parse_message, peek_header

from ._support import CATALOG

PID = "PID|1||MRN-É7^^^HÔPITAL^MR||DUPONT^Zoé"


def _message(
    *, msh18: str, control_id: str = "CTRL-é", msh9: str = "ADT^A08^ADT_A01", app: str = "SÉND"
) -> str:
    msh = f"MSH|^~\\&|{app}|FAC|RCV|RFAC|20240101120000||{msh9}|{control_id}|P|2.5||||||{msh18}"
    return f"{msh}\rEVN|A08|20240101120000\r{PID}\r"


def test_a_utf8_message_reads_its_header_in_utf8() -> None:
    # Before: CTRL-Ã©, ZÃ\x89^Z01, SÃ\x89ND, MRN-Ã\x897^HÃ\x94PITAL.
    data = _message(msh18="UNICODE UTF-8", msh9="ZÉ^Z01").encode("utf-8")
    header = peek_header(data)
    assert header.control_id == "CTRL-é"
    assert (header.message_code, header.trigger, header.message_type) == ("ZÉ", "Z01", "ZÉ^Z01")
    assert header.sending_application == "SÉND"
    assert header.sender_identity == "SÉND|FAC"
    assert header.patient_key == "MRN-É7^HÔPITAL"


def test_a_latin1_message_declared_so_still_reads_in_latin1() -> None:
    header = peek_header(_message(msh18="8859/1").encode("latin-1"))
    assert (header.control_id, header.sending_application) == ("CTRL-é", "SÉND")
    assert header.patient_key == "MRN-É7^HÔPITAL"


@pytest.mark.parametrize("msh18", ["", '""'])
def test_without_msh18_the_default_charset_given_reads_the_header(msh18: str) -> None:
    # ISO 8859-15's 0xA4 is €, Latin-1's ¤: read in the set the caller configured.
    data = _message(msh18=msh18, control_id="CTRL-€").encode("iso-8859-15")
    assert peek_header(data, default_charset="iso-8859-15").control_id == "CTRL-€"
    utf8 = _message(msh18=msh18).encode("utf-8")
    assert peek_header(utf8, default_charset="utf-8").control_id == "CTRL-é"
    # The converter's default, UTF-8, when the caller names none.
    assert peek_header(utf8).control_id == "CTRL-é"


def test_behind_a_byte_order_mark_the_header_is_utf8_whatever_msh18_says() -> None:
    data = b"\xef\xbb\xbf" + _message(msh18="8859/1").encode("utf-8")
    assert peek_header(data).control_id == "CTRL-é"


def test_hexadecimal_escapes_are_read_in_the_message_charset() -> None:
    utf8 = _message(msh18="UNICODE UTF-8", control_id="CTRL-\\XC3\\\\XA9\\")
    assert peek_header(utf8.encode("utf-8")).control_id == "CTRL-é"
    # Before: the bytes of \XE9\ were read as UTF-8, invalid, and kept as written.
    latin = _message(msh18="8859/1", control_id="CTRL-\\XE9\\")
    assert peek_header(latin.encode("latin-1")).control_id == "CTRL-é"


def test_a_big5_value_whose_second_byte_is_the_escape_character_reads_whole() -> None:
    # 功 is A5 5C in Big5: 5C is "\", the escape character, when the bytes are split
    # before being decoded. Read as the parser reads it.
    msh = "MSH|^~\\&|功能|FAC|RCV|RFAC|20240101120000||ADT^A08^ADT_A01|功-1|P|2.5||||||BIG-5"
    data = f"{msh}\rEVN|A08|20240101120000\rPID|1||M-1^^^H^MR||WANG^Li\r".encode("big5")
    header = peek_header(data)
    message = parse_message(data, CATALOG)
    assert (header.sending_application, header.control_id) == ("功能", "功-1")
    assert (header.sending_application, header.control_id) == (
        message.sending_application,
        message.control_id,
    )


@pytest.mark.parametrize(
    ("msh18", "encoding", "default"),
    [
        ("UNICODE UTF-8", "utf-8", "utf-8"),
        ("8859/1", "latin-1", "utf-8"),
        ("8859/15", "iso-8859-15", "utf-8"),
        ("", "utf-8", "utf-8"),
        ("", "iso-8859-15", "iso-8859-15"),
    ],
)
def test_the_control_id_is_the_one_the_parser_reads(
    msh18: str, encoding: str, default: str
) -> None:
    data = _message(msh18=msh18, control_id="CTRL-éÉ").encode(encoding)
    peeked = peek_header(data, default_charset=default)
    parsed = parse_message(data, CATALOG, default_charset=default)
    assert peeked.control_id == parsed.control_id == "CTRL-éÉ"
    assert peeked.sending_application == parsed.sending_application == "SÉND"


def test_bytes_not_valid_in_the_declared_set_read_as_latin1_and_stay_apart() -> None:
    # Latin-1 bytes under MSH-18 UTF-8: no error (the parser names the place later), and
    # two such ids do not both read as "CTRL-\ufffd", one id for duplicate detection.
    first = peek_header(_message(msh18="UNICODE UTF-8").encode("latin-1"))
    second = peek_header(_message(msh18="UNICODE UTF-8", control_id="CTRL-è").encode("latin-1"))
    assert (first.control_id, second.control_id) == ("CTRL-é", "CTRL-è")
    assert first.patient_key == "MRN-É7^HÔPITAL"


def test_an_unknown_msh18_does_not_raise_and_reads_as_latin1() -> None:
    header = peek_header(_message(msh18="KLINGON").encode("latin-1"))
    assert header.control_id == "CTRL-é" and header.charset == "KLINGON"


def test_a_byte_not_valid_in_the_declared_set_spoils_only_itself() -> None:
    # A Latin-1 é in the patient's name and in MSH-7's place: the UTF-8 MSH-10 and MRN
    # still read as UTF-8, so the ordering key is the patient's other messages' one.
    data = _message(msh18="UNICODE UTF-8").encode("utf-8")
    data = data.replace("DUPONT^Zoé".encode(), b"DUPONT^Zo\xe9")
    data = data.replace(b"|FAC|", b"|FAC\xe9|", 1)
    header = peek_header(data)
    assert header.control_id == "CTRL-é"
    assert header.sending_facility == "FACé"
    assert header.patient_key == "MRN-É7^HÔPITAL"


def test_a_line_a_multibyte_set_refuses_below_0x80_reads_as_latin1() -> None:
    # ISO 2022-JP refuses ESC followed by an unknown final byte: no byte-wise fallback.
    data = _message(msh18="ISO IR87", app="A\x1b(ZB", control_id="C-1").encode("latin-1")
    header = peek_header(data)
    assert header.control_id == "C-1" and header.sending_application == "A\x1b(ZB"
