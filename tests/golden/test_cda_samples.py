"""Golden tests: every CDA sample in samples/cda converts to its expected bundle.

The expected bundles live in samples/cda/expected (``<stem>.json``). After an intended
mapping change, regenerate them with the configuration below and review the diff::

    .venv/bin/passerelle convert samples/cda/*.xml --out samples/cda/expected --pretty \\
        --timezone Europe/Paris

(or ``.venv/bin/python -m tests.golden.test_cda_samples --update``, which does the same).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig, json_dumps, json_loads
from tests.cda.fhir_xhtml import xhtml_problems
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "cda"
EXPECTED = SAMPLES / "expected"
#: The configuration the expected bundles were produced with (the CLI's, with this zone).
GOLDEN_CONFIG = ConverterConfig(default_timezone="Europe/Paris")

#: The warnings each sample is expected to produce (none: every section with entries is
#: mapped). A sample missing here must convert without warnings.
EXPECTED_WARNINGS: dict[str, tuple[str, ...]] = {}


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(GOLDEN_CONFIG)


def _samples() -> list[Path]:
    return sorted(SAMPLES.glob("*.xml"))


def _convert(converter: Converter, sample: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    [conversion] = converter.convert(sample.read_bytes(), input_type="cda")
    return conversion.bundle, conversion.warnings


def test_every_sample_has_expected_output() -> None:
    assert len(_samples()) >= 3, "no CDA samples found"
    stems = {p.stem for p in _samples()}
    expected = {p.stem for p in EXPECTED.glob("*.json")}
    assert expected == stems, (
        f"missing: {sorted(stems - expected)}, orphans: {sorted(expected - stems)}"
    )


@pytest.mark.parametrize("sample", _samples(), ids=lambda p: p.name)
def test_sample_matches_expected(converter: Converter, sample: Path) -> None:
    bundle, warnings = _convert(converter, sample)
    expected_file = EXPECTED / f"{sample.stem}.json"
    assert expected_file.is_file(), f"{expected_file} is missing: regenerate (module docstring)"
    expected = json_loads(expected_file.read_text(encoding="utf-8"))
    assert bundle == expected, f"{sample.name} differs from the golden output"
    assert warnings == EXPECTED_WARNINGS.get(sample.name, ())


@pytest.mark.parametrize("sample", _samples(), ids=lambda p: p.name)
def test_sample_converts_the_same_twice(converter: Converter, sample: Path) -> None:
    """Ids are stable: a second converter gives the same bundle (no state between runs)."""
    again = Converter(GOLDEN_CONFIG)
    assert _convert(again, sample)[0] == _convert(converter, sample)[0]


@pytest.mark.parametrize("sample", _samples(), ids=lambda p: p.name)
def test_sample_is_valid_r4(converter: Converter, sample: Path, r4validator: R4Validator) -> None:
    bundle, _ = _convert(converter, sample)
    issues = r4validator.validate(bundle)
    assert issues == [], json.dumps(issues, indent=1, ensure_ascii=False)


@pytest.mark.parametrize("sample", _samples(), ids=lambda p: p.name)
def test_sample_narratives_are_fhir_xhtml(converter: Converter, sample: Path) -> None:
    """txt-1 / txt-2, which the R4 validator leaves out, for every Narrative.div."""
    bundle, _ = _convert(converter, sample)
    divs = list(_divs(bundle))
    sections = [
        s for e in bundle["entry"] if e["resource"]["resourceType"] == "Composition"
        for s in e["resource"].get("section", [])
    ]  # fmt: skip
    # Each section of a structured body carries its narrative (an unstructured one has none).
    assert len(divs) >= len(sections), f"{sample.name}: sections without a Narrative.div"
    for path, div in divs:
        assert xhtml_problems(div) == [], path


def _divs(value: Any, path: str = "Bundle") -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "div" and isinstance(item, str):
                yield path, item
            else:
                yield from _divs(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _divs(item, f"{path}[{n}]")


def update() -> None:
    """Rewrite samples/cda/expected from the current mappings (then review the diff)."""
    converter = Converter(GOLDEN_CONFIG)
    EXPECTED.mkdir(exist_ok=True)
    for stale in EXPECTED.glob("*.json"):
        stale.unlink()
    for sample in _samples():
        bundle, warnings = _convert(converter, sample)
        text = json_dumps(bundle, pretty=True)
        (EXPECTED / f"{sample.stem}.json").write_text(text + "\n", encoding="utf-8")
        for warning in warnings:
            print(f"WARNING {sample.name}: {warning}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.golden.test_cda_samples --update")
    update()
