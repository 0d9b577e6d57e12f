"""HL7 acknowledgements built from received bytes."""

from __future__ import annotations

import encodings
import pkgutil
from datetime import UTC, datetime
from encodings.aliases import aliases

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.errors import CharsetError, MappingError, ParseError, UnsupportedMessageError
from converter.hl7v2.charset import decode_message
from converter.hl7v2.encoding import Encoding
from listeners.errors import QueueError
from listeners.mllp.ack import (
    AckBuilder,
    AckCode,
    AckOutcome,
    ControlIdGenerator,
    ErrorLocation,
    Severity,
    build_ack,
    parse_ack,
    read_header,
    wants_accept_ack,
)

from ._support import PATIENT_NAME, message

FIXED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def segments(ack: bytes, codec: str = "utf-8") -> list[list[str]]:
    """The ACK's segments split on its own field separator (strict decoding)."""
    text = ack.decode(codec)
    assert text.endswith("\r")
    sep = text[3]
    return [line.split(sep) for line in text[:-1].split("\r")]


def test_msh_swaps_sender_and_receiver_and_keeps_message_settings() -> None:
    msg = message(
        "CTRL-42",
        version="2.5.1",
        charset="UNICODE UTF-8",
        sending=("LAB^1.2.3^ISO", "EAST"),
        receiving=("PASSERELLE", "HQ"),
    )
    ack = build_ack(msg, control_id="ACK-1", timestamp=FIXED)
    msh, msa = segments(ack)
    assert msh[:3] == ["MSH", "^~\\&", "PASSERELLE"]
    assert msh[3:6] == ["HQ", "LAB^1.2.3^ISO", "EAST"]
    assert msh[6] == "20240506070809+0000"
    assert msh[8] == "ACK^A01^ACK"
    assert msh[9] == "ACK-1"
    assert msh[10:12] == ["P", "2.5.1"]
    assert msh[17] == "UNICODE UTF-8"
    assert msa == ["MSA", "AA", "CTRL-42"]
    assert PATIENT_NAME.split("^")[0].encode() not in ack


@pytest.mark.parametrize(
    ("sep", "msh2"),
    [("|", "^~\\&#"), ("*", "%$!@"), ("#", "^~\\&"), ("|", "^~\\&")],
)
def test_ack_uses_the_message_delimiters(sep: str, msh2: str) -> None:
    msg = message("C1", sep=sep, msh2=msh2, msh9="ORU^R01^ORU_R01")
    outcome = AckOutcome.error(
        "207", f"bad {sep}{msh2} value", location=ErrorLocation("OBX", 2, 5, None, 1)
    )
    ack = build_ack(msg, outcome, control_id="A1")
    assert ack.startswith(f"MSH{sep}{msh2}{sep}".encode())
    msh, msa, err = segments(ack)
    comp, esc = msh2[0], msh2[2]
    assert msh[8] == f"ACK{comp}R01{comp}ACK"
    assert msa == ["MSA", "AE", "C1"]
    assert err[2] == comp.join(["OBX", "2", "5", "1", "1"])
    assert err[3] == comp.join(["207", "Application internal error", "HL70357"])
    assert err[4] == "E"
    # Delimiters in the text are escaped with the message's own escape character.
    assert (
        err[8]
        == "bad "
        + "".join(f"{esc}{code}{esc}" for code in ("F", "S", "R", "E", "T"))
        + (f"{esc}P{esc}" if len(msh2) == 5 else "")
        + " value"
    )
    enc = Encoding.from_msh(sep, msh2)
    assert enc.unescape(err[8]) == f"bad {sep}{msh2} value"
    assert parse_ack(ack).texts == (f"bad {sep}{msh2} value",)


