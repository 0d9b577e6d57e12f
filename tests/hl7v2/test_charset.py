"""MSH-18 character sets and decoding errors: ``converter.hl7v2.charset``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.errors import CharsetError, ConfigurationError, ParseError
from converter.hl7v2.charset import (
    UNKNOWN_CHARSET,
    UNSUPPORTED_CHARSET,
    charset_codec,
    codec_for,
    decode_message,
    message_codec,
)
from converter.hl7v2.er7 import split_messages
from listeners.http.text_input import encode_input

from ._support import SAMPLES, msh, parse


# -- codec_for -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("msh18", "codec"),
    [
        ("ASCII", "ascii"),
        ("8859/1", "iso-8859-1"),
        ("8859/15", "iso-8859-15"),
        ("UNICODE UTF-8", "utf-8"),
        ("UNICODE", "utf-8"),
        ("  unicode utf-8 ", "utf-8"),
        ("ISO IR192", "utf-8"),
        # IANA / Python names that senders write instead of table 0211 values.
        ("latin-1", "iso8859-1"),
        ("windows-1252", "cp1252"),
        ("utf8", "utf-8"),
    ],
)
def test_codec_for_known_sets(msh18: str, codec: str) -> None:
    assert codec_for(msh18, "utf-8") == codec


@pytest.mark.parametrize("msh18", ["", "   ", '""', ' "" '])
def test_codec_for_empty_uses_default(msh18: str) -> None:
    assert codec_for(msh18, "iso-8859-1") == "iso-8859-1"
    assert codec_for(msh18, "utf-8") == "utf-8"


@pytest.mark.parametrize("msh18", ["KLINGON-8", "UTF\x00-8"])
def test_codec_for_unknown_set(msh18: str) -> None:
    with pytest.raises(CharsetError) as info:
        codec_for(msh18, "utf-8")
    assert info.value.location == "MSH-18"
    # MSH-18 is message content: the text names the field, detail holds the value.
    assert info.value.reason == UNKNOWN_CHARSET == "unknown character set"
    assert info.value.detail == repr(msh18)


@given(st.text(max_size=20))
def test_codec_for_any_text_is_a_codec_or_a_charset_error(msh18: str) -> None:
    try:
        codec = codec_for(msh18, "utf-8")
    except CharsetError as exc:
        assert exc.location == "MSH-18"
    else:
        assert "|^~\\&\r".encode(codec) == b"|^~\\&\r"
        assert b"|^~\\&\r".decode(codec) == "|^~\\&\r"


@pytest.mark.parametrize(
    "msh18",
    [
        "UNICODE UTF-16",
        "UNICODE UTF-32",
        "UTF-16",
        "utf-32",
        # Not ASCII-compatible: delimiters cannot be found in the bytes.
        "CP500",
        "UTF-7",
        # Bytes-to-bytes codecs, not character sets.
        "BASE64",
        "HEX",
        "ROT13",
        # Python's codec that refuses every byte (found by the property test above).
        "UNDEFINED",
        # Reads ASCII as ASCII but writes "|" as 0xFC.
        "MAC-ARABIC",
    ],
)
def test_codec_for_unsupported_sets(msh18: str) -> None:
    with pytest.raises(CharsetError) as info:
        codec_for(msh18, "utf-8")
    assert info.value.location == "MSH-18"
    assert info.value.reason == UNSUPPORTED_CHARSET
    assert info.value.detail == repr(msh18)


# -- decode_message --------------------------------------------------------------------
def test_decode_message_ok() -> None:
    assert decode_message("MSH|é".encode(), "utf-8") == "MSH|é"
    assert decode_message(b"MSH|\xe9", "iso-8859-1") == "MSH|é"


def test_decode_error_names_segment_field_and_offset() -> None:
    data = b"MSH|^~\\&|A\rPID|1||123||Dup\xffnt^Jean"
    with pytest.raises(CharsetError) as info:
        decode_message(data, "utf-8")
    offset = data.index(b"\xff")
    assert info.value.location == "PID-5"
    assert info.value.reason == f"byte at offset {offset} is not valid utf-8"
    assert str(info.value) == f"byte at offset {offset} is not valid utf-8 at PID-5"
    assert info.value.detail == "byte 0xFF"  # a byte of the field: detail only


def test_decode_error_in_msh_counts_msh1() -> None:
    data = b"MSH|^~\\&|APP\xe9|FAC"
    with pytest.raises(CharsetError) as info:
        decode_message(data, "ascii")
    assert info.value.location == "MSH-3"
    assert "offset 12" in info.value.reason


def test_decode_error_names_segment_occurrence() -> None:
    data = b"MSH|^~\\&|A\nOBX|1|ST|X||ok\nOBX|2|ST|Y||bad \xc3("
    with pytest.raises(CharsetError) as info:
        decode_message(data, "utf-8")
    assert info.value.location == "OBX[2]-5"
    offset = data.index(b"\xc3")
    assert f"offset {offset}" in info.value.reason


def test_decode_error_with_non_default_field_separator() -> None:
    data = b"MSH#$%*@#A\rPID#1##x#\xff"
    with pytest.raises(CharsetError) as info:
        decode_message(data, "utf-8")
    assert info.value.location == "PID-4"


def test_decode_error_in_a_wrapped_line_names_its_number_not_its_start() -> None:
    # A field broken across lines: "DUP" would be a surname's start, not a segment name.
    data = b"MSH|^~\\&|A\rPID|1||123||DUPONT^Marie|||12 rue\rDUPONT Mari\xe9e"
    with pytest.raises(CharsetError) as info:
        decode_message(data, "utf-8")
    assert info.value.location == "segment 3"
    assert "DUP" not in str(info.value)


def test_decode_error_in_a_segment_named_by_its_name() -> None:
    data = b"MSH|^~\\&|A\rPV1\rPV1|1|I|W\xe9st"
    with pytest.raises(CharsetError) as info:
        decode_message(data, "utf-8")
    assert info.value.location == "PV1[2]-3"


# -- charset_codec: the rule for default charset settings -----------------------------------
@pytest.mark.parametrize(
    ("name", "codec"),
    [("utf-8", "utf-8"), ("8859/1", "iso-8859-1"), ("latin-1", "iso8859-1"), ("cp1252", "cp1252")],
)
def test_charset_codec_accepts_what_msh18_accepts(name: str, codec: str) -> None:
    assert charset_codec(name) == codec == codec_for(name, "ascii")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("nope", UNKNOWN_CHARSET),
        ("", UNKNOWN_CHARSET),
        ("utf-16", UNSUPPORTED_CHARSET),
        ("UNICODE UTF-32", UNSUPPORTED_CHARSET),
        ("cp037", UNSUPPORTED_CHARSET),
        ("rot13", UNSUPPORTED_CHARSET),
        ("hex", UNSUPPORTED_CHARSET),
    ],
)
def test_charset_codec_refuses_what_msh18_refuses(name: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{reason[:20]}"):
        charset_codec(name)
    if name:
        with pytest.raises(CharsetError):
            codec_for(name, "utf-8")


# -- through parse_message -------------------------------------------------------------
def _message(charset: str, pid5: bytes, control_id: str = "CS-1") -> bytes:
    head = msh(charset=charset, control_id=control_id).encode("ascii")
    return head + b"\rEVN|A01\rPID|1||123^^^H^MR||" + pid5 + b"\rPV1|1|I"


def test_ascii_message() -> None:
    message = parse(_message("ASCII", b"Martin^Paul"))
    assert message.codec == "ascii"
    assert str(message.PID[5][2]) == "Paul"


def test_ascii_message_with_8bit_byte_is_rejected() -> None:
    with pytest.raises(CharsetError) as info:
        parse(_message("ASCII", b"Mart\xedn"))
    assert info.value.location == "PID-5"
    assert info.value.control_id == "CS-1"


def test_latin1_message() -> None:
    message = parse(_message("8859/1", b"L\xe9vy^Ir\xe8ne"))
    assert message.codec == "iso-8859-1"
    assert str(message.PID[5]) == "Lévy"
    assert str(message.PID[5][2]) == "Irène"


def test_latin1_hex_escape_uses_the_message_codec() -> None:
    message = parse(_message("8859/1", b"L\\XE9\\vy"))
    assert str(message.PID[5]) == "Lévy"


def test_utf8_message() -> None:
    message = parse(_message("UNICODE UTF-8", "Noël^Zoé".encode()))
    assert message.codec == "utf-8"
    assert str(message.PID[5]) == "Noël"
    assert str(message.PID[5][2]) == "Zoé"


def test_empty_msh18_uses_default_charset() -> None:
    data = _message("", "Lévy".encode("latin-1"))
    assert str(parse(data, default_charset="iso-8859-1").PID[5]) == "Lévy"
    with pytest.raises(CharsetError):
        parse(data)  # default is UTF-8


def test_msh18_repetition_uses_the_first_set() -> None:
    message = parse(_message("8859/1~UNICODE UTF-8", b"L\xe9vy"))
    assert message.codec == "iso-8859-1"
    assert str(message.PID[5]) == "Lévy"


def test_unknown_charset_is_located_at_msh18() -> None:
    with pytest.raises(CharsetError) as info:
        parse(_message("EBCDIC-XYZ", b"Martin", control_id="CS-9"))
    assert info.value.location == "MSH-18"
    assert info.value.control_id == "CS-9"
    assert str(info.value) == "unknown character set at MSH-18 (MSH-10 CS-9)"
    assert info.value.detail == "'EBCDIC-XYZ'"
    assert info.value.message_type == "ADT^A01"  # read from MSH-9 before decoding


def test_undecodable_utf8_names_segment_field_and_offset() -> None:
    data = _message("UNICODE UTF-8", b"Dupr\xe9^Jean")
    with pytest.raises(CharsetError) as info:
        parse(data)
    error = info.value
    assert isinstance(error, ParseError)
    assert error.hl7_error_code == "102"
    assert error.location == "PID-5"
    assert error.control_id == "CS-1"
    offset = data.index(b"\xe9")
    assert f"offset {offset}" in str(error)
    # Safe to log: the field content is not in the message.
    assert "Dupr" not in str(error)


@pytest.mark.parametrize("msh18", ["UNICODE UTF-16", "UTF-16", "BASE64"])
def test_unsupported_charset_is_rejected(msh18: str) -> None:
    with pytest.raises(CharsetError) as info:
        parse(_message(msh18, b"Martin"))
    assert info.value.location == "MSH-18"
    assert "not supported" in info.value.reason
    assert info.value.control_id == "CS-1"


# -- samples ---------------------------------------------------------------------------
def test_latin1_sample() -> None:
    (raw,) = split_messages((SAMPLES / "ADT_A01_latin1.hl7").read_bytes())
    message = parse(raw.data)
    assert message.codec == "iso-8859-1"
    assert str(message.PID[5]) == "FOURNIER-LEFÈVRE"
    assert str(message.PID[5][2]) == "Hélène"
    assert str(message.DG1[3][2]) == "Pancréatite aiguë, sans précision"


def test_utf8_sample() -> None:
    (raw,) = split_messages((SAMPLES / "ADT_A01_crlf.hl7").read_bytes())
    message = parse(raw.data)
    assert message.codec == "utf-8"
    assert str(message.PID[5][2]) == "Noël"
    assert str(message.PID[5][3]) == "Étienne"


def test_latin1_sample_is_not_utf8() -> None:
    (raw,) = split_messages((SAMPLES / "ADT_A01_latin1.hl7").read_bytes())
    data = raw.data.replace(b"|8859/1|", b"|UNICODE UTF-8|")
    with pytest.raises(CharsetError) as info:
        parse(data)
    # The first non-ASCII byte is the "ç" of "français" in MSH-19.
    assert info.value.location == "MSH-19"
    assert info.value.control_id == "HPE-ADT-20240610-000103"


# -- message_codec: the parser's rule, shared with $convert-data's text input -----------
def _msh_fields(msh2: str = "^~\\&", msh18: str = "") -> list[str]:
    return msh(msh2=msh2, charset=msh18).split("|")


def test_message_codec_reads_the_first_repetition_of_msh18_with_msh2s_separator() -> None:
    assert message_codec(_msh_fields(msh18="8859/1~UNICODE UTF-8"), "utf-8", bom=False) == (
        "iso-8859-1"
    )
    # A sender's own repetition character: "~" is then text, the whole value one name.
    assert message_codec(_msh_fields("^#\\&", "8859/1#UNICODE UTF-8"), "utf-8", bom=False) == (
        "iso-8859-1"
    )
    with pytest.raises(CharsetError):
        message_codec(_msh_fields("^#\\&", "8859/1~UNICODE UTF-8"), "utf-8", bom=False)


def test_message_codec_default_when_msh18_is_empty_or_absent() -> None:
    assert message_codec(_msh_fields(), "iso-8859-15", bom=False) == "iso-8859-15"
    assert message_codec(["MSH", "^~\\&", "APP"], "ascii", bom=False) == "ascii"


def test_message_codec_is_utf8_behind_a_byte_order_mark_whatever_msh18_says() -> None:
    assert message_codec(_msh_fields(msh18="8859/1"), "ascii", bom=True) == "utf-8"
    assert message_codec(_msh_fields(msh18="KLINGON-8"), "ascii", bom=True) == "utf-8"


@pytest.mark.parametrize(
    ("msh2", "msh18", "bom"),
    [
        ("^~\\&", "", False),
        ("^~\\&", "8859/1", False),
        ("^~\\&", "8859/15~UNICODE UTF-8", False),
        ("^#\\&", "8859/1#UNICODE UTF-8", False),
        ("^~\\&", "8859/1", True),
    ],
)
def test_text_input_encodes_as_the_parser_decodes(msh2: str, msh18: str, bom: bool) -> None:
    """$convert-data's text, encoded by the listener, reads back as the same text: both
    take the character set from :func:`message_codec`."""
    name = "Lef\u00e8vre \u20ac" if bom or not msh18 else "Lef\u00e8vre"
    text = ("\ufeff" if bom else "") + msh(msh2=msh2, charset=msh18) + f"\rPID|1||1||{name}\r"
    data = encode_input(text, "hl7v2", "utf-8")
    parsed = parse(split_messages(data)[0].source)
    assert str(parsed.PID[5]) == name
