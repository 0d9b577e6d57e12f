#!/usr/bin/env python3
"""Conversion time as inputs grow: what a large message or document costs.

    .venv/bin/python scripts/bench_sizes.py [--only NAME ...]

Prints the seconds one validated conversion takes (best of 2) for inputs of growing
size built from the samples, and the time per item: a time per item that grows with
the size is a quadratic step somewhere (a list copied at each addition, a check going
one character at a time). Cases:

* ``oru-obx``: ORU_R01 with 1,000 to 16,000 OBX (one report);
* ``oru-orders``: ORU_R01 with 250 to 2,000 orders of one patient, each with 7 OBX and
  its SPM (a cumulative report);
* ``oru-orders-obx33``: the same in v2.8.2, each OBX naming its order's specimen
  (OBX-33 related specimen: looked up among the patient's SPMs);
* ``mdm-lines``: MDM^T02 with 4,000 to 32,000 TX OBX lines (one note);
* ``mdm-pdf``: MDM^T02 carrying a PDF of 1 to 7 MB in OBX-5 ED (Base64);
* ``cda-pdf``: an unstructured CDA document embedding a PDF of 1 to 20 MB (nonXMLBody;
  from ~7.5 MB its text node is over libxml2's default limit);
* ``ccd-entries``: the benchmark's CCD grown to 0.7-5.6 MB of entries;
* ``procedures-entries``: the CCD's Procedures section alone, grown to 1,000-8,000 entries;
* ``organizer-results``: a result organizer of 2,000-16,000 result observations;
* ``organizer-warnings``: the same, each result negated (a warning naming its location);
* ``al1-same-allergen``: ADT^A01 with 2,000 to 16,000 AL1 naming one allergen, each with
  its own reaction: one AllergyIntolerance merged that many times.

It asserts nothing; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from benchmark import CDA_SAMPLE, bigger_ccd, one_organizer_ccd, one_section_ccd

from converter import Converter, ConverterConfig, InputType

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
_B64_TEXT = re.compile(rb'(<text[^>]*representation="B64"[^>]*>)(.*?)(</text>)', re.DOTALL)


def _segments(name: str) -> list[bytes]:
    data = (SAMPLES / "hl7v2" / name).read_bytes()
    return data.replace(b"\r\n", b"\r").rstrip(b"\r").split(b"\r")


def _pdf(size: int) -> bytes:
    block = hashlib.sha256(b"scan").digest() * 64
    return (b"%PDF-1.4\n" + block * (size // len(block) + 1))[:size]


def oru_obx(count: int) -> bytes:
    segments = _segments("ORU_R01_20-obx.hl7")
    obx = [s for s in segments if s.startswith(b"OBX|")]
    out = [s for s in segments if not s.startswith((b"OBX|", b"NTE|", b"SPM|"))]
    for n in range(count):
        fields = obx[n % len(obx)].split(b"|")
        fields[1] = b"%d" % (n + 1)
        fields[3] = b"X%d^Test %d^L" % (n, n)
        out.append(b"|".join(fields))
    return b"\r".join(out)


def oru_orders(count: int) -> bytes:
    """The lab ORU's first order (ORC to its SPM) ``count`` times, each with its own
    order numbers and specimen id."""
    return _orders(_segments("ORU_R01_lab-results.hl7"), count)


def oru_orders_obx33(count: int) -> bytes:
    """:func:`oru_orders` in v2.8.2, each OBX-33 naming the SPM-2 of its order's SPM
    (renamed with the order, as the SPM's own)."""
    segments = _segments("ORU_R01_lab-results.hl7")
    orcs = [n for n, s in enumerate(segments) if s.startswith(b"ORC|")]
    first = range(orcs[0], orcs[1])
    specimen = next(segments[n] for n in first if segments[n].startswith(b"SPM|")).split(b"|")[2]
    for n in [0, *first]:
        fields = segments[n].split(b"|")
        if fields[0] == b"MSH":
            fields[11] = b"2.8.2"
        elif fields[0] == b"OBX":
            fields += [b""] * (34 - len(fields))
            fields[33] = specimen
        segments[n] = b"|".join(fields)
    return _orders(segments, count)


def _orders(segments: list[bytes], count: int) -> bytes:
    """What precedes the first ORC, then its order (up to the next ORC) ``count`` times
    with the sample's order numbers renamed (its SPM-2 and any OBX-33 naming it too)."""
    orcs = [n for n, s in enumerate(segments) if s.startswith(b"ORC|")]
    head, order = segments[: orcs[0]], b"\r".join(segments[orcs[0] : orcs[1]])
    orders = [
        order.replace(b"CMD-2024-0314-01", b"CMD-%06d" % n).replace(
            b"LAB24031400123", b"LAB%06d" % n
        )
        for n in range(1, count + 1)
    ]
    return b"\r".join([*head, *orders])


def mdm_lines(count: int) -> bytes:
    segments = _segments("MDM_T02_discharge-summary.hl7")
    obx = [s for s in segments if s.startswith(b"OBX|")]
    out = [s for s in segments if not s.startswith(b"OBX|")]
    for n in range(count):
        fields = obx[n % len(obx)].split(b"|")
        fields[1] = b"%d" % (n + 1)
        out.append(b"|".join(fields))
    return b"\r".join(out)


def mdm_pdf(megabytes: int) -> bytes:
    segments = [s for s in _segments("MDM_T02_discharge-summary.hl7") if not s.startswith(b"OBX|")]
    data = base64.b64encode(_pdf(megabytes * 1_000_000))
    segments.append(b"OBX|1|ED|18842-5^Discharge summary^LN||^AP^PDF^Base64^" + data + b"||||||F")
    return b"\r".join(segments)


def cda_pdf(megabytes: int) -> bytes:
    document = (SAMPLES / "cda" / "Unstructured_nguyen-lea_pdf.xml").read_bytes()
    found = _B64_TEXT.search(document)
    assert found is not None
    encoded = base64.encodebytes(_pdf(megabytes * 1_000_000))
    return document[: found.start(2)] + b"\n" + encoded + document[found.end(2) :]


def al1_same_allergen(count: int) -> bytes:
    """The full A01 with its AL1 replaced by ``count`` AL1 naming its first allergen,
    each with its own reaction (AL1-5 ``Reaction n``)."""
    segments = _segments("ADT_A01_admission-full.hl7")
    first = next(s for s in segments if s.startswith(b"AL1|"))
    kept = [s for s in segments if not s.startswith(b"AL1|")]
    after = max(n for n, s in enumerate(kept) if s.startswith((b"PV1|", b"PV2|")))
    fields = first.split(b"|")
    allergies = []
    for n in range(1, count + 1):
        fields[1] = b"%d" % n
        fields[5] = b"Reaction %d" % n
        allergies.append(b"|".join(fields))
    return b"\r".join(kept[: after + 1] + allergies + kept[after + 1 :])


def ccd_entries(kilobytes: int) -> bytes:
    return bigger_ccd(CDA_SAMPLE.read_bytes(), kilobytes * 1000)


def procedures_entries(count: int) -> bytes:
    return one_section_ccd(CDA_SAMPLE.read_bytes(), "47519-4", count)


def organizer_results(count: int) -> bytes:
    return one_organizer_ccd(CDA_SAMPLE.read_bytes(), count)


def organizer_warnings(count: int) -> bytes:
    return organizer_results(count).replace(
        b'<observation classCode="OBS" moodCode="EVN">',
        b'<observation classCode="OBS" moodCode="EVN" negationInd="true">',
    )


CASES: dict[str, tuple[Callable[[int], bytes], Iterable[int], str, InputType]] = {
    "oru-obx": (oru_obx, (1_000, 4_000, 16_000), "OBX", "hl7v2"),
    "oru-orders": (oru_orders, (250, 500, 1_000, 2_000), "order", "hl7v2"),
    "oru-orders-obx33": (oru_orders_obx33, (250, 500, 1_000, 2_000), "order", "hl7v2"),
    "mdm-lines": (mdm_lines, (4_000, 16_000, 32_000), "line", "hl7v2"),
    "mdm-pdf": (mdm_pdf, (1, 3, 7), "MB", "hl7v2"),
    "cda-pdf": (cda_pdf, (1, 5, 10, 20), "MB", "cda"),
    "ccd-entries": (ccd_entries, (700, 1_400, 2_800, 5_600), "KB", "cda"),
    "procedures-entries": (procedures_entries, (1_000, 2_000, 4_000, 8_000), "entry", "cda"),
    "organizer-results": (organizer_results, (2_000, 4_000, 8_000, 16_000), "result", "cda"),
    "organizer-warnings": (organizer_warnings, (2_000, 4_000, 8_000, 16_000), "result", "cda"),
    "al1-same-allergen": (al1_same_allergen, (2_000, 4_000, 8_000, 16_000), "AL1", "hl7v2"),
}


def seconds(converter: Converter, data: bytes, input_type: InputType) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        converter.convert(data, input_type=input_type)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=sorted(CASES))
    args = parser.parse_args()
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    for name in args.only:
        build, sizes, unit, input_type = CASES[name]
        converter.convert(build(next(iter(sizes))), input_type=input_type)
        for size in sizes:
            data = build(size)
            taken = seconds(converter, data, input_type)
            print(
                f"{name:17} {size:>7,} {unit:5} {len(data) / 1e6:6.2f} MB  {taken:7.2f} s"
                f"  {taken / size * 1000:8.3f} ms per {unit}",
                flush=True,
            )


if __name__ == "__main__":
    main()