def test_enhanced_mode_gets_accept_codes() -> None:
    msg = message("E1", accept_ack="AL", application_ack="NE")
    assert segments(build_ack(msg))[1][1] == "CA"
    assert segments(build_ack(msg, AckOutcome.error()))[1][1] == "CE"
    assert segments(build_ack(msg, AckOutcome.reject("200")))[1][1] == "CR"
    assert segments(build_ack(msg, mode="original"))[1][1] == "AA"
    assert segments(build_ack(message("O1"), mode="enhanced"))[1][1] == "CA"
    assert segments(build_ack(message("O1"), AckOutcome(AckCode.CR)))[1][1] == "AR"


@pytest.mark.parametrize(
    ("msh15", "msh16", "success", "expected"),
    [
        ("", "", True, True),
        ("", "", False, True),
        ("AL", "NE", True, True),
        ("AL", "AL", False, True),
        ("NE", "AL", True, False),
        ("NE", "AL", False, False),
        ("ER", "NE", True, False),
        ("ER", "NE", False, True),
        ("SU", "NE", True, True),
        ("SU", "NE", False, False),
        ("", "AL", True, True),
        ("XX", "", False, True),
    ],
)
def test_wants_accept_ack(msh15: str, msh16: str, success: bool, expected: bool) -> None:
    msg = message("W", accept_ack=msh15, application_ack=msh16)
    assert wants_accept_ack(msg, success=success) is expected


def test_unique_control_ids() -> None:
    builder = AckBuilder()
    ids = {segments(builder.build(message("X")))[0][9] for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) <= 20 for i in ids)


def test_control_id_generator_is_injectable() -> None:
    generator = ControlIdGenerator(prefix="P", clock=lambda: 1700000000.5, start=7)
    assert [generator(), generator()] == ["P1700000000500000007", "P1700000000500000008"]
    builder = AckBuilder(control_ids=iter(["ID1", "ID2"]).__next__, clock=lambda: FIXED)
    assert [segments(builder.build(message("X")))[0][9] for _ in range(2)] == ["ID1", "ID2"]


def test_err_segment_fields() -> None:
    outcome = AckOutcome.reject(
        "203", "unsupported version 9.9", location=ErrorLocation.parse("MSH-12")
    )
    _, msa, err = segments(build_ack(message("V", version="2.6"), outcome))
    assert msa == ["MSA", "AR", "V"]
    assert err == [
        "ERR",
        "",
        "MSH^1^12",
        "203^Unsupported version id^HL70357",
        "E",
        "",
        "",
        "",
        "unsupported version 9.9",
    ]
    info = parse_ack(build_ack(message("V", version="2.6"), outcome))
    assert info.error_codes == ("203",)
    assert not info.success


def test_warning_on_an_accept() -> None:
    outcome = AckOutcome(AckCode.AA, "205", Severity.WARNING, "retransmission")
    _, msa, err = segments(build_ack(message("D"), outcome))
    assert msa == ["MSA", "AA", "D"]
    assert err[3:5] == ["205^Duplicate key identifier^HL70357", "W"]


def test_versions_before_2_5_use_err_1_and_msa_3() -> None:
    outcome = AckOutcome.reject("102", "bad date", location=ErrorLocation.parse("PID[2]-7.1"))
    _, msa, err = segments(build_ack(message("OLD", version="2.3"), outcome))
    assert msa == ["MSA", "AR", "OLD", "bad date", "", "", "102^Data type error^HL70357"]
    assert err == ["ERR", "PID^2^7^102&Data type error&HL70357"]
    read = parse_ack(build_ack(message("OLD", version="2.3"), outcome))
    assert read.error_codes == ("102",)
    assert read.code == "AR"  # MSA-1, not ERR-1's error code (which overwrote it)


def test_unreadable_message_still_gets_a_well_formed_ar() -> None:
    for payload in (b"", b"hello world", b"\xff\xfe\x00garbage", b"PID|1||x\r", b"MSH"):
        header = read_header(payload)
        assert not header.readable
        outcome = header.rejection()
        assert outcome is not None
        ack = build_ack(payload, outcome)
        msh, msa, err = segments(ack, "ascii")
        assert msh[1] == "^~\\&"
        assert msh[8] == "ACK^^ACK"
        assert msa[:2] == ["MSA", "AR"]
        assert (msa[2:] or [""]) == [""]  # MSA-2 empty: no control id to echo
        assert err[3].split("^")[0] in ("100", "101")
        assert err[4] == "E"


