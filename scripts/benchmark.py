#!/usr/bin/env python3
"""Conversion throughput on one core: messages/s per message type, with and without
FHIR validation, and peak memory.

    .venv/bin/python scripts/benchmark.py [--seconds 3] [--validator model|structural]

Each iteration converts a distinct message (MSH-10 and the patient identifier change),
so nothing is served from a cache. Run it on an otherwise idle machine; it prints figures,
it does not assert them.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc
from pathlib import Path

from converter import Converter, ConverterConfig

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "hl7v2"
CASES = {
    "ADT_A01": "ADT_A01_admission-full.hl7",
    "ORU_R01 (20 OBX)": "ORU_R01_20-obx.hl7",
    "VXU_V04": "VXU_V04_immunization.hl7",
}


def variants(data: bytes, count: int) -> list[bytes]:
    """``count`` copies with a distinct control id and patient identifier each."""
    lines = data.replace(b"\r\n", b"\r").split(b"\r")
    msh = lines[0].split(b"|")
    pid_index = next(i for i, line in enumerate(lines) if line.startswith(b"PID|"))
    pid = lines[pid_index].split(b"|")
    out = []
    for n in range(count):
        msh[9] = b"BENCH%08d" % n
        patient_id = pid[3].split(b"^", 1)
        pid[3] = b"^".join([b"%s%06d" % (patient_id[0][:8], n), *patient_id[1:]])
        lines[0] = b"|".join(msh)
        lines[pid_index] = b"|".join(pid)
        out.append(b"\r".join(lines))
    return out


def measure(converter: Converter, messages: list[bytes], seconds: float) -> tuple[float, int]:
    for message in messages[:20]:  # warm-up: templates compiled, catalogs loaded
        converter.convert_message(message)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        converter.convert_message(messages[done % len(messages)])
        done += 1
    return done / (time.perf_counter() - start), done


def allocation_per_message(converter: Converter, messages: list[bytes]) -> int:
    gc.collect()
    tracemalloc.start()
    for message in messages[:50]:
        converter.convert_message(message)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each case")
    args = parser.parse_args()

    converters = {
        "no validation": Converter(ConverterConfig(validate=False,
                                                   default_timezone="Europe/Paris")),
        "validated": Converter(ConverterConfig(default_timezone="Europe/Paris")),
    }
    print(f"{'message':18} {'mode':14} {'msg/s':>8} {'ms/msg':>8} {'entries':>8}")
    for label, name in CASES.items():
        messages = variants((SAMPLES / name).read_bytes(), 500)
        entries = len(converters["validated"].convert_message(messages[0]).bundle["entry"])
        for mode, converter in converters.items():
            rate, _ = measure(converter, messages, args.seconds)
            print(f"{label:18} {mode:14} {rate:8.0f} {1000 / rate:8.2f} {entries:8d}")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    adt = variants((SAMPLES / CASES["ADT_A01"]).read_bytes(), 60)
    traced = allocation_per_message(converters["validated"], adt) / 1024
    print(f"peak RSS of this process: {peak_rss_mb:.0f} MB; "
          f"peak traced allocation while converting 50 ADT_A01: {traced:.0f} KB")


if __name__ == "__main__":
    main()
