"""Message structures and segment grouping: ``converter.hl7v2.structure``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converter.errors import TemplateError, UnsupportedMessageError
from converter.hl7v2 import Group, Message, Segment, StructureCatalog, split_messages
from converter.hl7v2.encoding import Encoding
from converter.hl7v2.grouping import group_segments
from converter.hl7v2.structure import SUPPORTED_VERSIONS, supported_group_names
from tests.conftest import SHARED_DIR

from ._support import CATALOG, SAMPLES, parse, parse_segments


def tree(group: Group) -> list[Any]:
    """The group as nested lists: segment labels, ``(group name, children)`` for groups."""
    return [
        (child.name, tree(child)) if isinstance(child, Group) else child.label
        for child in group.children
    ]


ORU = [
    "PID|1||P1^^^H^MR",
    "PV1|1|O",
    "ORC|RE|ORD1",
    "OBR|1|ORD1||CHEM",
    "NTE|1||note on order 1",
    "OBX|1|NM|GLU||5.5",
    "NTE|2||note on glucose",
    "NTE|3||second note on glucose",
    "OBX|2|NM|NA||140",
    "OBX|3|ST|ASP||clear",
    "NTE|4||note on aspect",
    "ORC|RE|ORD2",
    "OBR|2|ORD2||HEMA",
    "NTE|5||note on order 2",
    "OBX|4|NM|HB||13.5",
    "NTE|6||note on haemoglobin",
    "OBX|5|NM|PLT||250",
]

ORDER_1 = [
    "ORC",
    "OBR",
    "NTE",
    ("OBSERVATION", ["OBX", "NTE[2]", "NTE[3]"]),
    ("OBSERVATION", ["OBX[2]"]),
    ("OBSERVATION", ["OBX[3]", "NTE[4]"]),
]
ORDER_2 = [
    "ORC[2]",
    "OBR[2]",
    "NTE[5]",
    ("OBSERVATION", ["OBX[4]", "NTE[6]"]),
    ("OBSERVATION", ["OBX[5]"]),
]
PATIENT = ("PATIENT", ["PID", ("VISIT", ["PV1"])])


def oru(version: str, *extra: str) -> Message:
    return parse_segments(*(extra or ORU), msh9="ORU^R01", version=version)


# -- ORU_R01 ---------------------------------------------------------------------------
def test_oru_r01_v251_tree() -> None:
    message = oru("2.5.1")
    assert message.structure == "ORU_R01"
    assert tree(message) == [
        "MSH",
        (
            "PATIENT_RESULT",
            [PATIENT, ("ORDER_OBSERVATION", ORDER_1), ("ORDER_OBSERVATION", ORDER_2)],
        ),
    ]


def test_oru_r01_v251_navigation() -> None:
    message = oru("2.5.1")
    orders = message.find("ORDER_OBSERVATION")
    assert len(orders) == 2
    assert orders == message.ORDER_OBSERVATION
    assert [str(order.OBR[2]) for order in orders] == ["ORD1", "ORD2"]
    first, second = orders
    # NTE right after OBR belongs to the order, not to an observation.
    assert [seg.label for seg in first.segments] == ["ORC", "OBR", "NTE"]
    assert str(first.segments[2][3]) == "note on order 1"
    observations = first.find("OBSERVATION")
    assert [str(obs.OBX[3]) for obs in observations] == ["GLU", "NA", "ASP"]
    # NTEs after an OBX belong to that observation.
    assert [str(nte[3]) for nte in observations[0].all("NTE")] == [
        "note on glucose",
        "second note on glucose",
    ]
    assert observations[1].all("NTE") == []
    assert not observations[1].NTE
    assert [str(nte[3]) for nte in observations[2].all("NTE")] == ["note on aspect"]
    assert [str(obs.OBX[3]) for obs in second.OBSERVATION] == ["HB", "PLT"]
    assert [str(nte[3]) for nte in second.find("OBSERVATION")[0].all("NTE")] == [
        "note on haemoglobin"
    ]
    assert len(message.find("OBSERVATION")) == 5
    assert first.find("ORDER_OBSERVATION") == []
    assert message.find("PATIENT")[0].PID is message.PID
    assert message.find("VISIT")[0].PV1 is message.PV1
    assert str(second.NTE[3]) == "note on order 2"  # first NTE at any depth
    assert repr(first) == "<Group ORDER_OBSERVATION>"


def test_oru_r01_v23_response_group() -> None:
    message = oru("2.3")
    assert message.structure == "ORU_R01"
    assert tree(message) == [
        "MSH",
        (
            "RESPONSE",
            [PATIENT, ("ORDER_OBSERVATION", ORDER_1), ("ORDER_OBSERVATION", ORDER_2)],
        ),
    ]
    assert message.find("PATIENT_RESULT") == []
    assert len(message.find("RESPONSE")[0].find("ORDER_OBSERVATION")) == 2


def test_a_group_of_another_version_is_empty_and_an_unknown_group_is_an_error() -> None:
    message = oru("2.3")
    assert message.find("ORDER_CHOICE") == []  # 2.5.1 only
    assert message.RESPONSE[0].PATIENT_RESULT == []  # 2.4 and later
    for group in (message, message.RESPONSE[0]):
        with pytest.raises(TemplateError, match="PATIENT_RESULTS"):
            group.find("PATIENT_RESULTS")
        with pytest.raises(TemplateError, match="ORDER_OBSERVATON"):
            group.ORDER_OBSERVATON  # noqa: B018


def test_group_names_file_matches_hl7apy() -> None:
    """data/group_names.txt is every group of every supported version (regenerate with
    scripts/make_group_names.py after an hl7apy upgrade)."""
    expected = supported_group_names()
    assert CATALOG.version("2.5.1").known_groups == expected
    assert CATALOG.version("2.3").known_groups == expected


def test_oru_r01_v28_common_order() -> None:
    message = oru("2.8")
    common_1 = ("COMMON_ORDER", ["ORC"])
    common_2 = ("COMMON_ORDER", ["ORC[2]"])
    assert tree(message) == [
        "MSH",
        (
            "PATIENT_RESULT",
            [
                PATIENT,
                ("ORDER_OBSERVATION", [common_1, *ORDER_1[1:]]),
                ("ORDER_OBSERVATION", [common_2, *ORDER_2[1:]]),
            ],
        ),
    ]
    orders = message.find("ORDER_OBSERVATION")
    assert [str(order.find("COMMON_ORDER")[0].ORC[2]) for order in orders] == ["ORD1", "ORD2"]
    assert [str(order.ORC[2]) for order in orders] == ["ORD1", "ORD2"]


def test_oru_r01_without_patient() -> None:
    message = oru("2.5.1", "OBR|1", "OBX|1", "OBX|2")
    assert tree(message) == [
        "MSH",
        (
            "PATIENT_RESULT",
            [("ORDER_OBSERVATION", ["OBR", ("OBSERVATION", ["OBX"]), ("OBSERVATION", ["OBX[2]"])])],
        ),
    ]


def test_oru_sample() -> None:
    (raw,) = split_messages((SAMPLES / "ORU_R01_lab-results.hl7").read_bytes())
    message = parse(raw.data)
    orders = message.find("ORDER_OBSERVATION")
    assert [len(order.find("OBSERVATION")) for order in orders] == [7, 3]
    assert [seg.label for seg in orders[0].find("SPECIMEN")[0].walk()] == ["SPM"]
    assert [seg.label for seg in orders[0].segments] == ["ORC", "OBR", "NTE"]
    assert orders[0].find("OBSERVATION")[0].NTE.label == "NTE[2]"
    assert orders[1].find("OBSERVATION")[2].NTE.label == "NTE[4]"
    assert str(orders[1].find("OBSERVATION")[1].OBX[5][2]) == "10"


# -- ADT -------------------------------------------------------------------------------
def test_adt_a01_repeated_segments() -> None:
    message = parse_segments(
        "EVN|A01",
        "PID|1",
        "NK1|1|A",
        "NK1|2|B",
        "NK1|3|C",
        "PV1|1|I",
        "AL1|1||X",
        "AL1|2||Y",
        "DG1|1||D1",
        "DG1|2||D2",
        "DG1|3||D3",
        "PR1|1",
        "ROL|1",
        "PR1|2",
        "IN1|1",
        "IN2|1",
        "IN1|2",
        msh9="ADT^A01",
        version="2.5",
    )
    assert tree(message) == [
        "MSH",
        "EVN",
        "PID",
        "NK1",
        "NK1[2]",
        "NK1[3]",
        "PV1",
        "AL1",
        "AL1[2]",
        "DG1",
        "DG1[2]",
        "DG1[3]",
        ("PROCEDURE", ["PR1", "ROL"]),
        ("PROCEDURE", ["PR1[2]"]),
        ("INSURANCE", ["IN1", "IN2"]),
        ("INSURANCE", ["IN1[2]"]),
    ]
    assert [str(nk1[2]) for nk1 in message.all("NK1")] == ["A", "B", "C"]
    assert [str(al1[3]) for al1 in message.all("AL1")] == ["X", "Y"]
    assert [str(dg1[3]) for dg1 in message.all("DG1")] == ["D1", "D2", "D3"]
    assert [len(p.children) for p in message.PROCEDURE] == [2, 1]


def test_adt_a08_uses_adt_a01_structure() -> None:
    message = parse_segments("EVN|A08", "PID|1", "PV1|1", "PR1|1", msh9="ADT^A08", version="2.3")
    assert message.structure == "ADT_A01"
    assert tree(message) == ["MSH", "EVN", "PID", "PV1", ("PROCEDURE", ["PR1"])]


def test_adt_a40_merge_groups() -> None:
    message = parse_segments(
        "EVN|A40", "PID|1", "MRG|OLD1", "PID|2", "MRG|OLD2", msh9="ADT^A40", version="2.5"
    )
    assert message.structure == "ADT_A39"
    assert tree(message) == [
        "MSH",
        "EVN",
        ("PATIENT", ["PID", "MRG"]),
        ("PATIENT", ["PID[2]", "MRG[2]"]),
    ]


# -- segments the structure does not expect --------------------------------------------
def test_z_segment_stays_where_it_appears() -> None:
    lines = [*ORU]
    lines.insert(lines.index("OBX|2|NM|NA||140") + 1, "ZXX|1|custom")
    lines.insert(lines.index("OBR|2|ORD2||HEMA") + 1, "ZXX|2|custom")
    message = oru("2.5.1", *lines)
    first, second = message.find("ORDER_OBSERVATION")
    assert [seg.label for seg in first.find("OBSERVATION")[1].walk()] == ["OBX[2]", "ZXX"]
    assert [seg.label for seg in second.segments] == ["ORC[2]", "OBR[2]", "ZXX[2]", "NTE[5]"]
    assert [str(z[1]) for z in message.all("ZXX")] == ["1", "2"]
    assert message.ZXX.label == "ZXX"
    assert second.ZXX.label == "ZXX[2]"
    assert [seg.label for seg in message.walk()] == ["MSH", *_labels(lines)]


def test_z_segment_in_adt_stays_at_root() -> None:
    message = parse_segments("EVN|A01", "PID|1", "ZPD|x", "PV1|1", msh9="ADT^A01")
    assert tree(message) == ["MSH", "EVN", "PID", "ZPD", "PV1"]
    assert str(message.ZPD[1]) == "x"


def test_out_of_order_segments_are_kept() -> None:
    lines = ["PV1|1", "EVN|A01", "PID|1", "ZPD|1", "PV1|2", "EVN|2", "PID|2"]
    message = parse_segments(*lines, msh9="ADT^A01", version="2.5")
    walked = list(message.walk())
    assert len(walked) == len(lines) + 1
    assert [seg.label for seg in walked] == ["MSH", *_labels(lines)]
    assert str(message.PV1[1]) == "1"
    assert [str(pid[1]) for pid in message.all("PID")] == ["1", "2"]


def test_out_of_order_segments_in_nested_groups_are_kept() -> None:
    lines = ["OBX|0", "PID|1", "OBR|1", "PV1|1", "OBX|1", "ORC|1", "NTE|1", "PID|2", "SPM|1"]
    message = oru("2.5.1", *lines)
    walked = list(message.walk())
    assert len(walked) == len(lines) + 1
    assert [seg.label for seg in walked] == ["MSH", *_labels(lines)]


def test_segment_of_another_version_is_kept() -> None:
    message = parse_segments("SFT|x", "EVN|A01", "PID|1", "PV1|1", msh9="ADT^A01", version="2.3")
    assert tree(message) == ["MSH", "SFT", "EVN", "PID", "PV1"]
    assert str(message.SFT[1]) == "x"


def test_unknown_structure_is_flat() -> None:
    lines = ["ZA1|1", "PID|1", "OBX|1", "ZA1|2", "PV1|1"]
    message = parse_segments(*lines, msh9="ZZZ^Z99", version="2.5")
    assert message.structure == "ZZZ_Z99"
    assert all(isinstance(child, Segment) for child in message.children)
    assert tree(message) == ["MSH", "ZA1", "PID", "OBX", "ZA1[2]", "PV1"]
    assert message.groups == []


def test_group_segments_without_structure() -> None:
    enc = Encoding()
    segments = [Segment(n, [n, "x"], enc, "utf-8", n) for n in ("MSH", "PID", "OBX")]
    target = Group("FLAT", frozenset())
    group_segments(None, segments, target)
    assert target.children == segments


# -- catalog ---------------------------------------------------------------------------
def test_unsupported_versions() -> None:
    for version in ("2.2", "2.9", "", "2.5.2"):
        with pytest.raises(UnsupportedMessageError) as info:
            CATALOG.version(version)
        assert info.value.hl7_error_code == "203"
        assert info.value.location == "MSH-12"


def test_an_unsupported_version_is_not_quoted_in_the_error_text() -> None:
    """``str(error)`` never holds message content (converter.errors): a misaligned MSH
    can put a name in MSH-12. The value goes to ``detail``."""
    with pytest.raises(UnsupportedMessageError) as info:
        parse_segments("PID|1", version="DUPONT Marie 1985-03-12")
    error = info.value
    assert str(error) == "HL7 version is not supported (2.3 to 2.8) at MSH-12 (MSH-10 CID-1)"
    assert error.detail == "'DUPONT Marie 1985-03-12'"
    assert error.hl7_error_code == "203"


def test_version_catalog_is_cached_and_trimmed() -> None:
    catalog = StructureCatalog()
    assert catalog.version("2.5") is catalog.version("2.5")
    assert catalog.version(" 2.5 ") is catalog.version("2.5")
    assert catalog.version("2.7.1").version == "2.7.1"


def test_version_specific_event_table() -> None:
    # ADT^A55 uses ADT_A52 in 2.4-2.5.1 and ADT_A54 from 2.6 on.
    assert CATALOG.version("2.4").structure_for("", "ADT^A55") == "ADT_A52"
    assert CATALOG.version("2.4 ").structure_for("", "ADT^A55") == "ADT_A52"
    assert CATALOG.version("2.6").structure_for("", "ADT^A55") == "ADT_A54"
    assert CATALOG.version("2.3").structure_for("", "ADT^A55") is None


def test_structure_for() -> None:
    v23 = CATALOG.version("2.3")
    assert v23.structure_for("", "ADT^A04") == "ADT_A01"
    assert v23.structure_for("", "ADT^A40") == "ADT_A39"
    # MSH-9.3 wins when the version defines it, else the event table decides.
    assert CATALOG.version("2.5").structure_for("ADT_A05", "ADT^A04") == "ADT_A05"
    assert v23.structure_for("ADT_A05", "ADT^A04") == "ADT_A01"  # no ADT_A05 in 2.3
    assert v23.structure_for("", "ACK^R01") == "ACK"
    assert v23.structure_for("", "ZZZ^Z01") is None


def test_structure_tree() -> None:
    v251 = CATALOG.version("2.5.1")
    assert v251.structure("NOT_A_STRUCTURE") is None
    root = v251.structure("ORU_R01")
    assert root is not None
    assert root is v251.structure("ORU_R01")
    assert root.is_group
    assert [child.name for child in root.children] == ["MSH", "SFT", "PATIENT_RESULT", "DSC"]
    patient_result = root.children[2]
    assert (patient_result.min, patient_result.max) == (1, -1)
    assert patient_result.first == frozenset({"PID", "ORC", "OBR"})
    order = patient_result.children[1]
    assert order.name == "ORDER_OBSERVATION"
    assert order.first == frozenset({"ORC", "OBR"})


def test_segment_field_names() -> None:
    names = CATALOG.version("2.5").segment_names
    assert names["PID"]["patient_name"] == 5
    assert names["PID"]["patient_identifier_list"] == 3
    assert names["MSH"]["message_control_id"] == 10
    assert names["OBX"]["observation_value"] == 5
    assert "SFT" in CATALOG.version("2.3").known_segments
    assert "SFT" not in CATALOG.version("2.3").segment_names


def test_supported_versions() -> None:
    assert set(SUPPORTED_VERSIONS) == {
        "2.3",
        "2.3.1",
        "2.4",
        "2.5",
        "2.5.1",
        "2.6",
        "2.7",
        "2.7.1",
        "2.8",
        "2.8.1",
        "2.8.2",
    }


# -- grouping never loses, duplicates or reorders a segment -----------------------------
def _labels(lines: list[str]) -> list[str]:
    counts: dict[str, int] = {"MSH": 1}
    labels = []
    for line in lines:
        name = line[:3]
        counts[name] = counts.get(name, 0) + 1
        labels.append(name if counts[name] == 1 else f"{name}[{counts[name]}]")
    return labels


ORU_VOCABULARY = [
    "SFT",
    "PID",
    "PD1",
    "NTE",
    "NK1",
    "PV1",
    "PV2",
    "ORC",
    "OBR",
    "TQ1",
    "TQ2",
    "CTD",
    "OBX",
    "FT1",
    "CTI",
    "SPM",
    "DSC",
    "PRT",
    "ZXX",
    "ZPD",
    "MSH",
]
ADT_VOCABULARY = ["EVN", "PID", "PD1", "NK1", "PV1", "PV2", "AL1", "DG1", "PR1", "ROL", "IN1"]


@given(
    st.sampled_from(["2.3", "2.3.1", "2.5.1", "2.6", "2.8"]),
    st.lists(st.sampled_from(ORU_VOCABULARY), max_size=40),
)
@settings(max_examples=300)
def test_oru_grouping_keeps_every_segment_in_order(version: str, names: list[str]) -> None:
    lines = [f"{name}|{n}" for n, name in enumerate(names, start=1)]
    message = oru(version, *lines) if lines else parse_segments(msh9="ORU^R01", version=version)
    _assert_lossless(message, lines)


@given(
    st.sampled_from(["ADT^A01", "ADT^A40", "ADT^A17", "ORU^R01", "ZZZ^Z01"]),
    st.lists(st.sampled_from(ADT_VOCABULARY + ORU_VOCABULARY), max_size=40),
)
@settings(max_examples=300)
def test_any_grouping_keeps_every_segment_in_order(msh9: str, names: list[str]) -> None:
    lines = [f"{name}|{n}" for n, name in enumerate(names, start=1)]
    message = parse_segments(*lines, msh9=msh9, version="2.5")
    _assert_lossless(message, lines)


def _assert_lossless(message: Message, lines: list[str]) -> None:
    walked = list(message.walk())
    assert len(walked) == len(lines) + 1
    assert walked[0].name == "MSH"
    assert [seg.label for seg in walked[1:]] == _labels(lines)
    assert [seg[1].raw for seg in walked[1:] if seg.name != "MSH"] == [
        line.split("|")[1] for line in lines if not line.startswith("MSH")
    ]
    assert len({id(seg) for seg in walked}) == len(walked)
    for group in _all_groups(message):
        assert group.children, f"empty group {group.name}"


def _all_groups(group: Group) -> list[Group]:
    found = []
    for child in group.groups:
        found.append(child)
        found.extend(_all_groups(child))
    return found


# -- ambiguous structures: what a reader of the standard expects --------------------------
def _sig(group: Group) -> str:
    """The group as one line: segment names, ``NAME(...)`` for groups."""
    return " ".join(
        f"{child.name}({_sig(child)})" if isinstance(child, Group) else child.name
        for child in group.children
    )


def _sample(name: str) -> Message:
    (raw,) = split_messages((SAMPLES / name).read_bytes())
    return parse(raw.data)


def _corpus(path: str) -> Message:
    file = SHARED_DIR / "corpus" / "hl7v2" / path
    if not file.is_file():
        pytest.skip(f"corpus file {path} not available")
    (raw,) = split_messages(file.read_bytes())
    return parse(raw.data)


def test_oml_o21_every_orc_after_an_obr_opens_an_order() -> None:
    """HL7 v2.5 ch. 4 §4.4.7 OML_O21: ORDER is {ORC [TIMING] [OBSERVATION_REQUEST] …} and
    PRIOR_RESULT's ORDER_PRIOR may open with an ORC too: ORDER opens with ORC, so the ORC
    opens a new ORDER (it used to become a prior result of the order before it)."""
    message = _sample("OML_O21_lab-order.hl7")
    assert _sig(message) == (
        "MSH PATIENT(PID PATIENT_VISIT(PV1)) "
        "ORDER(ORC OBSERVATION_REQUEST(OBR NTE DG1 OBSERVATION(OBX) SPECIMEN(SPM))) "
        "ORDER(ORC TIMING(TQ1) OBSERVATION_REQUEST(OBR NTE))"
    )
    assert message.find("PRIOR_RESULT") == []
    orders = message.find("ORDER")
    assert [str(order.OBR[4][1]) for order in orders] == [
        str(obr[4][1]) for obr in message.all("OBR")
    ]
    assert [len(order.all("OBR")) for order in orders] == [1, 1]


@pytest.mark.parametrize("version", ["2.5", "2.5.1", "2.6"])  # 2.7+: ORDER_PRIOR needs ORC
def test_oml_o21_prior_results_are_still_found(version: str) -> None:
    message = parse_segments(
        "PID|1",
        "ORC|NW|A",
        "OBR|1|A",
        "OBX|1",
        # A prior result opened by its patient: its ORC is ORDER_PRIOR's (required there).
        "PID|2",
        "ORC|NW|OLD",
        "OBR|1|OLD",
        "OBX|1",
        # An ORC after the prior result's observation opens the next order.
        "ORC|NW|B",
        "OBR|1|B",
        # A second OBR in one order: an ORDER_PRIOR without ORC.
        "OBR|1|OLD2",
        "OBX|1",
        "ORC|NW|C",
        msh9="OML^O21^OML_O21",
        version=version,
    )
    request = "OBSERVATION_REQUEST"
    assert _sig(message).replace("TIIMING", "TIMING") == (
        "MSH PATIENT(PID) "
        f"ORDER(ORC {request}(OBR OBSERVATION(OBX) PRIOR_RESULT(PATIENT_PRIOR(PID) "
        "ORDER_PRIOR(ORC OBR OBSERVATION_PRIOR(OBX))))) "
        f"ORDER(ORC {request}(OBR PRIOR_RESULT(ORDER_PRIOR(OBR OBSERVATION_PRIOR(OBX))))) "
        "ORDER(ORC)"
    )
    assert [str(order.ORC[2]) for order in message.find("ORDER")] == ["A", "B", "C"]


def test_oml_o21_corpus_two_orders() -> None:
    message = _corpus("linuxforhealth/from-java-tests/HL7OMLMessageTest_L101_d42e33ed6a.hl7")
    assert _sig(message) == (
        "MSH PATIENT(PID) ORDER(ORC OBSERVATION_REQUEST(OBR DG1)) "
        "ORDER(ORC OBSERVATION_REQUEST(OBR DG1))"
    )


def test_omg_o19_orders_and_prior_results() -> None:
    """OMG_O19 (HL7 v2.5 ch. 4) has OML's PRIOR_RESULT: same reading."""
    message = _corpus("ms-fhir-converter/input/OMG-O19-02.hl7")
    orders = message.find("ORDER")
    assert len(orders) == 3 == len(message.all("ORC")) - 2
    prior = message.find("PRIOR_RESULT")
    assert [_sig(p) for p in prior] == [
        "PATIENT_VISIT_PRIOR(PV1) AL1 ORDER_PRIOR(ORC OBR NTE OBSERVATION_PRIOR(OBX NTE))"
    ] * 2
    assert all(p in orders[2].find("PRIOR_RESULT") for p in prior)


