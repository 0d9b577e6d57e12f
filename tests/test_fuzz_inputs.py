"""``scripts/fuzz_inputs.py`` with a fixed seed: mutated senders' input never escapes as
anything but a ConversionError (the full run is the script's default count)."""

from __future__ import annotations

from tests.support.scripts import run_script


def test_mutated_inputs_fail_only_with_conversion_errors() -> None:
    run = run_script("fuzz_inputs.py", "--count", "300")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for target in ("convert", "listener", "amqp"):
        assert f"{target}: 300 mutated inputs, 0 bare exceptions" in run.stdout
