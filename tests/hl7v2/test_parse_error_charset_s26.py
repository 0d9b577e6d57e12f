"""Errors of ``parse_message`` name the message in its character set (session 26).

``parse_message`` attached MSH-10 and MSH-9 read as Latin-1 to the errors it raised before
or while decoding: a UTF-8 message (MSH-18 ``UNICODE UTF-8``) with MSH-10 ``CTRL-é`` and a
broken segment, or a byte UTF-8 refuses further on, failed as ``CTRL-Ã©`` — in the
dead-letter record and the logs, while the queue (``peek_header``) held ``CTRL-é``. They are
now read as the peek reads them: MSH-18, UTF-8 behind a byte order mark, else the default
charset (the converter's ``default_charset``), unescaped as :attr:`Message.control_id`.
"""

from __future__ import annotations

import pytest

from converter import Converter, ConverterConfig
from converter.errors import CharsetError, ConversionError, ParseError
from converter.hl7v2 import peek_header

from ._support import parse

BOM = b"\xef\xbb\xbf"
BROKEN = "PID|1||MRN-1^^^HOSP^MR||DUPONT^Zoé\rnée le 01/01/1980|F"


def _message(
    *, msh18: str = "", control_id: str = "CTRL-é", msh9: str = "ADT^A01^ADT_A01", body: str
) -> str:
    msh = f"MSH|^~\\&|SND|FAC|RCV|RFAC|20240101120000||{msh9}|{control_id}|P|2.5||||||{msh18}"
    return f"{msh}\rEVN|A01|20240101120000\r{body}\r"


def _raised(data: bytes, **kwargs: str) -> ConversionError:
    with pytest.raises(ConversionError) as info:
        parse(data, **kwargs)
    return info.value


def test_a_broken_segment_of_a_utf8_message_names_its_control_id_in_utf8() -> None:
    data = _message(msh18="UNICODE UTF-8", msh9="ZÉ^Z01", body=BROKEN).encode("utf-8")
    error = _raised(data)
    assert isinstance(error, ParseError)
    assert error.location == "segment 4"
    # Before: CTRL-Ã© and ZÃ\x89^Z01.
    assert (error.control_id, error.message_type) == ("CTRL-é", "ZÉ^Z01")
    assert "(MSH-10 CTRL-é)" in str(error)
    # The id the message is queued and acknowledged under (peek_header's).
    assert error.control_id == peek_header(data).control_id


def test_an_undecodable_byte_further_on_keeps_the_utf8_control_id() -> None:
    # A Latin-1 é in PID-5 of a message declared UTF-8: decoding fails at that field.
    data = _message(msh18="UNICODE UTF-8", body="PID|1||MRN-1^^^HOSP^MR||DUPONT^Zoé").encode(
        "utf-8"
    )
    data = data.replace("Zoé".encode(), "Zoé".encode("latin-1"))
    error = _raised(data)
    assert isinstance(error, CharsetError)
    assert (error.control_id, error.message_type) == ("CTRL-é", "ADT^A01")


def test_a_latin1_message_declared_so_reads_in_latin1_and_unescapes() -> None:
    # Latin-1 bytes read as Latin-1 (as before); the escape \XE9\ is unescaped in the
    # message's charset, as Message.control_id and the peek give it (raw before).
    data = _message(msh18="8859/1", control_id="CTRL-é\\XE9\\", body=BROKEN).encode("latin-1")
    error = _raised(data)
    assert (error.control_id, error.message_type) == ("CTRL-éé", "ADT^A01")
    assert error.control_id == peek_header(data).control_id


def test_behind_a_bom_the_header_reads_as_utf8_whatever_msh18_says() -> None:
    data = BOM + _message(msh18="8859/1", body=BROKEN).encode("utf-8")
    error = _raised(data)
    assert (error.control_id, error.message_type) == ("CTRL-é", "ADT^A01")


def test_without_msh18_the_default_charset_reads_the_header() -> None:
    # ISO 8859-15's 0xA4 is € (Latin-1's ¤); 0xC9 É.
    data = _message(control_id="CTRL-€", msh9="ZÉ^Z01", body=BROKEN).encode("iso-8859-15")
    error = _raised(data, default_charset="iso-8859-15")
    assert (error.control_id, error.message_type) == ("CTRL-€", "ZÉ^Z01")
    # UTF-8 by default.
    utf8 = _message(body=BROKEN).encode("utf-8")
    assert _raised(utf8).control_id == "CTRL-é"


def test_an_unknown_version_names_the_message_in_its_charset() -> None:
    data = _message(msh18="UNICODE UTF-8", body="PID|1").encode("utf-8")
    data = data.replace(b"|P|2.5|", b"|P|9.9|")
    error = _raised(data)
    assert (error.control_id, error.message_type) == ("CTRL-é", "ADT^A01")


def test_an_invalid_msh2_names_the_control_id_in_the_message_charset() -> None:
    data = _message(msh18="UNICODE UTF-8", body="PID|1").encode("utf-8")
    data = data.replace(b"|^~\\&|", b"|^^|")
    error = _raised(data)
    assert (error.location, error.control_id) == ("MSH-2", "CTRL-é")


def test_the_converter_reads_errors_in_its_configured_default_charset() -> None:
    # The converter passes its default_charset (ConverterConfig) to the parser.
    converter = Converter(ConverterConfig(default_charset="8859/15", validate=False))
    data = _message(control_id="CTRL-€", body=BROKEN).encode("iso-8859-15")
    with pytest.raises(ParseError) as info:
        converter.convert_message(data)
    assert info.value.control_id == "CTRL-€"