OUL_28 = [
    "PID|1",
    "SPM|1|S1",
    "OBR|1|P1|F1|GLU",
    "ORC|RE|P1|F1",
    "OBX|1|NM|GLU||5.5",
    "NTE|1||note on glucose",
    "OBX|2|NM|NA||140",
    "OBR|2|P2|F2|DOC",
    "ORC|RE|P2|F2",
    "OBX|1|ED|PDF||^application^pdf^Base64^AAAA",
    "TXA|1|CN",
    "NTE|1||note on order 2",
    "OBX|2|NM|K||4.1",
]


def test_oul_v28_a_result_obx_is_no_order_document() -> None:
    """HL7 v2.8 ch. 7 OUL_R22: COMMON_ORDER is ORC [{PRT}] [ORDER_DOCUMENT], ORDER_DOCUMENT
    OBX [{PRT}] TXA: an OBX that no TXA follows is a RESULT."""
    message = parse_segments(*OUL_28, msh9="OUL^R22^OUL_R22", version="2.8")
    assert _sig(message) == (
        "MSH PATIENT(PID) SPECIMEN(SPM "
        "ORDER(OBR COMMON_ORDER(ORC) RESULT(OBX NTE) RESULT(OBX)) "
        "ORDER(OBR COMMON_ORDER(ORC ORDER_DOCUMENT(OBX TXA)) NTE RESULT(OBX)))"
    )
    first, second = message.find("ORDER")
    assert [str(result.OBX[3]) for result in first.find("RESULT")] == ["GLU", "NA"]
    assert str(first.find("RESULT")[0].NTE[3]) == "note on glucose"
    assert [str(result.OBX[3]) for result in second.find("RESULT")] == ["K"]


