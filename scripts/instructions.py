#!/usr/bin/env python3
"""Machine instructions per conversion, counted by Valgrind's callgrind.

    .venv/bin/python scripts/instructions.py [FILE] [--count 4] [--no-validate]

Converts FILE (an HL7 v2 message or a CDA document; default the ~175 KB CCD that
scripts/benchmark.py builds) COUNT times under ``valgrind --tool=callgrind`` and prints
the instructions executed per conversion, counted only while the measured conversions
run (the start, the loading of templates and a few warm-up conversions are not).

Times on a shared machine move by ±20 % from one run to the next; instruction counts
move by less than 0.1 %. Compare two versions of the engine with this, then confirm with
scripts/benchmark.py on an idle machine: instructions are not time (a cache miss costs
more than an addition), but a change that saves 5 % of them saves time. The service's
garbage-collector settings apply (:mod:`converter.heap`), as in ``benchmark.py
--service-gc``. Needs ``valgrind`` (Debian: ``apt install valgrind``); about 30 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmark import CDA_SAMPLE, bigger_ccd, document_variants, variants

from converter import Converter, ConverterConfig
from converter.heap import settle_long_lived

_WARM_UP = 3


def _label(path: Path | None) -> str:
    return "CCD ~175 KB (benchmark.py's)" if path is None else path.name


def _inputs(path: Path | None, count: int) -> tuple[list[bytes], bool]:
    """``count`` distinct inputs (and the warm-up's) and whether they are CDA documents."""
    data = bigger_ccd(CDA_SAMPLE.read_bytes()) if path is None else path.read_bytes()
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return document_variants(data, count + _WARM_UP), True
    return variants(data, count + _WARM_UP), False


def _measured(path: Path | None, count: int, validate: bool) -> None:
    """Run inside valgrind: warm up, then count only the measured conversions."""
    inputs, is_cda = _inputs(path, count)
    converter = Converter(ConverterConfig(validate=validate, default_timezone="Europe/Paris"))
    convert = converter.convert_document if is_cda else converter.convert_message
    for item in inputs[:_WARM_UP]:
        convert(item)
    settle_long_lived()
    control = ["callgrind_control", "--instr=on", str(os.getpid())]
    subprocess.run(control, check=True, capture_output=True)
    for item in inputs[_WARM_UP:]:
        convert(item)
    control[1] = "--instr=off"
    subprocess.run(control, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, help="default: the benchmark's CCD")
    parser.add_argument("--count", type=int, default=4, help="conversions counted")
    parser.add_argument("--no-validate", dest="validate", action="store_false")
    parser.add_argument("--measured", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measured:
        _measured(args.file, args.count, args.validate)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("instructions.py needs valgrind and callgrind_control (apt install valgrind)")
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={scratch}/callgrind.out",
            sys.executable,
            __file__,
            "--measured",
            f"--count={args.count}",
            *([] if args.validate else ["--no-validate"]),
            *([str(args.file)] if args.file else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    collected = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or collected is None:
        sys.exit(f"valgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
    per_conversion = int(collected.group(1)) / args.count
    mode = "validated" if args.validate else "no validation"
    print(f"{_label(args.file)}, {mode}: {per_conversion / 1e6:.1f} M instructions per conversion")


if __name__ == "__main__":
    main()