def test_invalid_msh2_keeps_the_control_id() -> None:
    payload = b"MSH|AB|LAB|F|P|H|2024||ADT^A01|KEEP-ME|P|2.5\rPID|1\r"
    header = read_header(payload)
    assert header.problem_code == "102"
    ack = build_ack(payload, header.rejection())
    _, msa, err = segments(ack)
    assert msa == ["MSA", "AR", "KEEP-ME"]
    assert err[2] == "MSH^1^2"


# UNDEFINED and a NUL byte once escaped codec_for() as bare exceptions: the listener
# closed the connection without an ACK, and the sender re-sent the message forever.
@pytest.mark.parametrize(
    "charset", ["KLINGON", "UNDEFINED", "UTF\x00-8", "MAC-ARABIC", "UNICODE UTF-16"]
)
def test_unknown_charset_is_reported_and_the_ack_is_ascii_without_msh18(charset: str) -> None:
    # The AR is written in ASCII; echoing MSH-18 would make a receiver that honours it
    # (HAPI does) decode the AR as UTF-16 and read garbage. An empty MSH-18 means ASCII.
    payload = message("CS", charset=charset, sending=("LABÉ", "F")).decode().encode("latin-1")
    header = read_header(payload)
    assert header.codec is None
    assert header.problem_code == "103"
    ack = build_ack(payload, header.rejection())
    assert ack.isascii()
    msh, msa, err = segments(ack, "ascii")
    assert msa == ["MSA", "AR", "CS"]
    assert len(msh) == 12  # MSH-12 is the last field: no MSH-18
    assert msh[4] == "LAB\\XC9\\"  # the non-ASCII byte, escaped so that it stays ASCII
    assert err[2] == "MSH^1^18"
    assert parse_ack(ack).header.codec == "utf-8"  # the reader's default, not UTF-16


def test_a_supported_charset_is_still_declared() -> None:
    for charset in ("UNICODE UTF-8", "8859/1", "ASCII", "ISO IR87"):
        assert segments(build_ack(message("S", charset=charset)), "latin-1")[0][17] == charset


def test_wrong_charset_gives_a_valid_utf8_ack() -> None:
    # MSH-18 says UTF-8, but the bytes are Latin-1 (in MSH-3 and in PID).
    latin = message("WC", charset="UNICODE UTF-8", sending=("LABÉ", "F")).decode()
    payload = latin.replace("Zyxwvut", "Zyxwvüt").encode("latin-1")
    header = read_header(payload)
    assert header.codec == "utf-8"
    with pytest.raises(CharsetError) as caught:
        decode_message(payload, "utf-8")
    ack = build_ack(payload, AckOutcome.from_error(caught.value))
    msh, msa, err = segments(ack, "utf-8")  # decodes strictly
    assert msh[4] == "LAB\\XC9\\"
    assert msa == ["MSA", "AR", "WC"]
    assert err[3].startswith("102^")
    assert err[2].startswith("MSH^1^3")
    assert b"\xfc" not in ack


