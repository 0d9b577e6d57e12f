"""Value, Segment, Group and Message containers: ``converter.hl7v2.value`` and ``.message``."""

from __future__ import annotations

import pytest

from converter.errors import CharsetError
from converter.hl7v2 import Group, Message, Segment, Value

from ._support import SAMPLES, parse, parse_segments

PID = (
    "PID|1|OLD-ID|"
    "123^^^HOSP&1.2.3&ISO^PI~~456^^^HOSP&1.2.3&ISO^MR~789^^^NAT^NI|"
    "|Doe\\T\\Smith^John^Paul~^Johnny|"
    '""|19800101||||'
    "1 Main St^^Town^^12345|"
    "|^PRN^CP^^33^6^11223344~^NET^Internet^john@example.org"
)


@pytest.fixture(scope="module")
def message() -> Message:
    return parse_segments(
        "EVN|A01|20240102",
        PID,
        "NK1|1|Doe^Jane",
        "NK1|2|Doe^Jim",
        "PV1|1|I",
        "OBX|1|ST|A^Alpha||first",
        "OBX|2|NM|B^Beta||42|mg&milligram&UCUM",
        "ZPD|1|custom^value",
        msh9="ADT^A01^ADT_A01",
        version="2.5",
        control_id="CTRL-1",
    )


@pytest.fixture(scope="module")
def pid(message: Message) -> Segment:
    return message.PID


# -- fields ----------------------------------------------------------------------------
def test_fields_are_one_based(pid: Segment) -> None:
    assert str(pid[1]) == "1"
    assert str(pid[2]) == "OLD-ID"
    assert str(pid[7]) == "19800101"
    assert pid.field(7) is pid[7]


def test_field_zero_and_negative_raise(pid: Segment) -> None:
    with pytest.raises(IndexError):
        pid[0]
    with pytest.raises(IndexError):
        pid.field(-1)


def test_field_key_must_be_int(pid: Segment) -> None:
    with pytest.raises(KeyError):
        pid["5"]  # type: ignore[index]


def test_absent_field_is_empty(pid: Segment) -> None:
    assert str(pid[30]) == ""
    assert not pid[30]
    assert pid[30].raw == ""
    assert pid[30].reps == [pid[30].reps[0]]
    assert list(pid[30]) == []
    assert str(pid[30][4][2]) == ""
    assert pid[30].path == "PID-30"


def test_msh1_is_the_field_separator(message: Message) -> None:
    msh = message.MSH
    assert str(msh[1]) == "|"
    assert msh[1].text == "|"
    assert str(msh[3]) == "SENDAPP"
    assert str(msh[9]) == "ADT"
    assert str(msh[9][2]) == "A01"
    assert str(msh[9][3]) == "ADT_A01"
    assert str(msh[10]) == "CTRL-1"
    assert str(msh[12]) == "2.5"


def test_msh2_is_not_split(message: Message) -> None:
    msh2 = message.MSH[2]
    assert str(msh2) == "^~\\&"
    assert msh2.text == "^~\\&"
    assert msh2.raw == "^~\\&"
    assert len(msh2.reps) == 1
    assert [rep.raw for rep in msh2] == ["^~\\&"]
    assert len(msh2) == 1
    assert msh2


def test_field_count(message: Message, pid: Segment) -> None:
    assert message.MSH.field_count == 18
    assert pid.field_count == 13
    assert message.ZPD.field_count == 2


# -- components and sub-components -----------------------------------------------------
def test_components_and_subcomponents(pid: Segment) -> None:
    cx = pid[3]
    assert str(cx) == "123"
    assert str(cx[1]) == "123"
    assert str(cx[4]) == "HOSP"
    assert str(cx[4][1]) == "HOSP"
    assert str(cx[4][2]) == "1.2.3"
    assert str(cx[4][3]) == "ISO"
    assert str(cx[4][4]) == ""
    assert str(cx[5]) == "PI"
    assert str(cx[9]) == ""
    assert [str(c) for c in cx.components] == ["123", "", "", "HOSP", "PI"]
    assert cx[4].components == [cx[4]]


