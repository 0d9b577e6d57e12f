"""MFK: the original-mode application acknowledgement of an MFN (HL7 v2.5 §8.4)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from listeners.mllp.ack import AckBuilder, AckOutcome, ErrorLocation, build_ack, parse_ack
from listeners.mllp.header import read_header
from listeners.mllp.mfk import build_mfk, build_reply, wants_mfk

FIXED = datetime(2024, 3, 15, 10, 30, 5, tzinfo=UTC)
STAMP = "20240315103005+0000"
SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "hl7v2"


def mfn(
    *records: str,
    version: str = "2.5",
    trigger: str = "M02",
    level: str = "AL",
    msh15_16: tuple[str, str] = ("", ""),
    charset: str = "",
    sep: str = "|",
    msh2: str = "^~\\&",
    mfi: str | None = None,
    end: str = "\r",
) -> bytes:
    """An MFN (segments ending in ``end``), one MFE per ``records`` entry (fields after MFE,
    written with ``|`` and ``^``: translated to ``sep`` and MSH-2's component separator)."""
    comp = msh2[0]
    structure = f"^MFN_{trigger}" if version not in ("2.2", "2.3") else ""
    fields = [
        "MSH",
        msh2,
        "RH^1.2.3^ISO",
        "CHU",
        "PASSERELLE",
        "GHT",
        "20240315103000",
        "",
        f"MFN^{trigger}{structure}",
        "MFN-CTRL-1",
        "P",
        version,
        "",
        "",
        *msh15_16,
        "",
        charset,
    ]
    while fields[-1] == "":
        fields.pop()
    lines = [sep.join(f.replace("^", comp) if i > 1 else f for i, f in enumerate(fields))]
    if mfi is None:
        mfi = f"MFI|PRA^Practitioner master file^HL70175||UPD|||{level}"
    if mfi:
        lines.append(mfi.replace("|", sep).replace("^", comp))
    for n, record in enumerate(records, 1):
        lines.append(f"MFE|{record}".replace("|", sep).replace("^", comp))
        lines.append(f"STF|K{n}|K{n}".replace("|", sep))
    return (end.join(lines) + end).encode("utf-8")


REC_A = "MAD|MFN-CTRL-1-1|20240315|DUPONTJ^DUPONT Jean^L|CE"
REC_B = "MDL|MFN-CTRL-1-2|20240315|MARTINL^MARTIN Lea^L|CE"


def segments(reply: bytes, codec: str = "utf-8") -> list[list[str]]:
    text = reply.decode(codec)
    assert text.endswith("\r")
    sep = text[3]
    return [line.split(sep) for line in text[:-1].split("\r")]


def ids(reply: bytes) -> list[str]:
    return [segment[0] for segment in segments(reply)]


def test_sample_m02_in_original_mode_gets_an_mfk_with_one_mfa_per_record() -> None:
    data = (SAMPLES / "MFN_M02_staff.hl7").read_bytes().replace(b"|AL|NE|FRA|", b"|||FRA|")
    reply = build_mfk(data, control_id="MFK-1", timestamp=FIXED)
    assert reply is not None
    msh, msa, mfi, *mfas = segments(reply)
    assert msh[:6] == [
        "MSH",
        "^~\\&",
        "PASSERELLE^1.2.250.1.999.9.1^ISO",
        "GHT-RHONE-CENTRE^1.2.250.1.999.9^ISO",
        "RH-ANNUAIRE^1.2.250.1.999.1.20^ISO",
        "CHU-LYON^1.2.250.1.999.1.1^ISO",
    ]
    assert msh[6] == STAMP
    assert msh[8:12] == ["MFK^M02^MFK_M01", "MFK-1", "P", "2.5"]
    assert msh[17] == "UNICODE UTF-8"
    assert msa == ["MSA", "AA", "CHU-MFN-20240315-000201"]
    # The MFI echoed byte for byte.
    assert "|".join(mfi).encode() + b"\r" in data
    assert mfas == [
        ["MFA", "MAD", "CHU-MFN-20240315-000201-1", STAMP, "S", "LEROYP^LEROY Paul^L", "CE"],
        ["MFA", "MUP", "CHU-MFN-20240315-000201-2", STAMP, "S", "FAUREE^FAURE Étienne^L", "CE"],
        ["MFA", "MDC", "CHU-MFN-20240315-000201-3", STAMP, "S", "ROUXC^ROUX Claire^L", "CE"],
        ["MFA", "MDL", "CHU-MFN-20240315-000201-4", STAMP, "S", "INTERIMJ^JOLY Marc^L", "CE"],
    ]
    info = parse_ack(reply)  # what a client reads from it
    assert (info.code, info.acknowledged_id, info.success) == (
        "AA",
        "CHU-MFN-20240315-000201",
        True,
    )


def test_sample_m05_all_five_locations_acknowledged() -> None:
    data = (SAMPLES / "MFN_M05_locations.hl7").read_bytes().replace(b"|AL|NE|FRA|", b"|||FRA|")
    reply = build_mfk(data, control_id="MFK-5", timestamp=FIXED)
    assert reply is not None
    rows = segments(reply)
    assert rows[0][8] == "MFK^M05^MFK_M01"
    mfas = [row for row in rows if row[0] == "MFA"]
    assert [(m[1], m[2], m[4], m[5], m[6]) for m in mfas] == [
        ("MAD", "CHU-MFN-20240315-000501-1", "S", "^^^CHU-LYON&1.2.250.1.999.1.1&ISO", "PL"),
        ("MAD", "CHU-MFN-20240315-000501-2", "S", "CARDIO^^^CHU-LYON&1.2.250.1.999.1.1&ISO", "PL"),
        (
            "MAD",
            "CHU-MFN-20240315-000501-3",
            "S",
            "CARDIO^412^^CHU-LYON&1.2.250.1.999.1.1&ISO",
            "PL",
        ),
        (
            "MUP",
            "CHU-MFN-20240315-000501-4",
            "S",
            "CARDIO^412^1^CHU-LYON&1.2.250.1.999.1.1&ISO",
            "PL",
        ),
        ("MDC", "CHU-MFN-20240315-000501-5", "S", "USIC^^^CHU-LYON&1.2.250.1.999.1.1&ISO", "PL"),
    ]


# MFI-6 (table 0179) and the outcome → which records get an MFA.
@pytest.mark.parametrize(
    ("level", "success", "answered"),
    [
        ("AL", True, True),
        ("AL", False, True),
        ("ER", True, False),
        ("ER", False, True),
        ("SU", True, True),
        ("SU", False, False),
        ("NE", True, False),
        ("NE", False, False),
        ("", True, True),  # empty (MFI-6 is required): read as AL
        ("", False, True),
        ("XX", False, True),  # unknown: read as AL
        ("su", True, True),
    ],
)
def test_response_level_steers_the_mfa_segments(level: str, success: bool, answered: bool) -> None:
    outcome = AckOutcome.accept() if success else AckOutcome.error("207", "refused")
    reply = build_mfk(mfn(REC_A, REC_B, level=level), outcome, control_id="C", timestamp=FIXED)
    assert reply is not None
    rows = segments(reply)
    expected_ids = ["MSH", "MSA"] + ([] if success else ["ERR"]) + ["MFI"]
    expected_ids += ["MFA", "MFA"] if answered else []
    assert [row[0] for row in rows] == expected_ids
    assert rows[1][1] == ("AA" if success else "AE")
    mfi = next(row for row in rows if row[0] == "MFI")
    # Echoed (trailing empty fields dropped, as HL7 allows).
    assert "|".join(mfi) == f"MFI|PRA^Practitioner master file^HL70175||UPD|||{level}".rstrip("|")
    if answered:
        mfas = [row for row in rows if row[0] == "MFA"]
        completed, status = (STAMP, "S") if success else ("", "U")
        assert mfas == [
            ["MFA", "MAD", "MFN-CTRL-1-1", completed, status, "DUPONTJ^DUPONT Jean^L", "CE"],
            ["MFA", "MDL", "MFN-CTRL-1-2", completed, status, "MARTINL^MARTIN Lea^L", "CE"],
        ]


def test_a_reject_makes_every_record_unsuccessful_with_the_error() -> None:
    outcome = AckOutcome.reject("201", "unsupported event", location=ErrorLocation("MSH", 1, 9))
    reply = build_mfk(mfn(REC_A, trigger="M08"), outcome, control_id="C", timestamp=FIXED)
    assert reply is not None
    msh, msa, err, _mfi, mfa = segments(reply)
    assert msh[8] == "MFK^M08^MFK_M01"
    assert msa == ["MSA", "AR", "MFN-CTRL-1"]
    assert err == [
        "ERR",
        "",
        "MSH^1^9",
        "201^Unsupported event code^HL70357",
        "E",
        "",
        "",
        "",
        "unsupported event",
    ]
    assert mfa[4] == "U" and mfa[3] == ""


@pytest.mark.parametrize(
    ("version", "msh9", "mfa_fields"),
    [
        ("2.2", "MFK^M02", 5),
        ("2.3", "MFK^M02", 5),  # no MSH-9.3 yet, MFA-6 (and MFE-5) come in v2.3.1
        ("2.3.1", "MFK^M02^MFK_M01", 6),
        ("2.5", "MFK^M02^MFK_M01", 6),
        ("2.5.1", "MFK^M02^MFK_M01", 6),
        ("2.8", "MFK^M02^MFK_M01", 6),
        ("2.8.2", "MFK^M02^MFK_M01", 6),
    ],
)
def test_msh9_and_mfa_follow_the_version(version: str, msh9: str, mfa_fields: int) -> None:
    reply = build_mfk(mfn(REC_A, version=version), control_id="C", timestamp=FIXED)
    assert reply is not None
    rows = segments(reply)
    assert rows[0][8] == msh9
    assert rows[0][11] == version
    mfa = rows[-1]
    assert mfa[0] == "MFA" and len(mfa) == mfa_fields + 1
    assert mfa[5] == "DUPONTJ^DUPONT Jean^L"


def test_v21_msh9_is_the_message_type_alone() -> None:
    data = mfn(REC_A, version="2.1").replace(b"MFN^M02^MFN_M02", b"MFN")
    reply = build_mfk(data, control_id="C", timestamp=FIXED)
    assert reply is not None
    assert segments(reply)[0][8] == "MFK"


def test_v23_error_is_in_msa_and_err1_before_v25() -> None:
    reply = build_mfk(mfn(REC_A, version="2.3"), AckOutcome.error("207", "refused"), control_id="C")
    assert reply is not None
    _msh, msa, err, _mfi, mfa = segments(reply)
    assert msa[:4] == ["MSA", "AE", "MFN-CTRL-1", "refused"]
    assert err == ["ERR", "^^^207&Application internal error&HL70357"]
    assert mfa[:5] == ["MFA", "MAD", "MFN-CTRL-1-1", "", "U"]


def test_the_messages_own_delimiters_and_escapes_are_kept() -> None:
    # Field #, component @, repetition *, escape /, subcomponent %: MFE-4 holds an escaped
    # field separator (/F/) and an escaped component (/S/), MFE-4 and MFE-5 repeat.
    record = "MAD|K-1|20240315|A/F/B^DUPONT/S/Jean^L*X-9^Other^L|CE*CE"
    data = mfn(record, sep="#", msh2="@*/%", mfi="MFI|PRA^Practitioner/T/file^HL70175||UPD|||AL")
    reply = build_mfk(data, control_id="C", timestamp=FIXED)
    assert reply is not None
    text = reply.decode("utf-8")
    lines = text.split("\r")
    assert lines[0].startswith("MSH#@*/%#PASSERELLE#GHT#RH@1.2.3@ISO#CHU#")
    assert "#MFK@M02@MFK_M01#C#P#2.5" in lines[0]
    assert lines[2] == "MFI#PRA@Practitioner/T/file@HL70175##UPD###AL"
    assert lines[3] == f"MFA#MAD#K-1#{STAMP}#S#A/F/B@DUPONT/S/Jean@L*X-9@Other@L#CE*CE"


def test_control_bytes_and_bytes_invalid_in_msh18_are_escaped() -> None:
    # A VT inside MFE-4 would cut the reply's MLLP frame short; a Latin-1 byte in a message
    # declaring UTF-8 would make the reply invalid in the charset it declares.
    data = mfn("MAD|K-1|20240315|DUP\x0bONT^X|CE", charset="UNICODE UTF-8")
    data = data.replace(b"DUP", b"D\xc9P")
    reply = build_mfk(data, control_id="C", timestamp=FIXED)
    assert reply is not None
    mfa = segments(reply)[-1]
    assert mfa[5] == "D\\XC9\\P\\X0B\\ONT^X"
    assert b"\x0b" not in reply


def test_latin1_message_gets_a_latin1_mfk() -> None:
    data = mfn("MAD|K-1|20240315|FAURE^FAURE \xc9tienne^L|CE", charset="8859/1")
    data = data.decode("utf-8").encode("latin-1")
    reply = build_mfk(data, control_id="C", timestamp=FIXED)
    assert reply is not None
    rows = segments(reply, "latin-1")
    assert rows[0][17] == "8859/1"
    assert rows[-1][5] == "FAURE^FAURE Étienne^L"


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_lf_and_crlf_segment_ends_are_read(end: str) -> None:
    reply = build_mfk(mfn(REC_A, REC_B, end=end), control_id="C", timestamp=FIXED)
    assert reply is not None
    assert ids(reply) == ["MSH", "MSA", "MFI", "MFA", "MFA"]


def test_an_mfn_without_mfi_gets_no_mfk_and_the_reply_is_the_ack() -> None:
    data = mfn(REC_A, mfi="")
    assert build_mfk(data) is None
    builder = AckBuilder(control_ids=lambda: "ACK-ID", clock=lambda: FIXED)
    reply = build_reply(builder, read_header(data), AckOutcome.reject("100", "no MFI"), data)
    assert ids(reply) == ["MSH", "MSA", "ERR"]
    assert segments(reply)[0][8] == "ACK^M02^ACK"
    assert segments(reply)[1][1] == "AR"


def test_enhanced_mode_keeps_the_accept_ack() -> None:
    data = mfn(REC_A, msh15_16=("AL", "NE"))
    header = read_header(data)
    assert not wants_mfk(header)
    assert build_mfk(data) is None
    builder = AckBuilder(control_ids=lambda: "ACK-ID", clock=lambda: FIXED)
    reply = build_reply(builder, header, AckOutcome.accept(), data)
    assert reply == build_ack(data, control_id="ACK-ID", timestamp=FIXED)
    assert segments(reply)[0][8] == "ACK^M02^ACK" and segments(reply)[1][1] == "CA"


def test_unreadable_header_and_other_messages_get_the_ack() -> None:
    no_control_id = mfn(REC_A).replace(b"MFN-CTRL-1|", b"|", 1)
    assert read_header(no_control_id).rejection() is not None
    assert build_mfk(no_control_id) is None
    adt = mfn(REC_A).replace(b"MFN^M02^MFN_M02", b"ADT^A01^ADT_A01")
    assert build_mfk(adt) is None


def test_build_reply_uses_the_builders_ids_and_clock() -> None:
    data = mfn(REC_A)
    builder = AckBuilder(control_ids=iter(["ID-1", "ID-2", "ID-3"]).__next__, clock=lambda: FIXED)
    first = build_reply(builder, read_header(data), AckOutcome.accept(), data)
    second = build_reply(builder, read_header(data), AckOutcome.accept(), data)
    assert [segments(r)[0][9] for r in (first, second)] == ["ID-1", "ID-2"]
    assert segments(first)[-1][3] == STAMP
    # Without the message's bytes (an oversized frame, a malformed block) it is the ACK.
    assert ids(build_reply(builder, read_header(data), AckOutcome.accept())) == ["MSH", "MSA"]
