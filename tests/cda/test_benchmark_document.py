"""The CCD that ``scripts/benchmark.py`` measures is a real workload: 150-200 KB, converts
in strict mode without warnings, validates, and its variants differ only in their ids."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

import pytest

from converter import Converter, ConverterConfig
from tests.cda._support import REPO
from tests.support.r4validator import R4Validator


@pytest.fixture(scope="module")
def benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_ccd_converts_and_validates(
    benchmark: ModuleType, r4validator: R4Validator
) -> None:
    data = benchmark.bigger_ccd(benchmark.CDA_SAMPLE.read_bytes())
    assert 150_000 <= len(data) <= 200_000
    original = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    [conversion] = original.convert(data, input_type="cda")
    assert conversion.warnings == ()
    bundle = conversion.bundle
    assert len(bundle["entry"]) > 100
    assert r4validator.validate(bundle) == [], json.dumps(r4validator.validate(bundle)[:3])
    first, second = benchmark.document_variants(data, 2)
    assert len(first) == len(second) == len(data) and first != second
    ids = [original.convert(doc, input_type="cda")[0].control_id for doc in (first, second)]
    assert ids[0] != ids[1]


def test_the_grown_section_and_organizer_convert_whole(benchmark: ModuleType) -> None:
    """``bench_sizes``' procedures-entries and organizer-results inputs (session 35): each
    replicated entry is one more resource, listed once, in document order, where the
    section and report collect them (a collector() since session 35)."""
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    sample = benchmark.CDA_SAMPLE.read_bytes()
    [grown] = converter.convert(benchmark.one_section_ccd(sample, "47519-4", 60), input_type="cda")
    assert grown.warnings == ()
    resources = [e["resource"] for e in grown.bundle["entry"]]
    procedures = [r for r in resources if r["resourceType"] == "Procedure"]
    assert len(procedures) == 60
    [composition] = [r for r in resources if r["resourceType"] == "Composition"]
    [section] = composition["section"]
    listed = [entry["reference"] for entry in section["entry"]]
    assert len(listed) == len(set(listed)) == 60
    assert listed == [f"Procedure/{p['id']}" for p in procedures]

    [organized] = converter.convert(benchmark.one_organizer_ccd(sample, 40), input_type="cda")
    assert organized.warnings == ()
    resources = [e["resource"] for e in organized.bundle["entry"]]
    [report] = [
        r
        for r in resources
        if r["resourceType"] == "DiagnosticReport" and len(r.get("result", [])) > 1
    ]
    results = [ref["reference"] for ref in report["result"]]
    assert len(results) == len(set(results)) == 40
    by_reference = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    values = [by_reference[ref]["valueQuantity"]["value"] for ref in results]
    assert [str(v) for v in values] == ["5.6"] * 40  # the first result, replicated with new ids