@pytest.mark.parametrize(
    ("version", "msh9"),
    [
        ("2.1", "ACK"),  # MSH-9 is an ID in v2.1: the message type only
        ("2.2", "ACK^A01"),  # CM: message type and trigger event
        ("2.3", "ACK^A01"),
        ("2.3.0", "ACK^A01"),
        ("2.3.1", "ACK^A01^ACK"),  # the message structure component exists from here
        ("2.4", "ACK^A01^ACK"),
        ("2.5.1", "ACK^A01^ACK"),
        ("2.8", "ACK^A01^ACK"),
        ("", "ACK^A01^ACK"),  # answered as v2.5, the version the ACK then declares
        ("9.9", "ACK^A01^ACK"),
        ("X", "ACK^A01^ACK"),
    ],
)
def test_msh9_has_the_components_of_the_message_version(version: str, msh9: str) -> None:
    for outcome in (AckOutcome.accept(), AckOutcome.reject("203", "unsupported version")):
        msh = segments(build_ack(message("V", version=version), outcome))[0]
        assert msh[8] == msh9
        assert msh[11] == (version or "2.5")


@pytest.mark.parametrize("version", ["2.\u00b2", "\u00b9", "2.5\u00b3"])
def test_a_version_of_digit_like_characters_still_gets_an_ack(version: str) -> None:
    # Superscripts (Latin-1 0xB2 ...) pass str.isdigit() but int() refuses them: the AR
    # for such an MSH-12 once raised, so no ACK was sent and the sender re-sent forever.
    payload = message("SUP", version=version).decode().encode("latin-1")
    for outcome in (AckOutcome.accept(), AckOutcome.reject("203", "unsupported version")):
        msh, msa, *err = segments(build_ack(payload, outcome), "latin-1")
        assert msh[8] == "ACK^A01^ACK"
        assert msa[:3] == ["MSA", outcome.code.value, "SUP"]
        assert [e[0] for e in err] == (["ERR"] if outcome.has_error else [])


def test_msh9_before_2_3_1_with_the_message_delimiters_and_no_trigger() -> None:
    msh = segments(build_ack(message("V", version="2.3", sep="*", msh2="%$!@")))[0]
    assert msh[8] == "ACK%A01"
    # No trigger event to echo: no empty second component either.
    assert segments(build_ack(message("V", version="2.2", msh9="ADT")))[0][8] == "ACK"
    assert segments(build_ack(message("V", version="2.5", msh9="ADT")))[0][8] == "ACK^^ACK"


def test_latin1_message_gets_a_latin1_ack() -> None:
    payload = message("L1", charset="8859/1", sending=("LABÉ", "F")).decode().encode("latin-1")
    ack = build_ack(payload, AckOutcome.error(text="échec de l'étape"))
    msh, _, err = segments(ack, "latin-1")
    assert msh[4] == "LABÉ"
    assert err[8] == "échec de l'étape"


def test_empty_msh18_mirrors_sender_bytes() -> None:
    payload = message("M", sending=("LABÉ", "F")).decode().encode("latin-1")
    assert "LABÉ".encode("latin-1") in build_ack(payload)


@pytest.mark.parametrize(
    ("error", "code", "ack_code", "location"),
    [
        (ParseError("bad date", location="PID-7"), "102", "AR", "PID^1^7"),
        (UnsupportedMessageError("no route", location="MSH-9.1"), "200", "AR", "MSH^1^9^1^1"),
        (
            UnsupportedMessageError("no event", hl7_error_code="201", location="MSH-9.2"),
            "201",
            "AR",
            "MSH^1^9^1^2",
        ),
        (
            MappingError("template failed", location="OBX[3]-5", detail="SECRET"),
            "207",
            "AE",
            "OBX^3^5",
        ),
        (QueueError("disk full at /var"), "207", "AE", ""),
        (ValueError(f"boom {PATIENT_NAME}"), "207", "AE", ""),
    ],
)
def test_outcome_from_error(error: Exception, code: str, ack_code: str, location: str) -> None:
    outcome = AckOutcome.from_error(error)
    ack = build_ack(message("F"), outcome)
    _, msa, err = segments(ack)
    assert msa[1] == ack_code
    assert err[3].split("^")[0] == code
    assert err[2] == location
    assert b"SECRET" not in ack
    assert b"Zyxwvut" not in ack
    assert b"/var" not in ack


