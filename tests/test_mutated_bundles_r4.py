"""What Passerelle accepts, R4 accepts: mutated samples that convert (and so passed
Passerelle's own validation) must also pass the independent R4 validator. A bundle that
does not would be acknowledged, then refused by the FHIR server and dead-lettered late,
as once happened for control characters, empty extensions and blanks in uris and codes."""

from __future__ import annotations

import random
from typing import Any

from converter import ConversionError, Converter, ConverterConfig
from tests.support.r4validator import R4Validator
from tests.support.scripts import load_script

MUTATIONS = 600


def test_every_bundle_that_converts_is_valid_r4(r4validator: R4Validator) -> None:
    fuzz = load_script("fuzz_inputs.py")
    inputs = [
        p.read_bytes() for p in sorted(fuzz.SAMPLES.glob("*/*")) if p.suffix in (".hl7", ".xml")
    ]
    converters = [Converter(ConverterConfig()), Converter(ConverterConfig(strict_values=False))]
    rng = random.Random(20261129)
    accepted = 0
    problems: list[tuple[str, str]] = []
    for _ in range(MUTATIONS):
        data = fuzz.mutate(rng, rng.choice(inputs))
        try:
            results = rng.choice(converters).convert(data)
        except ConversionError:
            continue
        for result in results:
            accepted += 1
            problems += [
                (issue["path"], issue["message"][:100])
                for issue in r4validator.validate_all(result.bundle)
                if _is_error(issue)
            ]
    assert accepted > MUTATIONS // 5, f"only {accepted} mutated inputs converted"
    assert not problems, problems[:10]


def _is_error(issue: dict[str, Any]) -> bool:
    return issue["severity"] in ("error", "fatal")
