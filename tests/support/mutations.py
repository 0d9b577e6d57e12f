"""Conversions of mutated samples (``scripts/fuzz_inputs.py``'s edits), for the tests that
check what converts is also what R4 and a FHIR server accept."""

from __future__ import annotations

import random
from collections.abc import Iterator

from converter import Conversion, ConversionError, Converter, ConverterConfig
from tests.support.scripts import load_script


def mutated_conversions(count: int, seed: int) -> Iterator[tuple[int, Conversion]]:
    """``(n, conversion)`` for each of ``count`` mutated samples that converts, in the
    default or the lenient mode at random; the ones that fail to convert are skipped."""
    fuzz = load_script("fuzz_inputs.py")
    samples = sorted(fuzz.SAMPLES.glob("*/*"))
    inputs = [path.read_bytes() for path in samples if path.suffix in (".hl7", ".xml")]
    converters = [Converter(ConverterConfig()), Converter(ConverterConfig(strict_values=False))]
    rng = random.Random(seed)
    for n in range(count):
        data = fuzz.mutate(rng, rng.choice(inputs))
        try:
            conversions = rng.choice(converters).convert(data)
        except ConversionError:
            continue
        for conversion in conversions:
            yield n, conversion