def test_oul_v28_corpus_documents_stay_documents() -> None:
    message = _corpus("ms-fhir-converter/input/OUL-R22-02.hl7")
    orders = message.find("ORDER")
    assert [_sig(order) for order in orders] == [
        "OBR COMMON_ORDER(ORC ORDER_DOCUMENT(OBX TXA)) NTE RESULT(OBX)"
    ] * 2


@pytest.mark.parametrize(
    ("msh9", "expected"),
    [
        (
            "OUL^R22^OUL_R22",
            "MSH PATIENT(PID) VISIT(PV1) SPECIMEN(SPM OBX ORDER(OBR ORC TIMING_QTY(TQ1) "
            "RESULT(OBX NTE) RESULT(OBX)))",
        ),
        (
            "OUL^R23^OUL_R23",
            "MSH PATIENT(PID) VISIT(PV1) SPECIMEN(SPM OBX CONTAINER(SAC ORDER(OBR ORC "
            "TIMING_QTY(TQ1) RESULT(OBX NTE) RESULT(OBX))))",
        ),
    ],
)
def test_oul_v251_groups_have_the_standard_names(msh9: str, expected: str) -> None:
    """hl7apy names v2.5.1's OUL groups after their segments (OBXTCDSIDNTE_SUPPGRP): they
    carry the names of HL7 v2.5.1 ch. 7's message tables."""
    lines = ["PID|1", "PV1|1", "SPM|1", "OBX|1", "OBR|1", "ORC|RE", "TQ1|1"]
    lines += ["OBX|2", "NTE|1", "OBX|3"]
    if msh9.endswith("R23"):
        lines.insert(4, "SAC|1")
    message = parse_segments(*lines, msh9=msh9, version="2.5.1")
    assert _sig(message) == expected