def test_subcomponent_of_subcomponent(pid: Segment) -> None:
    sub = pid[3][4][2]
    assert sub[1] is sub
    assert str(sub[2]) == ""
    assert sub[2].path == "PID-3.4.2"


@pytest.mark.parametrize("msh2", ["^~\\", "^~"])
def test_without_a_subcomponent_separator_an_ampersand_is_text(msh2: str) -> None:
    """MSH-2 "^~\\" or "^~" declares no sub-component separator: once "&" was assumed
    and "Smith & Jones" read as "Smith " (HL7 v2.5 §2.16.9.2: the four characters, in
    order; absent ones are not invented)."""
    message = parse_segments(
        "PID|1||123^^^HOSP&1.2.3^MR||Smith & Jones^Ann||||||12 rue Bonnet & Fils^B & C^Lyon",
        msh2=msh2,
    )
    pid = message.PID
    assert message.encoding.subcomponent == ""
    assert str(pid[5]) == "Smith & Jones"
    assert str(pid[5][1]) == "Smith & Jones"
    assert str(pid[5][1][1]) == "Smith & Jones"
    assert str(pid[5][1][2]) == ""
    assert pid[5][1].components == [pid[5][1]]
    assert str(pid[3][4]) == "HOSP&1.2.3"
    assert [str(c) for c in pid[11].components] == ["12 rue Bonnet & Fils", "B & C", "Lyon"]
    assert pid[11][2]
    assert str(message.MSH[2]) == msh2


def test_an_undecodable_hex_escape_is_a_charset_error_at_its_path() -> None:
    """``\\XE9\\`` in a UTF-8 message: what the raw byte 0xE9 would be, a located
    CharsetError, not the escape kept as text in Patient.name (strict, and outside a
    rendering; the lenient replacement is in tests/test_convert.py)."""
    message = parse_segments("PID|1||123^^^H^MR||Ren\\XE9\\e^Ann~Ok^Ren\\XE9\\e|^\\XE9\\")
    for read in (
        lambda: str(message.PID[5]),
        lambda: message.PID[5].text,
        lambda: bool(message.PID[6]),  # a value present in a later leaf only
    ):
        with pytest.raises(CharsetError) as caught:
            read()
        assert caught.value.reason == "hexadecimal escape is not valid utf-8"
        assert caught.value.detail == "escape \\XE9\\"
        assert "XE9" not in str(caught.value)
    with pytest.raises(CharsetError) as caught:
        str(message.PID[5].reps[1][2])
    assert caught.value.location == "PID-5(2).2"
    assert str(message.PID[5].reps[1][1]) == "Ok"  # the value beside it reads as ever
    latin1 = parse_segments("PID|1||123^^^H^MR||Ren\\XE9\\e", charset="8859/1")
    assert str(latin1.PID[5]) == "Renée"


def test_child_key_errors(pid: Segment) -> None:
    with pytest.raises(IndexError):
        pid[3][0]
    with pytest.raises(KeyError):
        pid[3]["x"]  # type: ignore[index]


# -- repetitions -----------------------------------------------------------------------
def test_iteration_skips_empty_repetitions(pid: Segment) -> None:
    assert [str(rep) for rep in pid[3]] == ["123", "456", "789"]
    assert [rep.path for rep in pid[3]] == ["PID-3", "PID-3(3)", "PID-3(4)"]


def test_reps_keep_positions(pid: Segment) -> None:
    reps = pid[3].reps
    assert [rep.raw for rep in reps] == [
        "123^^^HOSP&1.2.3&ISO^PI",
        "",
        "456^^^HOSP&1.2.3&ISO^MR",
        "789^^^NAT^NI",
    ]
    assert not reps[1]
    assert len(pid[3]) == 4


def test_first_non_empty_repetition() -> None:
    pid = parse_segments("PID|1||~~X1^^^A^MR~X2").PID
    assert pid[3].first.raw == "X1^^^A^MR"
    assert pid[3].first.path == "PID-3(3)"
    assert str(pid[3]) == ""  # the first leaf of the field is the empty first repetition


