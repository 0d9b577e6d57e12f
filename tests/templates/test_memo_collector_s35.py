"""A collector made at the top level of an imported module keeps its items across
renderings, as a namespace does: a template adding to one is rendered again, never
reused (session 35; ``collector`` joined the memo's stateful names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converter.hl7v2.er7 import parse_message
from tests.templates.test_render import CATALOG, ROOT, make_session, write_templates

_MESSAGE = (
    b"MSH|^~\\&|APP|FAC|RCV|RFAC|20240316101544+0100||ORU^R01^ORU_R01|MSG1|P|2.5.1\r"
    b"PID|1||12345^^^HOSP&1.2.3&ISO^MR||DOE^JOHN\r"
    b"OBX|1|ST|A^a||x||||||F|||||D1^SMITH^ANN\r"
    b"OBX|2|ST|B^b||y||||||F|||||D1^SMITH^ANN\r"
)
_TEMPLATES = {
    ROOT: '{% for obx in msg.all("OBX") %}{% do emit("Obs", obx=obx) %}{% endfor %}',
    "hl7v2/resources/Obs.j2": (
        '{"resourceType": "Observation", "_identity": [{{ obx[3][1] }}],'
        ' "performer": [{{ emit("P", xcn=obx[16]) }}]}'
    ),
    # Counts the renderings of the doctor in a module-level collector: the second one
    # says 2, which a reused first rendering would not.
    "hl7v2/datatypes/tally.j2": "{% set seen = collector() %}",
    "hl7v2/resources/P.j2": (
        '{% import "hl7v2/datatypes/tally.j2" as tally %}{% do tally.seen.add(1) %}'
        '{"resourceType": "Practitioner", "_identity": [{{ xcn[1] }}],'
        ' "name": [{"family": {{ xcn[2] }}, "text": {{ tally.seen | length | string }}}]}'
    ),
}


def _convert(tmp_path: Path, *, memoize: bool) -> tuple[list[Any], list[str]]:
    builtin = write_templates(tmp_path, _TEMPLATES)
    session = make_session(builtin, message=parse_message(_MESSAGE, CATALOG))
    session.memoize = memoize
    session.render(ROOT, {})
    return [resource for _, resource in session.entries()], list(session.warnings)


def test_a_module_level_collector_is_state_the_memo_does_not_reuse(tmp_path: Path) -> None:
    on = _convert(tmp_path / "on", memoize=True)
    off = _convert(tmp_path / "off", memoize=False)
    assert on == off
    # Both renderings happened: the second said "2" (reused, it said "1" once).
    [practitioner] = [r for r in on[0] if r["resourceType"] == "Practitioner"]
    assert [name["text"] for name in practitioner["name"]] == ["1", "2"]
