"""Benchmark bundle validation: ModelValidator (fhir.resources) vs StructuralValidator.

    python scripts/bench_validation.py [--repeat 7] [--wall]

Bundles are the sample conversions (``samples/hl7v2``, converted without validation); the
headline one is the 20-entry ADT^A01 of ``ADT_A01_admission-full.hl7``. Startup (building
the validator, then its first validation, which imports and compiles the resource
models it meets) is measured in fresh interpreters. Steady-state times are the best of
``--repeat`` runs, in CPU time of this process unless ``--wall`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from converter import Converter, ConverterConfig, json_dumps  # noqa: E402
from converter.errors import ConversionError  # noqa: E402
from converter.validation import ModelValidator, StructuralValidator  # noqa: E402

HEADLINE = "ADT_A01_admission-full"
Validate = Callable[[dict[str, Any], list[str]], None]
VALIDATORS: dict[str, type[ModelValidator] | type[StructuralValidator]] = {
    "ModelValidator": ModelValidator,
    "StructuralValidator": StructuralValidator,
}

_STARTUP = """
import json, sys, time
sys.path.insert(0, {repo!r})
bundle = json.loads(sys.stdin.read())
from converter.validation import {name} as V
t0 = time.perf_counter()
validator = V()
t1 = time.perf_counter()
try:
    validator.validate(bundle, [])
except Exception:
    pass
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1]))
"""


def sample_bundles() -> dict[str, list[dict[str, Any]]]:
    converter = Converter(ConverterConfig(validate=False))
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((REPO / "samples" / "hl7v2").glob("*.hl7")):
        try:
            found[path.stem] = [c.bundle for c in converter.convert(path.read_bytes())]
        except ConversionError:
            continue
    return found


def best(run: Callable[[], object], count: int, repeat: int, clock: Callable[[], float]) -> float:
    """Best time of one call, in seconds."""
    times = []
    for _ in range(repeat):
        start = clock()
        for _ in range(count):
            run()
        times.append((clock() - start) / count)
    return min(times)


def startup(name: str, bundle: dict[str, Any]) -> tuple[float, float]:
    """(construction, first validation) in seconds, in a fresh interpreter.

    The package (and so fhir.resources' base modules) is imported before timing.
    """
    result = subprocess.run(
        [sys.executable, "-c", _STARTUP.format(repo=str(REPO), name=name)],
        input=json_dumps(bundle),
        capture_output=True,
        text=True,
        check=True,
    )
    build, first = json.loads(result.stdout)
    return build, first


def quietly(validate: Validate, bundle: dict[str, Any]) -> None:
    with contextlib.suppress(ConversionError):
        validate(bundle, [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    args = parser.parse_args()
    clock = time.perf_counter if args.wall else time.process_time
    samples = sample_bundles()
    headline = samples[HEADLINE][0]
    every = [b for bundles in samples.values() for b in bundles]
    entries = sum(len(b.get("entry", [])) for b in every)
    print(f"{len(every)} sample bundles, {entries} entries; headline {HEADLINE}: "
          f"{len(headline['entry'])} entries; {'wall' if args.wall else 'CPU'} time")  # fmt: skip
    results: dict[str, float] = {}
    for name, cls in VALIDATORS.items():
        build, first = startup(name, headline)
        validate: Validate = cls().validate
        for bundle in every:  # warm up: lazy imports and tables
            quietly(validate, bundle)
        count = 200 if name == "StructuralValidator" else 20

        def one_bundle(validate: Validate = validate) -> None:
            quietly(validate, headline)

        def all_bundles(validate: Validate = validate) -> None:
            for bundle in every:
                quietly(validate, bundle)

        one = best(one_bundle, count, args.repeat, clock)
        batch = best(all_bundles, max(1, count // len(every)), args.repeat, clock)
        results[name] = one
        print(f"\n{name}")
        print(f"  startup: construct {build * 1e3:.0f} ms, first validation {first * 1e3:.0f} ms")
        print(f"  {HEADLINE}: {one * 1e3:.3f} ms/bundle, {1 / one:,.0f} bundles/s, "
              f"{one / len(headline['entry']) * 1e6:.1f} µs/entry")  # fmt: skip
        per_entry = batch / entries * 1e6
        print(f"  all samples: {batch / len(every) * 1e3:.3f} ms/bundle, "
              f"{len(every) / batch:,.0f} bundles/s, {per_entry:.1f} µs/entry")  # fmt: skip
    speedup = results["ModelValidator"] / results["StructuralValidator"]
    print(f"\nspeed-up on {HEADLINE}: {speedup:.1f}x")


if __name__ == "__main__":
    main()
