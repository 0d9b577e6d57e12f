"""Strict mode names OML_O21's and OML_O35's TIMING group as the standard does (session 26).

hl7apy's v2.5 and v2.6 tables misspell it ``TIIMING``. The conversion corrected the name
(``converter.hl7v2.structure``), the strict structure check did not: a segment out of place
after an order's TQ1 was refused "out of place in TIIMING". Both now read the one name map.
"""

from __future__ import annotations

import pytest

from converter.errors import ParseError
from converter.hl7v2.strict import validate_strictly
from converter.hl7v2.strict_structure import check_structure

ORDER = [
    "ORC|NW|CMD-1^DPI|||||||20240411090000+0200",
    "TQ1|1||||||20240411093000+0200||R^Routine^HL70485",
    # Out of place: the DG1 of the order stands before its OBR.
    "DG1|1||E11.9^Diabetes^I10|||W",
    "OBR|1|CMD-1^DPI||2345-7^Glucose^LN",
]
BEFORE_ORDER = {
    "OML_O21": ["PID|1||VAL1^^^H^PI||DOE^Jane"],
    "OML_O35": ["PID|1||VAL1^^^H^PI||DOE^Jane", "SPM|1|PRE-1^DPI||SER^Serum^HL70487", "SAC|||T-1"],
}
CASES = [(s, v) for s in ("OML_O21", "OML_O35") for v in ("2.5", "2.6", "2.5.1")]


def _message(structure: str, version: str) -> str:
    code, event = structure.split("_")
    msh = f"MSH|^~\\&|APP|FAC|RCV|RFAC|20240411093000||{code}^{event}^{structure}|CID-1|P|{version}"
    return "\r".join([msh, *BEFORE_ORDER[structure], *ORDER])


@pytest.mark.parametrize(("structure", "version"), CASES)
def test_a_segment_out_of_place_after_tq1_is_named_in_timing(structure: str, version: str) -> None:
    with pytest.raises(ParseError) as refused:
        validate_strictly(_message(structure, version), "CID-1")
    assert (
        f"segment DG1 (segment {len(BEFORE_ORDER[structure]) + 4}) out of place in TIMING of"
        in (str(refused.value))
    )
    assert "TIIMING" not in str(refused.value)


@pytest.mark.parametrize(("structure", "version"), CASES)
def test_the_structure_problem_names_the_standard_group(structure: str, version: str) -> None:
    names = [segment[:3] for segment in _message(structure, version).split("\r")]
    problem = check_structure(version, structure, names)
    assert problem is not None and (problem.segment, problem.group) == ("DG1", "TIMING")
