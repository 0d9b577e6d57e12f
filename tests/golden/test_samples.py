"""Golden tests: every sample in samples/hl7v2 converts to its expected bundle(s).

The expected bundles live in samples/hl7v2/expected (``<stem>.json``, ``<stem>.<n>.json``
for files holding several messages). After an intended mapping change, regenerate them
with ``scripts/update_golden.sh`` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig, json_loads
from converter.cli import output_name
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
EXPECTED = SAMPLES / "expected"
#: The configuration the expected bundles were produced with (see update_golden.sh).
GOLDEN_CONFIG = ConverterConfig(default_timezone="Europe/Paris")


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(GOLDEN_CONFIG)


def _samples() -> list[Path]:
    return sorted(SAMPLES.glob("*.hl7"))


def _bundles(converter: Converter, sample: Path) -> dict[str, dict[str, Any]]:
    data = sample.read_bytes()
    messages = converter.split(data)
    out = {}
    for raw in messages:
        conversion = converter.convert_message(raw.data, index=raw.index)
        out[output_name(sample, raw.index, several=len(messages) > 1)] = conversion.bundle
    return out


def test_every_sample_has_expected_output() -> None:
    assert _samples(), "no samples found"
    expected_names = {p.name for p in EXPECTED.glob("*.json")}
    stems = {p.stem for p in _samples()}
    orphans = {n for n in expected_names if n.split(".")[0] not in stems}
    assert not orphans, f"expected outputs without a sample: {sorted(orphans)}"


@pytest.mark.parametrize("sample", _samples(), ids=lambda p: p.name)
def test_sample_matches_expected(converter: Converter, sample: Path) -> None:
    bundles = _bundles(converter, sample)
    assert bundles, f"{sample.name} holds no message"
    for name, bundle in bundles.items():
        expected_file = EXPECTED / name
        assert expected_file.is_file(), (
            f"{expected_file} is missing: run scripts/update_golden.sh and review it"
        )
        expected = json_loads(expected_file.read_text(encoding="utf-8"))
        assert bundle == expected, f"{sample.name} → {name} differs from the golden output"


@pytest.mark.parametrize("sample", _samples(), ids=lambda p: p.name)
def test_sample_is_valid_r4(converter: Converter, sample: Path, r4validator: R4Validator) -> None:
    for name, bundle in _bundles(converter, sample).items():
        issues = r4validator.validate(bundle)
        assert issues == [], f"{name}: {json.dumps(issues, indent=1, ensure_ascii=False)}"