def test_first_of_empty_field() -> None:
    pid = parse_segments("PID|1||~").PID
    first = pid[3].first
    assert str(first) == ""
    assert not first
    assert first.path == "PID-3"


def test_first_of_single_value(pid: Segment) -> None:
    assert pid[2].first.raw == "OLD-ID"


def test_rep_where_follows_the_order_of_values(pid: Segment) -> None:
    assert str(pid[3].rep_where(5, "MR", "PI")) == "456"
    assert str(pid[3].rep_where(5, "PI", "MR")) == "123"
    assert str(pid[3].rep_where(5, "XX", "NI", "MR")) == "789"
    assert pid[3].rep_where(5, "MR").path == "PID-3(3)"
    assert str(pid[3].rep_where(4, "NAT")) == "789"


def test_rep_where_without_match_is_empty(pid: Segment) -> None:
    found = pid[3].rep_where(5, "SS", "DL")
    assert not found
    assert str(found) == ""
    assert found.path == "PID-3"


def test_non_field_values_iterate_as_themselves(pid: Segment) -> None:
    component = pid[3][1]
    assert list(component) == [component]
    assert component.reps == [component]
    assert list(pid[3][2]) == []
    assert len(component) == 1
    assert len(pid[3][2]) == 0


# -- text ------------------------------------------------------------------------------
def test_text_str_and_raw(pid: Segment) -> None:
    name = pid[5]
    assert name.raw == "Doe\\T\\Smith^John^Paul~^Johnny"
    assert str(name) == "Doe&Smith"
    assert name.value == "Doe&Smith"
    assert name.text == "Doe&Smith^John^Paul~^Johnny"
    assert name[1].raw == "Doe\\T\\Smith"
    assert name[2].text == "John"


def test_explicit_null_is_empty(pid: Segment) -> None:
    null = pid[6]
    assert null.raw == '""'
    assert str(null) == ""
    assert not null
    assert list(null) == []


def test_explicit_null_components() -> None:
    pid = parse_segments('PID|1||""^""~""||""&x').PID
    assert not pid[3]
    assert not pid[3][1]
    assert list(pid[3]) == []
    assert str(pid[5]) == ""
    assert pid[5]  # the second sub-component has text
    assert str(pid[5][1][2]) == "x"


def test_value_with_empty_first_leaf_is_present(pid: Segment) -> None:
    # XPN with a given name only, XTN with the number in XTN.7 or the address in XTN.4.
    assert pid[5].reps[1]
    assert str(pid[5].reps[1][2]) == "Johnny"
    assert [str(rep[2]) for rep in pid[5]] == ["John", "Johnny"]
    telecoms = list(pid[13])
    assert [str(xtn[3]) for xtn in telecoms] == ["CP", "Internet"]
    assert str(telecoms[0][7]) == "11223344"
    assert str(telecoms[1][4]) == "john@example.org"
    assert pid[13]
    assert pid[13].first.path == "PID-13"


@pytest.mark.parametrize("raw", ["^", "^^", "~", "^~&", '""^""', "^\\H\\"])
def test_values_without_text_are_falsy(raw: str) -> None:
    value = parse_segments(f"ZZZ|{raw}").ZZZ[1]
    assert not value
    assert list(value) == []


def test_equality_and_hash(pid: Segment) -> None:
    assert pid[7] == "19800101"
    assert pid[7] != "1980"
    assert pid[3][5] == "PI"
    assert pid[5] == "Doe&Smith"
    assert pid[5] != pid[3]
    assert pid[3].reps[0] == parse_segments(PID).PID[3].reps[0]
    assert hash(pid[7]) == hash("19800101")
    assert (pid[7] == 19800101) is False
    assert {pid[7]: 1}["19800101"] == 1


# -- paths -----------------------------------------------------------------------------
def test_paths(message: Message, pid: Segment) -> None:
    assert pid[3].path == "PID-3"
    assert pid[3][4].path == "PID-3.4"
    assert pid[3][4][1].path == "PID-3.4.1"
    assert pid[3].reps[1][4][1].path == "PID-3(2).4.1"
    assert pid[3].reps[2][5].path == "PID-3(3).5"
    obx2 = message.all("OBX")[1]
    assert obx2[5].path == "OBX[2]-5"
    assert obx2[6][2].path == "OBX[2]-6.2"
    assert message.all("NK1")[1][2][1].path == "NK1[2]-2.1"
    assert repr(pid[3][4]) == "<Value PID-3.4>"


