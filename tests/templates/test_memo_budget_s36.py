"""A memo key compares at most MAX_KEY_ITEMS list, tuple and dict items (session 36):
an input holding more renders again. Building the key walked every item on every emit,
and an ORU_R01 of thousands of orders passes each OBX's Observation all the SPMs of its
patient (OBX-33 may name any): the walks made the conversion quadratic."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.hl7v2.er7 import parse_message
from converter.templates.memo import MAX_KEY_ITEMS, Memo
from converter.templates.render import Ref
from tests.mappings.test_specimen_scope_s26 import _oru, _patient
from tests.support.compiled import pure_python_only
from tests.support.hl7_edit import by_reference, convert_one, resources
from tests.support.scripts import load_script
from tests.templates.test_render import CATALOG, ROOT, make_session, write_templates
from tests.templates.test_render_memo import record_renderings


def _key(**variables: Any) -> object:
    return Memo(Ref).key("hl7v2/resources/P.j2", variables, None, True)


def test_inputs_within_the_budget_are_compared_by_value() -> None:
    items = list(range(MAX_KEY_ITEMS))
    assert _key(items=items) is not None
    assert _key(items=items) == _key(items=list(items))
    assert _key(items=items) != _key(items=[*items[:-1], -1])
    # Nested items count, and so do a dict's.
    half = MAX_KEY_ITEMS // 2 - 1
    assert _key(a=[list(range(half))], b={n: n for n in range(half)}) is not None


@pytest.mark.parametrize(
    "variables",
    [
        {"items": list(range(MAX_KEY_ITEMS + 1))},
        {"items": tuple(range(MAX_KEY_ITEMS + 1))},
        {"items": {n: str(n) for n in range(MAX_KEY_ITEMS + 1)}},
        # Each list within the budget, not their items together.
        {"a": list(range(MAX_KEY_ITEMS // 2)), "b": [list(range(MAX_KEY_ITEMS // 2))]},
    ],
    ids=["list", "tuple", "dict", "several"],
)
def test_inputs_over_the_budget_are_not_compared(variables: dict[str, Any]) -> None:
    assert _key(**variables) is None


def _render(tmp_path: Path, count: int, *, memoize: bool) -> tuple[Any, list[str]]:
    """Two OBX emit the same Practitioner with a list of ``count`` numbers: the entries,
    and the templates rendered."""
    builtin = write_templates(
        tmp_path,
        {
            ROOT: (
                "{% set numbers = range(" + str(count) + ") | list %}"
                '{% for obx in msg.all("OBX") %}{% do emit("P", xcn=obx[16], numbers=numbers)'
                " %}{% endfor %}"
            ),
            "hl7v2/resources/P.j2": (
                '{"resourceType": "Practitioner", "_identity": [{{ xcn[1] }}],'
                ' "name": [{"family": {{ xcn[2] }},'
                ' "text": {{ numbers | length | string }}}]}'
            ),
        },
    )
    data = (
        b"MSH|^~\\&|APP|FAC|RCV|RFAC|20240316101544+0100||ORU^R01^ORU_R01|MSG1|P|2.5.1\r"
        b"PID|1||12345^^^HOSP&1.2.3&ISO^MR||DOE^JOHN\r"
        b"OBX|1|ST|A^a||x||||||F|||||D1^SMITH^ANN\r"
        b"OBX|2|ST|B^b||y||||||F|||||D1^SMITH^ANN\r"
    )
    session = make_session(builtin, message=parse_message(data, CATALOG))
    session.memoize = memoize
    rendered = record_renderings(session)
    session.render(ROOT, {})
    return list(session.entries()), rendered


@pure_python_only
@pytest.mark.parametrize(("count", "renderings"), [(MAX_KEY_ITEMS, 1), (MAX_KEY_ITEMS + 1, 2)])
def test_a_long_input_renders_again_with_the_same_result(
    tmp_path: Path, count: int, renderings: int
) -> None:
    entries, rendered = _render(tmp_path / "on", count, memoize=True)
    assert _render(tmp_path / "off", count, memoize=False)[0] == entries
    assert rendered == ["P"] * renderings
    [(_, practitioner)] = entries
    assert practitioner["name"] == [{"family": "SMITH", "text": str(count)}]


def test_a_report_of_more_orders_than_the_budget_names_each_related_specimen() -> None:
    # Order k's result names order k-1's specimen (OBX-33): found among the patient's
    # SPMs, a list longer than the budget that the memo no longer compares.
    count = MAX_KEY_ITEMS + 20
    orders = [(f"{k}&SIH", f"{max(k - 1, 1)}&SIH") for k in range(1, count + 1)]
    data = _oru(_patient(1, orders))
    config = ConverterConfig(default_timezone="Europe/Paris")
    reusing = Converter(config)
    bundle, warnings = convert_one(reusing, data)
    rendering = Converter(dataclasses.replace(config, reuse_renderings=False))
    assert convert_one(rendering, data) == (bundle, warnings)
    results = resources(bundle, "Observation")
    assert len(results) == count
    named = [
        by_reference(bundle, r["specimen"]["reference"])["identifier"][0]["value"] for r in results
    ]
    assert named == ["1"] + [str(k - 1) for k in range(2, count + 1)]


@pytest.mark.parametrize("build", ["oru_orders", "oru_orders_obx33"])
def test_the_benchmarks_cumulative_report_gives_each_order_its_resources(build: str) -> None:
    # scripts/bench_sizes.py --only oru-orders (and oru-orders-obx33, each OBX naming its
    # order's specimen by OBX-33) measures this input at 250 to 2,000 orders.
    count = MAX_KEY_ITEMS + 4
    data = getattr(load_script("bench_sizes.py"), build)(count)
    bundle, warnings = convert_one(
        Converter(ConverterConfig(default_timezone="Europe/Paris")), data
    )
    assert warnings == []
    for kind, each in [
        ("ServiceRequest", 1),
        ("DiagnosticReport", 1),
        ("Specimen", 1),
        ("Observation", 7),
    ]:
        assert len(resources(bundle, kind)) == count * each, kind
    # Each order's 7 results are on its own specimen (named by OBX-33, or the order's only
    # one).
    for report in resources(bundle, "DiagnosticReport"):
        [specimen] = report["specimen"]
        for result in report["result"]:
            assert by_reference(bundle, result["reference"])["specimen"] == specimen