def test_oul_r24_v251_groups_have_the_standard_names() -> None:
    message = parse_segments(
        "PID|1", "PV1|1", "OBR|1", "ORC|RE", "TQ1|1", "SPM|1", "OBX|1", "SAC|1", "OBX|2",
        msh9="OUL^R24^OUL_R24", version="2.5.1",
    )  # fmt: skip
    assert _sig(message) == (
        "MSH PATIENT(PID) VISIT(PV1) ORDER(OBR ORC TIMING_QTY(TQ1) "
        "SPECIMEN(SPM OBX CONTAINER(SAC)) RESULT(OBX))"
    )
    sample = _sample("OUL_R22_lab-results.hl7")
    assert [len(order.find("RESULT")) for order in sample.find("ORDER")] == [2, 1, 2]
    assert "SUPPGRP" not in _sig(sample)


def test_rds_o13_rxr_right_after_rxo_belongs_to_the_order_detail() -> None:
    """HL7 v2.5 ch. 4A RDS_O13: ORDER_DETAIL is RXO [ORDER_DETAIL_SUPPLEMENT], the
    supplement {NTE} {RXR} [COMPONENT]: an RXR right after the RXO is its (the NTE left
    out), not the dispense's, and the RXE, its TQ1 and the RXD then find their groups."""
    message = parse_segments(
        "PID|1",
        "ORC|RE|P1",
        "RXO|AMOX",
        "RXR|PO",
        "RXC|B|AMOX",
        "RXE||AMOX",
        "NTE|1||encoded note",
        "TQ1|1",
        "RXR|PO",
        "RXD|1|AMOX",
        "NTE|2||dispense note",
        "RXR|PO",
        "OBX|1",
        msh9="RDS^O13^RDS_O13",
        version="2.5.1",
    )
    assert _sig(message) == (
        "MSH PATIENT(PID) ORDER(ORC ORDER_DETAIL(RXO ORDER_DETAIL_SUPPLEMENT(RXR "
        "COMPONENT(RXC))) ENCODING(RXE NTE TIMING_ENCODED(TQ1) RXR) RXD NTE RXR "
        "OBSERVATION(OBX))"
    )
    order = message.find("ORDER")[0]
    assert [seg.label for seg in order.segments] == ["ORC", "RXD", "NTE[2]", "RXR[3]"]