# -- segments --------------------------------------------------------------------------
def test_field_by_name(message: Message, pid: Segment) -> None:
    assert pid.patient_name is pid[5]
    assert pid.patient_name == pid[5]
    assert pid.patient_identifier_list is pid[3]
    assert pid.date_time_of_birth == "19800101"
    assert message.MSH.message_control_id == "CTRL-1"
    assert message.MSH.message_type[2] == "A01"
    assert message.OBX.observation_value == "first"


def test_unknown_field_name_raises(pid: Segment) -> None:
    with pytest.raises(AttributeError, match="PID has no field named 'patient_nmae'"):
        pid.patient_nmae  # noqa: B018
    with pytest.raises(AttributeError):
        pid._private  # noqa: B018


def test_z_segment_has_no_field_names(message: Message) -> None:
    zpd = message.ZPD
    assert str(zpd[2][2]) == "value"
    with pytest.raises(AttributeError):
        zpd.patient_name  # noqa: B018


def test_segment_identity(message: Message, pid: Segment) -> None:
    assert pid.name == "PID"
    assert pid.label == "PID"
    assert str(pid) == "PID"
    assert repr(message.all("NK1")[1]) == "<Segment NK1[2]>"
    assert message.all("NK1")[1].label == "NK1[2]"
    assert pid


def test_segment_without_fields_is_present() -> None:
    zzz = parse_segments("ZZZ").ZZZ
    assert zzz
    assert zzz.field_count == 0
    assert str(zzz[1]) == ""


# -- group access ----------------------------------------------------------------------
def test_absent_segment_is_empty(message: Message) -> None:
    al1 = message.AL1
    assert isinstance(al1, Segment)
    assert not al1
    assert al1.name == "AL1"
    assert str(al1[3]) == ""
    assert not al1[3][1]
    assert list(al1[3]) == []
    assert al1[3].path == "AL1-3"
    assert message.all("AL1") == []


def test_z_segment_reachable(message: Message) -> None:
    assert message.ZPD
    assert str(message.ZPD[2]) == "custom"
    assert message.ZPD is message.all("ZPD")[0]
    assert not message.ZQQ  # any Z-segment name is accepted, absent or not


@pytest.mark.parametrize("name", ["XYZ", "PIX", "QQQ"])
def test_unknown_segment_name_raises(message: Message, name: str) -> None:
    with pytest.raises(AttributeError, match=f"no segment or group named '{name}'"):
        getattr(message, name)


@pytest.mark.parametrize("name", ["pid", "patient", "_x", "Pid_"])
def test_non_hl7_attribute_names_raise(message: Message, name: str) -> None:
    with pytest.raises(AttributeError):
        getattr(message, name)


def test_segment_of_another_version_is_absent() -> None:
    message = parse_segments("EVN|A01", "PID|1", msh9="ADT^A01", version="2.3")
    assert message.version == "2.3"
    sft = message.SFT  # SFT exists from v2.5 on
    assert isinstance(sft, Segment)
    assert not sft
    assert str(sft[1]) == ""


def test_first_and_all(message: Message) -> None:
    assert message.first("PID") is message.PID
    assert [seg.label for seg in message.all("OBX")] == ["OBX", "OBX[2]"]
    assert message.all("OBX") is not message.all("OBX")  # a copy each time
    assert str(message.OBX[5]) == "first"
    assert not message.first("DG1")


def test_message_is_a_group(message: Message) -> None:
    assert isinstance(message, Group)
    assert message.name == "ADT_A01"
    assert message
    assert [seg.label for seg in message.segments][:3] == ["MSH", "EVN", "PID"]
    assert [seg.label for seg in message.walk()] == [
        "MSH",
        "EVN",
        "PID",
        "NK1",
        "NK1[2]",
        "PV1",
        "OBX",
        "OBX[2]",
        "ZPD",
    ]