def test_error_location_parsing() -> None:
    assert ErrorLocation.parse("PID-3(2).4.1") == ErrorLocation("PID", 1, 3, 2, 4, 1)
    assert ErrorLocation.parse("segment 3") is None
    assert ErrorLocation.parse(None) is None
    assert ErrorLocation("ZZ1").erl(Encoding()) == "ZZ1^1"


def test_outcome_validation() -> None:
    with pytest.raises(ValueError):
        AckOutcome(AckCode.AE, "not-a-number")
    assert AckOutcome("AR").code is AckCode.AR  # type: ignore[arg-type]


def test_control_characters_never_reach_the_ack() -> None:
    ack = build_ack(message("C"), AckOutcome.error(text="a\x0bb\x1c\rc\x00"))
    assert b"\x0b" not in ack and b"\x1c" not in ack and b"\x00" not in ack
    assert parse_ack(ack).texts == ("a\x0bb\x1c\rc\x00",)


control_ids = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@given(st.text(max_size=80), control_ids)
def test_any_text_round_trips_and_keeps_the_structure(text: str, control_id: str) -> None:
    ack = build_ack(message("Z"), AckOutcome.error("207", text), control_id=control_id)
    parts = segments(ack)
    assert [p[0] for p in parts] == ["MSH", "MSA", "ERR"]
    assert len(parts[0]) == 12  # MSH-12 is the last valued field (no MSH-18)
    assert len(parts[2]) == 9
    info = parse_ack(ack)
    assert Encoding().unescape(parts[0][9]) == control_id
    assert info.texts == ((text,) if text else ("Application internal error",))


msh_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
)


@given(msh_values, msh_values, msh_values, msh_values, msh_values)
def test_any_msh_gets_an_ack_that_reads_back(
    control_id: str, msh9: str, version: str, accept_ack: str, charset: str
) -> None:
    # The listener answers whatever MSH says: a header read that raised (as MSH-18
    # "UNDEFINED" once did) closes the connection without an ACK, and the sender re-sends
    # the same message forever.
    payload = message(
        control_id, msh9=msh9, version=version, accept_ack=accept_ack, charset=charset
    )
    header = read_header(payload)
    outcome = header.rejection() or AckOutcome.accept()
    for mode in ("auto", "original", "enhanced"):
        info = parse_ack(build_ack(header, outcome, mode=mode))
        assert info.code in ("AA", "AR", "CA", "CR")


def test_every_python_codec_name_in_msh18_gets_an_ack_in_ascii_delimiters() -> None:
    # Senders write "utf-8" or "latin-1" where table 0211 says "UNICODE UTF-8": any name
    # Python knows is looked up. "UNDEFINED" once raised in the header read (no ACK, the
    # message re-sent forever); "MAC-ARABIC" reads "|" from 0x7C but writes it as 0xFC.
    names = {
        *aliases,
        *aliases.values(),
        *(m.name for m in pkgutil.iter_modules(encodings.__path__)),
    }
    for name in sorted(names):
        charset = name.upper()
        header = read_header(message("CS", charset=charset))
        ack = build_ack(header, header.rejection() or AckOutcome.accept())
        assert ack.startswith(b"MSH|^~\\&|"), charset
        info = parse_ack(ack)
        assert info.acknowledged_id == "CS", charset
        assert info.code == ("AA" if header.codec else "AR"), charset


def test_a_three_character_msh2_gets_an_err_1_without_sub_components() -> None:
    """MSH-2 ``^~\\`` declares no sub-component separator: the ACK's ERR-1 (before v2.5)
    writes the code alone, and reading such an ACK back finds it."""
    outcome = AckOutcome.reject("102", "bad date", location=ErrorLocation.parse("PID[1]-7"))
    ack = build_ack(message("SHORT", version="2.3", msh2="^~\\"), outcome)
    msh, _, err = segments(ack)
    assert msh[1] == "^~\\"
    assert err == ["ERR", "PID^1^7^102"]
    assert parse_ack(ack).error_codes == ("102",)