def test_a_stray_segment_opens_no_group_without_its_head() -> None:
    """Only groups whose head senders are known to leave out (RDS_O13's
    ORDER_DETAIL_SUPPLEMENT) are opened without it: a PR1 written before the FT1 of a
    DFT_P03 stays where the sender put it, rather than opening a FINANCIAL group without
    its required FT1."""
    message = parse_segments(
        "EVN|P03",
        "PID|1",
        "PV1|1|I",
        "PR1|1||JANM001^Litho^CCAM",
        "FT1|1|T1||20240913||CG|JANM001^Litho^CCAM",
        msh9="DFT^P03^DFT_P03",
        version="2.5",
    )
    assert _sig(message) == "MSH EVN PID PV1 PR1 FINANCIAL(FT1)"


def test_rds_o13_sample_and_corpus() -> None:
    sample = _sample("RDS_O13_pharmacy-dispense.hl7")
    assert _sig(sample) == (
        "MSH PATIENT(PID PATIENT_VISIT(PV1)) ORDER(ORC ORDER_DETAIL(RXO "
        "ORDER_DETAIL_SUPPLEMENT(NTE RXR)) ENCODING(RXE NTE TIMING_ENCODED(TQ1) RXR) RXD NTE RXR)"
    )
    message = _corpus("ms-fhir-converter/input/RDS-O13-02.hl7")
    order = (
        "ORC TIMING(TQ1) ORDER_DETAIL(RXO ORDER_DETAIL_SUPPLEMENT(RXR COMPONENT(RXC))) "
        "ENCODING(RXE TIMING_ENCODED(TQ1) RXR RXC) RXD RXR RXC"
    )
    assert [_sig(group) for group in message.find("ORDER")] == [order, order]