def test_value_type_from_sample() -> None:
    data = (SAMPLES / "ADT_A01_crlf.hl7").read_bytes().removeprefix(b"\xef\xbb\xbf")
    message = parse(data.replace(b"\r\n", b"\r"))
    telecom = message.PID[13]
    assert isinstance(telecom, Value)
    # XTN without XTN.1 (v2.8 style): the number is in XTN.12, the repetition is present.
    assert [str(xtn[12]) for xtn in telecom] == ["+33639982512"]
    assert str(message.PID[3].rep_where(5, "INS")) == "184037511104288"
    assert str(message.PID[3].rep_where(5, "MR", "PI")[4][2]) == "1.2.250.1.999.2.1"


def test_repetitions_are_made_once_however_they_are_read() -> None:
    # A field's repetitions (and what they split and decode) are kept: loops, ``reps``,
    # ``first`` and ``field[n]`` read the same objects; beyond the last one, empty values.
    pid = parse_segments("PID|1||A1^^^X^MR~~B2^^^Y^PI").PID
    field = pid[3]
    looped = list(field)
    assert [rep.path for rep in looped] == ["PID-3", "PID-3(3)"]
    assert looped == list(field) and all(a is b for a, b in zip(looped, field, strict=True))
    assert field.reps[0] is looped[0] and field.reps[2] is looped[1]
    assert field.first is looped[0]
    assert field[4] is looped[0][4] and str(field[4]) == "X"
    assert str(field.rep_where(5, "PI")[1]) == "B2"
    beyond = field._rep(9)
    assert beyond.path == "PID-3(9)" and not beyond


def test_first_with_and_rep_where_having_skip_identifiers_without_a_number() -> None:
    """``^^^^MR`` names an assigning authority and a type, not a patient: it must not be
    chosen as the identifier a Patient's id derives from."""
    data = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5\rPID|1||^^^H^MR~77^^^H^PI~88^^^H^MR\r"
    pid3 = parse(data).PID[3]
    assert str(pid3.rep_where(5, "MR", "PI")[1]) == ""
    assert str(pid3.rep_where(5, "MR", "PI", having=1)[1]) == "88"
    assert str(pid3.first_with(1)[1]) == "77"
    empty = parse(data.replace(b"~77^^^H^PI~88^^^H^MR", b"")).PID[3]
    assert not empty.first_with(1) and not empty.rep_where(5, "MR", having=1)


@pytest.mark.parametrize("first_read", ["field", "repetition"])
def test_a_component_is_one_object_whether_read_through_the_field_or_its_repetition(
    first_read: str,
) -> None:
    # ``pid[5][1]`` reads the first repetition's component without making the repetition;
    # made later (a loop, ``first``, ``reps``), the repetition holds those same objects.
    pid = parse_segments("PID|1||A1^^^X^MR~B2^^^Y^PI||Doe^John~Roe^Jim").PID
    field = pid[5]
    if first_read == "field":
        family = field[1]
        assert family.path == "PID-5.1" and str(family) == "Doe"
    first = next(iter(field))
    assert field.first is first and field.reps[0] is first
    assert first[1] is field[1] and first[2] is field[2] and str(field[2]) == "John"
    assert field[1][1] is first[1][1] and field[1][1].path == "PID-5.1.1"
    assert [str(xpn[1]) for xpn in field] == ["Doe", "Roe"]
    assert field[9] is first[9] and not field[9] and field[9].path == "PID-5.9"
    # A repetition's own components stay its own.
    assert str(pid[3].reps[1][1]) == "B2" and str(pid[3][1]) == "A1"


def test_fields_read_by_subscript_and_by_field_are_one_object(message: Message) -> None:
    pid, msh = message.PID, message.MSH
    assert pid[5] is pid.field(5) and pid.field(7) is pid[7]
    assert pid[40] is pid.field(40) and not pid[40] and pid[40].path == "PID-40"
    assert msh[9] is msh.field(9) and str(msh[9][1]) == "ADT" and str(msh[1]) == "|"
    assert str(msh[2]) == "^~\\&" and msh[12].path == "MSH-12" and str(msh[12]) == "2.5"
