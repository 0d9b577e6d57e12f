"""Files into messages, messages into segments: ``converter.hl7v2.er7``."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from converter.errors import CharsetError, ConversionError, ParseError, UnsupportedMessageError
from converter.hl7v2 import RawMessage, split_messages
from converter.hl7v2.encoding import Encoding

from ._support import SAMPLES, build, msh, parse, parse_segments

MSH_A = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|2.5"
MSH_B = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|M2|P|2.5"
PID = b"PID|1||123^^^H^MR||Doe^John"
PV1 = b"PV1|1|I"
ONE = b"\r".join([MSH_A, PID, PV1])


# -- split_messages: separators and noise ------------------------------------------------
@pytest.mark.parametrize("separator", [b"\r", b"\n", b"\r\n"])
def test_split_any_line_separator(separator: bytes) -> None:
    data = separator.join([MSH_A, PID, PV1]) + separator
    assert split_messages(data) == [RawMessage(ONE, 1)]


def test_split_mixed_separators() -> None:
    data = MSH_A + b"\r\n" + PID + b"\n" + PV1 + b"\r"
    assert split_messages(data) == [RawMessage(ONE, 1)]


BOM = b"\xef\xbb\xbf"


def test_split_strips_utf8_bom() -> None:
    # Taken off data, and recorded: the message's bytes are UTF-8 (see source).
    assert split_messages(BOM + ONE) == [RawMessage(ONE, 1, bom=True)]
    assert split_messages(BOM + ONE)[0].source == BOM + ONE
    assert split_messages(ONE)[0].source == ONE
    assert split_messages(BOM + b"\r\n" + ONE) == [RawMessage(ONE, 1, bom=True)]


def test_split_files_saved_with_a_bom_then_concatenated() -> None:
    """Each file's BOM opens its first line: once that line did not start with MSH, was
    glued to the message before, and both failed."""
    two = MSH_B + b"\r" + PID
    data = BOM + ONE + b"\r\n" + BOM + two + b"\r\n" + MSH_A + b"\r\n"
    assert split_messages(data) == [
        RawMessage(ONE, 1, bom=True),
        RawMessage(two, 2, bom=True),
        RawMessage(MSH_A, 3),
    ]


def test_split_a_bom_before_a_batch_holds_for_its_messages() -> None:
    batch = b"\r".join([b"FHS|^~\\&", b"BHS|^~\\&", ONE, MSH_B, b"BTS|2", b"FTS|1"])
    data = BOM + batch + b"\r" + batch + b"\r" + BOM + b"BHS|^~\\&\r" + MSH_A + b"\rBTS|1"
    assert [raw.bom for raw in split_messages(data)] == [True, True, False, False, True]


def test_split_ignores_trailing_blanks_and_blank_lines() -> None:
    data = b"\n\n" + MSH_A + b"  \r\n\r\n" + PID + b"\t\r\n   \r\n" + PV1 + b" \r\n\r\n\n"
    assert split_messages(data) == [RawMessage(ONE, 1)]


def test_split_drops_mllp_framing() -> None:
    data = b"\x0b" + MSH_A + b"\r" + PID + b"\r" + PV1 + b"\r\x1c\r"
    assert split_messages(data) == [RawMessage(ONE, 1)]


def test_split_mllp_framing_on_segment_lines_and_with_blanks() -> None:
    data = b"\x0b" + MSH_A + b"\r" + PID + b"\r" + PV1 + b"\x1c \r\n"
    assert split_messages(data) == [RawMessage(ONE, 1)]


def test_split_several_mllp_frames() -> None:
    data = b"\x0b" + ONE + b"\r\x1c\r" + b"\x0b" + MSH_B + b"\r" + PID + b"\r\x1c\r"
    assert split_messages(data) == [
        RawMessage(ONE, 1),
        RawMessage(MSH_B + b"\r" + PID, 2),
    ]


def test_split_several_messages_without_envelope() -> None:
    data = b"\n".join([MSH_A, PID, MSH_B, PID, PV1, MSH_A])
    assert split_messages(data) == [
        RawMessage(MSH_A + b"\r" + PID, 1),
        RawMessage(MSH_B + b"\r" + PID + b"\r" + PV1, 2),
        RawMessage(MSH_A, 3),
    ]


def test_split_batch_envelope_dropped() -> None:
    data = b"\r".join(
        [
            b"FHS|^~\\&|A|B|||20240101||f.hl7",
            b"BHS|^~\\&|A|B|||20240101",
            MSH_A,
            PID,
            MSH_B,
            PV1,
            b"BTS|2",
            b"FTS|1",
        ]
    )
    assert split_messages(data) == [
        RawMessage(MSH_A + b"\r" + PID, 1),
        RawMessage(MSH_B + b"\r" + PV1, 2),
    ]


def test_split_batch_sample() -> None:
    raws = split_messages((SAMPLES / "batch_ADT.hl7").read_bytes())
    assert [raw.index for raw in raws] == [1, 2, 3]
    for raw in raws:
        assert raw.data.startswith(b"MSH|^~\\&|SIH-ORCHIDEE")
        lines = raw.data.split(b"\r")
        assert [line[:3] for line in lines] == [b"MSH", b"EVN", b"PID", b"PV1"]
    messages = [parse(raw.data) for raw in raws]
    assert [m.control_id for m in messages] == [
        "CHU-ADT-20240316-B00001",
        "CHU-ADT-20240316-B00002",
        "CHU-ADT-20240316-B00003",
    ]
    assert [str(m.PID[5]) for m in messages] == ["RICHARD", "ROBERT", "DURAND"]
    assert [str(m.PID[5][2]) for m in messages] == ["Mathéo", "Chloé", "Gaëlle"]


def test_split_crlf_sample_with_bom() -> None:
    data = (SAMPLES / "ADT_A01_crlf.hl7").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in data
    (raw,) = split_messages(data)
    assert raw.index == 1
    assert raw.data.startswith(b"MSH|")
    assert b"\n" not in raw.data
    assert [line[:3] for line in raw.data.split(b"\r")] == [b"MSH", b"EVN", b"PID", b"PV1"]
    message = parse(raw.data)
    assert message.control_id == "HPE-ADT-20241125-000102"
    assert str(message.PV1[19]) == "PE2024112561"


@pytest.mark.parametrize("configured", ["utf-8", "iso-8859-1"])
@pytest.mark.parametrize("msh18", ["", "8859/1", "ASCII"])
def test_a_message_behind_a_bom_is_read_as_utf8(msh18: str, configured: str) -> None:
    """A UTF-8 BOM is unambiguous (as ISO 8859-1 it would be the text "ï»¿", before
    MSH): the bytes are UTF-8 whatever MSH-18 or the default charset say. Once "Renée"
    came out as "RenÃ©e"."""
    data = build("PID|1||123^^^H^MR||Renée^Ann", charset=msh18)
    (raw,) = split_messages(BOM + data)
    message = parse(raw.source, default_charset=configured)
    assert str(message.PID[5]) == "Renée"
    assert message.codec == "utf-8"
    assert message.control_id == "CID-1"
    # Bytes that are not UTF-8 after all: a located CharsetError, as in any UTF-8 message.
    latin1 = build("PID|1||123^^^H^MR||Ren", charset=msh18) + b"\xe9e"
    with pytest.raises(CharsetError) as caught:
        parse(BOM + latin1, default_charset=configured)
    assert caught.value.location == "PID-5"


def test_split_latin1_sample() -> None:
    (raw,) = split_messages((SAMPLES / "ADT_A01_latin1.hl7").read_bytes())
    assert [line[:3] for line in raw.data.split(b"\r")] == [
        b"MSH",
        b"EVN",
        b"PID",
        b"NK1",
        b"PV1",
        b"AL1",
        b"DG1",
    ]


def test_split_garbage_before_first_msh() -> None:
    with pytest.raises(ParseError) as info:
        split_messages(b"hello world\r" + ONE)
    assert info.value.reason == "data before the first MSH segment is not HL7 v2"


def test_split_segment_before_first_msh() -> None:
    with pytest.raises(ParseError):
        split_messages(PID + b"\r" + ONE)


@pytest.mark.parametrize(
    "data",
    [b"", b"\r\n\r\n", b"\xef\xbb\xbf", b"\x0b\x1c\r", b"FHS|^~\\&\rFTS|0"],
)
def test_split_without_any_message(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        split_messages(data)
    assert info.value.reason == "no MSH segment found"


# -- parse_message: MSH errors ---------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b"MSHA^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|2.5",
        b"MSH ^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|2.5",
        b"MSH1^~\\&1A1B1C1D12024010111ADT^A0111M11P12.5",
    ],
)
def test_invalid_field_separator(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse(data)
    assert info.value.location == "MSH-1"


@pytest.mark.parametrize("data", [b"PID|1||123", b"MSH|^~", b"", b"msh|^~\\&|A|B"])
def test_message_not_starting_with_msh(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse(data)
    assert info.value.location == "MSH"


@pytest.mark.parametrize(
    "msh2",
    [
        "",  # missing
        "^",  # too short
        "^~\\&#!",  # too long
        "^^\\&",  # duplicate
        "LAB",  # MSH-2 left out: MSH-3 read as encoding characters
        "^~ &",  # blank
    ],
)
def test_invalid_encoding_characters(msh2: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(build("PID|1", msh2=msh2, control_id="CTRL-7"))
    assert info.value.location == "MSH-2"
    assert info.value.control_id == "CTRL-7"
    # "LAB" is MSH-3 read in MSH-2's place: message content, so detail only.
    assert str(info.value) == "invalid encoding characters at MSH-2 (MSH-10 CTRL-7)"
    assert info.value.detail == repr(msh2)


@pytest.mark.parametrize(
    ("lines", "number"),
    [
        (["pid|1"], 2),
        (["PI|1"], 2),
        (["PIDX|1"], 2),
        (["EVN|A01", "P-D|1"], 3),
        (["EVN|A01", "", "PID|1", "1234|x"], 4),  # blank lines are not counted
    ],
)
def test_invalid_segment_name(lines: list[str], number: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_segments(*lines, control_id="CTRL-8")
    assert info.value.location == f"segment {number}"
    assert info.value.control_id == "CTRL-8"


@pytest.mark.parametrize("version", ["2.2", "2.9", "", "2.1", "3.0"])
def test_unsupported_version(version: str) -> None:
    with pytest.raises(UnsupportedMessageError) as info:
        parse_segments("PID|1", version=version, msh9="ADT^A01", control_id="CTRL-9")
    error = info.value
    assert error.hl7_error_code == "203"
    assert error.location == "MSH-12"
    assert error.control_id == "CTRL-9"
    assert error.message_type == "ADT^A01"
    assert isinstance(error, ConversionError)
    assert not isinstance(error, ParseError)


# -- errors never quote message content (README "Errors"; probe D2) ------------------------
WRAPPED_PID = ("EVN|A01", "PID|1||123^^^H^MR||DUPONT^Marie||19800101|F|||12 rue des")


def test_a_field_broken_across_lines_is_located_without_its_content() -> None:
    # A broken feed wraps PID-11 onto a new line: that line opens with patient data.
    with pytest.raises(ParseError) as info:
        parse_segments(*WRAPPED_PID, "DUPONT Marie née le 01/01/1980", control_id="W-1")
    error = info.value
    assert error.location == "segment 4"
    assert error.reason.startswith("invalid segment after PID: ")
    for text in ("DUPONT", "Marie", "DUP", "née"):
        assert text not in str(error), str(error)
    assert error.detail is not None and "DUPONT Marie" in error.detail  # --verbose only
    assert error.control_id == "W-1"
    assert error.message_type == "ADT^A01"  # counted under its type, not "?"


@given(st.text(alphabet=string.ascii_uppercase, min_size=8, max_size=30))
def test_no_invalid_segment_error_quotes_the_line(line: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_segments(*WRAPPED_PID, line + " x")
    assert line not in str(info.value) and line[:4] not in str(info.value)


def test_data_before_the_first_msh_is_located_by_line_number() -> None:
    with pytest.raises(ParseError) as info:
        split_messages(b"\r\nDUPONT Marie\r" + ONE)
    assert info.value.location == "line 2"
    assert "DUP" not in str(info.value)
    assert info.value.detail == repr("DUPONT Marie")


@pytest.mark.parametrize("msh9", ["ADT^A01", "ADT^A01^ADT_A01"])
def test_unsupported_version_names_code_and_trigger_only(msh9: str) -> None:
    # Once the raw MSH-9: "ADT^A01^ADT_A01" and "ADT^A01" counted apart (probe D18).
    with pytest.raises(UnsupportedMessageError) as info:
        parse_segments("PID|1", version="2.9", msh9=msh9)
    assert info.value.message_type == "ADT^A01"


@pytest.mark.parametrize("msh9", ["", "^A01", "^A01^ADT_A01"])
def test_empty_message_type(msh9: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_segments("PID|1", msh9=msh9, control_id="CTRL-10")
    assert info.value.location == "MSH-9"
    assert info.value.control_id == "CTRL-10"


# -- parse_message: what MSH says -------------------------------------------------------
def test_message_header_values() -> None:
    message = parse_segments("EVN|A01", "PID|1", msh9="ADT^A01^ADT_A01", control_id="X-1")
    assert message.control_id == "X-1"
    assert message.message_code == "ADT"
    assert message.trigger == "A01"
    assert message.event == "ADT^A01"
    assert message.version == "2.5"
    assert message.structure == "ADT_A01"
    assert message.name == "ADT_A01"
    assert message.sending_application == "SENDAPP"
    assert message.sending_facility == "SENDFAC"
    assert message.sender == "SENDAPP^SENDFAC"
    assert message.codec == "utf-8"
    assert message.encoding == Encoding()
    assert repr(message) == "<Message ADT^A01 X-1>"


@pytest.mark.parametrize(
    ("msh9", "version", "structure"),
    [
        ("ADT^A04", "2.3", "ADT_A01"),  # v2.3 has no MSH-9.3: event table alias
        ("ADT^A08", "2.5", "ADT_A01"),
        ("ADT^A40", "2.5", "ADT_A39"),
        ("ADT^A40", "2.3", "ADT_A39"),
        ("ADT^A04^ADT_A01", "2.5", "ADT_A01"),
        ("ADT^A28^ADT_A05", "2.5.1", "ADT_A05"),
        ("ADT^A04^NOT_A_STRUCTURE", "2.5", "ADT_A01"),  # MSH-9.3 unknown: alias
        ("ORU^R01", "2.3", "ORU_R01"),
        ("ACK^A01", "2.5", "ACK"),  # "ACK^*"
        ("ACK", "2.5", "ACK"),
        ("ZZZ^Z01", "2.5", "ZZZ_Z01"),  # unknown: named after the event
    ],
)
def test_message_structure(msh9: str, version: str, structure: str) -> None:
    message = parse_segments("EVN|X", msh9=msh9, version=version)
    assert message.structure == structure


def test_event_of_message_type_without_trigger() -> None:
    message = parse_segments("MSA|AA|M1", msh9="ACK")
    assert message.message_code == "ACK"
    assert message.trigger == ""
    assert message.event == "ACK^"


def test_version_with_components_and_blanks() -> None:
    message = parse_segments("EVN|A01", version="2.5.1^FRA^2.10")
    assert message.version == "2.5.1"
    assert message.structure == "ADT_A01"


def test_non_default_delimiters() -> None:
    head = msh("ADT$A01$ADT_A01", sep="#", msh2="$%*@", control_id="ODD-1")
    data = "\r".join([head, "PID#1##123$$$H@1.2.3$MR%456$$$N$NI##Doe*S*Jr$John#A|B^C"]).encode()
    message = parse(data)
    assert message.encoding == Encoding.from_msh("#", "$%*@")
    assert message.event == "ADT^A01"
    assert message.structure == "ADT_A01"
    assert message.control_id == "ODD-1"
    msh_seg = message.MSH
    assert str(msh_seg[1]) == "#"
    assert str(msh_seg[2]) == "$%*@"
    pid = message.PID
    assert [str(rep[1]) for rep in pid[3]] == ["123", "456"]
    assert str(pid[3][4][2]) == "1.2.3"
    assert str(pid[3].reps[1][5]) == "NI"
    assert str(pid[5]) == "Doe$Jr"
    assert str(pid[5][2]) == "John"
    # The default delimiters are plain text here.
    assert str(pid[6]) == "A|B^C"


def test_v27_truncation_character() -> None:
    message = parse_segments("OBX|1|ST|X||abc#|def\\P\\", msh2="^~\\&#", version="2.7")
    assert message.encoding.truncation == "#"
    assert str(message.MSH[2]) == "^~\\&#"
    obx = message.OBX
    assert obx[5].raw == "abc#"
    assert str(obx[5]) == "abc#"
    assert str(obx[6]) == "def#"


def test_default_charset_argument() -> None:
    # build() encodes in UTF-8: put the name back in Latin-1, MSH-18 being empty.
    data = build("PID|1||1||Lévy").replace("Lévy".encode(), "Lévy".encode("latin-1"))
    assert parse(data, default_charset="iso-8859-1").codec == "iso-8859-1"
    assert str(parse(data, default_charset="iso-8859-1").PID[5]) == "Lévy"


def test_blank_lines_inside_a_message_are_skipped() -> None:
    data = build("", "EVN|A01", "   ", "PID|1")
    message = parse(data)
    assert [seg.name for seg in message.walk()] == ["MSH", "EVN", "PID"]


# -- tokenizer round trip --------------------------------------------------------------
_values = st.text(
    alphabet=st.one_of(
        st.sampled_from([*string.punctuation, " ", "\r", "\n", "é", "€", "\U0001f600"]),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=20,
)


@given(st.lists(_values, min_size=1, max_size=8))
@example(['""', "a|b^c", "\\E\\", " x \r\n", ""])
@settings(max_examples=200)
def test_tokenizer_round_trip_fields(values: list[str]) -> None:
    enc = Encoding()
    line = "ZZZ|" + "|".join(enc.escape_text(value) for value in values)
    segment = parse_segments(line).ZZZ
    assert segment.field_count == len(values)
    for n, value in enumerate(values, start=1):
        assert str(segment[n]) == value
        assert segment[n].text == value
    assert str(segment[len(values) + 1]) == ""


@given(
    st.lists(
        st.lists(st.lists(_values, min_size=1, max_size=3), min_size=1, max_size=4),
        min_size=1,
        max_size=3,
    )
)
@example([[['""', "x"], ['""']], [["&^~|"]]])
@settings(max_examples=200)
def test_tokenizer_round_trip_repetitions_components_subcomponents(
    reps: list[list[list[str]]],
) -> None:
    enc = Encoding()
    field = "~".join(
        "^".join("&".join(enc.escape_text(sub) for sub in comp) for comp in rep) for rep in reps
    )
    value = parse_segments("ZZZ|" + field).ZZZ[1]
    assert len(value.reps) == len(reps)
    for rep_value, rep in zip(value.reps, reps, strict=True):
        assert [str(c) for c in rep_value.components] == [comp[0] for comp in rep]
        for n, comp in enumerate(rep, start=1):
            for m, sub in enumerate(comp, start=1):
                assert str(rep_value[n][m]) == sub


# "." cannot be a delimiter of a real message: MSH-12 ("2.5") would be cut.
_DELIMITER_CHARS = string.punctuation.replace(".", "")


@st.composite
def _delimiter_sets(draw: st.DrawFn) -> tuple[str, str]:
    chars = draw(st.lists(st.sampled_from(_DELIMITER_CHARS), min_size=5, max_size=5, unique=True))
    return chars[0], "".join(chars[1:])


@given(_delimiter_sets(), st.lists(st.lists(_values, min_size=1, max_size=3), max_size=5))
@example(("#", "$%*@"), [['""', "#$%*@|^~\\&"], ["a\nb"]])
@settings(max_examples=200)
def test_tokenizer_round_trip_random_delimiters(
    delimiters: tuple[str, str], fields: list[list[str]]
) -> None:
    sep, msh2 = delimiters
    enc = Encoding.from_msh(sep, msh2)
    head = msh(f"ADT{enc.component}A01", sep=sep, msh2=msh2, control_id="RT")
    line = sep.join(
        ["ZZZ", *(enc.component.join(enc.escape_text(c) for c in comps) for comps in fields)]
    )
    message = parse("\r".join([head, line]).encode())
    assert message.encoding == enc
    assert message.event == "ADT^A01"
    assert message.control_id == "RT"
    segment = message.ZZZ
    for n, comps in enumerate(fields, start=1):
        assert [str(c) for c in segment[n].components] == comps