# -- the grouping of unambiguous structures is unchanged ------------------------------------
UNCHANGED = {
    "ORU_R01_lab-results.hl7": (
        "MSH PATIENT_RESULT(PATIENT(PID VISIT(PV1)) ORDER_OBSERVATION(ORC OBR NTE "
        "OBSERVATION(OBX NTE) OBSERVATION(OBX) OBSERVATION(OBX) OBSERVATION(OBX) "
        "OBSERVATION(OBX) OBSERVATION(OBX) OBSERVATION(OBX) SPECIMEN(SPM)) "
        "ORDER_OBSERVATION(ORC OBR NTE OBSERVATION(OBX) OBSERVATION(OBX) "
        "OBSERVATION(OBX NTE)))"
    ),
    "ORM_O01_medication-order.hl7": (
        "MSH PATIENT(PID PATIENT_VISIT(PV1) AL1) ORDER(ORC RXO RXR NTE DG1 OBX) ORDER(ORC RXO RXR)"
    ),
    "ORM_O01_radiology-order.hl7": (
        "MSH PATIENT(PID PATIENT_VISIT(PV1)) ORDER(ORC ORDER_DETAIL(CHOICE(OBR) NTE DG1))"
    ),
    "VXU_V04_immunization.hl7": (
        "MSH PID PD1 NK1 ORDER(ORC RXA RXR OBSERVATION(OBX) OBSERVATION(OBX NTE)) ORDER(ORC RXA)"
    ),
    "SIU_S12_new-appointment.hl7": (
        "MSH SCH NTE PATIENT(PID PV1) RESOURCES(RGS SERVICE(AIS NTE) GENERAL_RESOURCE(AIG NTE) "
        "LOCATION_RESOURCE(AIL) PERSONNEL_RESOURCE(AIP)) RESOURCES(RGS SERVICE(AIS) "
        "LOCATION_RESOURCE(AIL) PERSONNEL_RESOURCE(AIP NTE))"
    ),
    "MDM_T02_discharge-summary.hl7": (
        "MSH EVN PID PV1 TXA OBSERVATION(OBX) OBSERVATION(OBX) OBSERVATION(OBX) "
        "OBSERVATION(OBX) OBSERVATION(OBX)"
    ),
    "RDE_O11_pharmacy-encoded-orders.hl7": (
        "MSH PATIENT(PID PATIENT_VISIT(PV1) AL1) ORDER(ORC ORDER_DETAIL(RXO NTE RXR) RXE NTE "
        "TIMING_ENCODED(TQ1) RXR) ORDER(ORC ORDER_DETAIL(RXO RXR) RXE NTE TIMING_ENCODED(TQ1) "
        "RXR OBSERVATION(OBX))"
    ),
    "OMP_O09_pharmacy-order.hl7": (
        "MSH PATIENT(PID PATIENT_VISIT(PV1)) ORDER(ORC TIMING(TQ1) RXO NTE RXR "
        "OBSERVATION(OBX NTE)) ORDER(ORC TIMING(TQ1) RXO RXR)"
    ),
    "ADT_A01_admission-full.hl7": (
        "MSH EVN PID PD1 NK1 NK1 PV1 PV2 OBX OBX OBX AL1 AL1 DG1 DG1 PROCEDURE(PR1) "
        "INSURANCE(IN1 ZPD)"
    ),
}


@pytest.mark.parametrize("name", sorted(UNCHANGED))
def test_groups_of_other_structures_are_unchanged(name: str) -> None:
    """The trees the grouping gave these samples before the ambiguity rules (recorded)."""
    assert _sig(_sample(name)) == UNCHANGED[name]


def test_an_orc_without_obr_still_opens_the_order_observation() -> None:
    """No whole place for the ORC (its order has no OBR): the nearest place wins, as
    before; a new PATIENT_RESULT would not be whole either."""
    message = oru("2.5.1", "PID|1", "ORC|RE|A", "OBX|1", "ORC|RE|B", "OBR|1|B", "OBX|2")
    assert _sig(message) == (
        "MSH PATIENT_RESULT(PATIENT(PID) ORDER_OBSERVATION(ORC OBSERVATION(OBX)) "
        "ORDER_OBSERVATION(ORC OBR OBSERVATION(OBX)))"
    )


def test_structure_tree_ambiguity_data() -> None:
    oml = CATALOG.version("2.5.1").structure("OML_O21")
    assert oml is not None and oml.ambiguous == frozenset({"ORC"})
    oru_root = CATALOG.version("2.5.1").structure("ORU_R01")
    assert oru_root is not None and oru_root.ambiguous == frozenset()
    rds = CATALOG.version("2.5.1").structure("RDS_O13")
    assert rds is not None
    detail = next(c for c in rds.children if c.name == "ORDER").children[2]
    supplement = detail.children[1]
    assert (supplement.name, supplement.head, supplement.loose) == (
        "ORDER_DETAIL_SUPPLEMENT",
        "NTE",
        frozenset({"RXR"}),
    )
