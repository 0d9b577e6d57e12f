#!/usr/bin/env python3
"""Conversion throughput on one core: messages/s per message type, with and without
FHIR validation, and peak memory; then documents/s for a C-CDA CCD of ~175 KB.

    .venv/bin/python scripts/benchmark.py [--seconds 3] [--calls]

Each iteration converts a distinct message (MSH-10 and the patient identifier change),
so nothing is served from a cache. Run it on an otherwise idle machine; it prints figures,
it does not assert them. ``--calls`` prints instead the function calls per message that
cProfile counts (Python functions and builtins, validated): deterministic, unlike times
on a busy machine, for comparing two versions of the engine. ``--service-gc`` applies,
once the converters are warm, the garbage-collector settings of the service's conversion
processes (:mod:`converter.heap`); the ``gc %`` column is the share of the time spent in
the collector, which a busy machine disturbs less than the rates.

The CDA case is built from samples/cda/CCD_lefevre-camille.xml (69 KB): every section's
entries, and the narrative rows and list items they refer to, are replicated with fresh
entry ids until the document reaches ~175 KB (a CCD of 150-200 KB); each iteration then
converts a copy with its own document id and patient identifier.
"""

from __future__ import annotations

import argparse
import copy
import gc
import re
import resource
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lxml import etree

from converter import Conversion, Converter, ConverterConfig
from converter.heap import settle_long_lived
from converter.validation.structural import StructuralValidator

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "hl7v2"
CDA_SAMPLE = SAMPLES.parent / "cda" / "CCD_lefevre-camille.xml"
CDA_TARGET_BYTES = 175_000
T = TypeVar("T")
CASES = {
    # A typical admission (MSH EVN PID PV1) and a full one (+ NK1 AL1 DG1 PV2 OBX IN1 …).
    "ADT_A01 typical": "ADT_A01_crlf.hl7",
    "ADT_A01 full": "ADT_A01_admission-full.hl7",
    "ORU_R01 (20 OBX)": "ORU_R01_20-obx.hl7",
    "VXU_V04": "VXU_V04_immunization.hl7",
}


def variants(data: bytes, count: int) -> list[bytes]:
    """``count`` copies with a distinct control id and patient identifier each."""
    lines = data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\r").rstrip(b"\r").split(b"\r")
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


class CollectorClock:
    """Time spent in the garbage collector while it is open (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def _tick(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> CollectorClock:
        gc.callbacks.append(self._tick)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._tick)


def measure_inputs(
    convert: Callable[[bytes], object], inputs: list[bytes], seconds: float, warm_up: int
) -> tuple[float, int, float]:
    """Inputs/s, inputs converted, share of the time in the garbage collector, after
    ``warm_up`` conversions (templates compiled, catalogs loaded)."""
    for item in inputs[:warm_up]:
        convert(item)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    with CollectorClock() as collector:
        while time.perf_counter() < deadline:
            convert(inputs[done % len(inputs)])
            done += 1
    elapsed = time.perf_counter() - start
    return done / elapsed, done, collector.seconds / elapsed


def measure(
    converter: Converter, messages: list[bytes], seconds: float
) -> tuple[float, int, float]:
    """:func:`measure_inputs` for HL7 v2 messages."""
    return measure_inputs(converter.convert_message, messages, seconds, warm_up=20)


def allocation_per_message(converter: Converter, messages: list[bytes]) -> int:
    gc.collect()
    tracemalloc.start()
    for message in messages[:50]:
        converter.convert_message(message)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


# -- CDA ---------------------------------------------------------------------------------------
_H = "{urn:hl7-org:v3}"
#: Clinical statements whose own ids are rewritten in a copied entry (participants keep
#: theirs: the same people and organisations recur across a real document).
_STATEMENTS = {
    f"{_H}{name}"
    for name in (
        "act",
        "observation",
        "organizer",
        "substanceAdministration",
        "encounter",
        "procedure",
        "supply",
    )
}


def _suffix_copy(element: etree._Element, n: int) -> etree._Element:
    """A copy of an entry, narrative row or list item with distinct ids and IDs."""
    clone = copy.deepcopy(element)
    for node in clone.iter():
        if not isinstance(node.tag, str):
            continue
        if node.get("ID"):
            node.set("ID", f"{node.get('ID')}-c{n}")
        value = node.get("value", "")
        if node.tag == f"{_H}reference" and value.startswith("#"):
            node.set("value", f"{value}-c{n}")
        parent = node.getparent()
        if node.tag == f"{_H}id" and parent is not None and parent.tag in _STATEMENTS:
            root = node.get("root", "")
            node.set("root", str(uuid.uuid5(uuid.NAMESPACE_OID, f"{root}/{n}")))
    return clone


def _narrative_targets(section: etree._Element) -> list[etree._Element]:
    """The outermost narrative elements carrying an ID (rows, items, paragraphs)."""
    found = []
    for element in section.iterfind(f"{_H}text//*[@ID]"):
        ancestor = element.getparent()
        while ancestor is not None and ancestor.get("ID") is None:
            ancestor = ancestor.getparent()
        if ancestor is None:
            found.append(element)
    return found


def bigger_ccd(data: bytes, target: int = CDA_TARGET_BYTES) -> bytes:
    """The sample CCD with its entries (and the narrative they refer to) replicated, one
    section at a time, until it reaches ``target`` bytes."""
    tree = etree.fromstring(data, etree.XMLParser(remove_comments=True)).getroottree()
    sections = tree.findall(f".//{_H}structuredBody/{_H}component/{_H}section")
    originals = [
        (section, section.findall(f"{_H}entry"), _narrative_targets(section))
        for section in sections
        if section.find(f"{_H}entry") is not None
    ]

    def size() -> int:
        return len(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))

    n = 0
    while size() < target:
        n += 1
        for section, entries, narrative in originals:
            _replicate(section, entries, narrative, n)
            if size() >= target:
                break
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def _replicate(
    section: etree._Element, entries: list[etree._Element], narrative: list[etree._Element], n: int
) -> None:
    """Copy ``n`` of a section's original entries, and of the narrative they refer to."""
    for element in narrative:
        element.addnext(_suffix_copy(element, n))
    for entry in entries:
        section.append(_suffix_copy(entry, n))


def one_section_ccd(data: bytes, code: str, entries: int) -> bytes:
    """The sample CCD with only its section of LOINC ``code``, whose entries (and the
    narrative they refer to) are replicated until it holds ``entries`` or more."""
    tree = etree.fromstring(data, etree.XMLParser(remove_comments=True)).getroottree()
    kept = None
    for component in tree.findall(f".//{_H}structuredBody/{_H}component"):
        section = component.find(f"{_H}section")
        code_element = section.find(f"{_H}code") if section is not None else None
        if kept is None and code_element is not None and code_element.get("code") == code:
            kept = section
        else:
            component.getparent().remove(component)
    if kept is None or kept.find(f"{_H}entry") is None:
        raise ValueError(f"the sample has no section {code} with entries")
    originals, narrative = kept.findall(f"{_H}entry"), _narrative_targets(kept)
    n = 0
    while len(kept.findall(f"{_H}entry")) < entries:
        n += 1
        _replicate(kept, originals, narrative, n)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def one_organizer_ccd(data: bytes, results: int) -> bytes:
    """The sample CCD with its first result organizer holding ``results`` result
    observations (its first one replicated) and nothing else in its Results section."""
    tree = etree.fromstring(data, etree.XMLParser(remove_comments=True)).getroottree()
    organizer = next(
        element for element in tree.iter(f"{_H}organizer") if element.get("classCode") == "BATTERY"
    )
    components = organizer.findall(f"{_H}component")
    first = components[0]
    for component in components[1:]:
        organizer.remove(component)
    for n in range(1, results):
        first.addnext(_suffix_copy(first, n))
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


def document_variants(data: bytes, count: int) -> list[bytes]:
    """``count`` copies with a distinct document id and patient identifier each."""
    doc_id = re.compile(rb'(?<=<id root="1\.2\.250\.1\.999\.3\.1" extension=")CCD-2024-\d{6}')
    patient = re.compile(rb'(?<=<id root="1\.2\.250\.1\.999\.1\.1" extension=")IPP\d{7}')
    return [
        patient.sub(b"IPP%07d" % n, doc_id.sub(b"CCD-2024-%06d" % n, data, count=1))
        for n in range(count)
    ]


def measure_documents(
    converter: Converter, documents: list[bytes], seconds: float
) -> tuple[float, int, float]:
    """:func:`measure_inputs` for CDA documents."""
    return measure_inputs(converter.convert_document, documents, seconds, warm_up=3)


def best_ms(action: Callable[[T], object], inputs: list[T], rounds: int = 7) -> float:
    """Best mean time per input over ``rounds`` passes (the least disturbed pass)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in inputs:
            action(item)
        best = min(best, (time.perf_counter() - start) / len(inputs))
    return best * 1000


def breakdown(converter: Converter) -> None:
    """Where one message's time goes: parsing, templates and assembly (conversion
    without validation, parsing deducted), validation of the bundle, its JSON text."""
    validator = StructuralValidator()
    print("where the time goes (ms per message, best of 7 passes):")
    print(f"{'message':18} {'parse':>8} {'templates':>10} {'validate':>9} {'JSON':>8}")
    for label, name in CASES.items():
        messages = variants((SAMPLES / name).read_bytes(), 60)[10:]
        parse = best_ms(converter.parse, messages)
        convert = best_ms(converter.convert_message, messages)
        conversions = [converter.convert_message(m) for m in messages]
        validate = best_ms(validator.issues, [c.bundle for c in conversions])
        text = best_ms(Conversion.to_json, conversions)
        print(f"{label:18} {parse:8.3f} {convert - parse:10.3f} {validate:9.3f} {text:8.3f}")
    print("(msg/s above counts parse + templates + validate; the service adds the JSON)")


def cda_benchmark(converters: dict[str, Converter], seconds: float) -> None:
    data = bigger_ccd(CDA_SAMPLE.read_bytes())
    documents = document_variants(data, 50)
    assert len({d[:2000] for d in documents}) == len(documents)
    entries = len(converters["validated"].convert_document(documents[0]).bundle["entry"])
    label = f"CCD {len(data) / 1000:.0f} KB"
    print(
        f"CDA: {CDA_SAMPLE.name} grown to {len(data)} bytes "
        f"({data.count(b'<entry')} entries); documents/s"
    )
    for mode, converter in converters.items():
        rate, _, in_gc = measure_documents(converter, documents, seconds)
        print(f"{label:18} {mode:14} {rate:8.1f} {1000 / rate:8.2f} {entries:8d} {in_gc:6.1%}")


def call_counts(converter: Converter) -> None:
    """Calls per conversion (cProfile: Python functions and builtins), once warm."""
    import cProfile
    import pstats

    cases: list[tuple[str, Callable[[bytes], Conversion], list[bytes]]] = [
        (label, converter.convert_message, variants((SAMPLES / name).read_bytes(), 30))
        for label, name in CASES.items()
    ]
    ccd = document_variants(bigger_ccd(CDA_SAMPLE.read_bytes()), 8)
    cases.append((f"CCD {len(ccd[0]) / 1000:.0f} KB", converter.convert_document, ccd))
    print(f"{'input':18} {'calls':>9} {'Python':>9}  (per conversion, validated)")
    for label, convert, inputs in cases:
        warm, measured = inputs[: len(inputs) // 3], inputs[len(inputs) // 3 :]
        for item in warm:
            convert(item)
        profile = cProfile.Profile()
        profile.enable()
        for item in measured:
            convert(item)
        profile.disable()
        stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        total = sum(row[1] for row in stats.values())
        python = sum(row[1] for (path, _, _), row in stats.items() if path != "~")
        count = len(measured)
        print(f"{label:18} {total / count:9.0f} {python / count:9.0f}")


def build_description() -> str:
    """Which build runs: the pure-Python package or the compiled one (mypyc, as the
    container's; ``make bench`` runs both, the latter in scripts/build_compiled.py's copy)."""
    compiled = sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("converter")
        and (getattr(module, "__file__", None) or "").endswith(".so")
    )
    if not compiled:
        return "build: pure Python (the container's build compiles its hot modules: make bench)"
    return f"build: compiled with mypyc ({len(compiled)} modules, as in the container)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each case")
    parser.add_argument("--calls", action="store_true", help="count calls instead of timing")
    parser.add_argument(
        "--service-gc",
        action="store_true",
        help="the garbage-collector settings of the service's conversion processes",
    )
    args = parser.parse_args()
    print(build_description())
    if args.calls:
        call_counts(Converter(ConverterConfig(default_timezone="Europe/Paris")))
        return

    converters = {
        "no validation": Converter(
            ConverterConfig(validate=False, default_timezone="Europe/Paris")
        ),
        "validated": Converter(ConverterConfig(default_timezone="Europe/Paris")),
    }
    cases = {label: variants((SAMPLES / name).read_bytes(), 500) for label, name in CASES.items()}
    if args.service_gc:
        ccd = bigger_ccd(CDA_SAMPLE.read_bytes())
        for converter in converters.values():  # loaded as a conversion process's are
            for messages in cases.values():
                converter.convert_message(messages[0])
            converter.convert_document(ccd)
        settle_long_lived()
    print(f"{'message':18} {'mode':14} {'msg/s':>8} {'ms/msg':>8} {'entries':>8} {'gc %':>6}")
    for label, messages in cases.items():
        entries = len(converters["validated"].convert_message(messages[0]).bundle["entry"])
        for mode, converter in converters.items():
            rate, _, in_gc = measure(converter, messages, args.seconds)
            print(f"{label:18} {mode:14} {rate:8.0f} {1000 / rate:8.2f} {entries:8d} {in_gc:6.1%}")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    adt = variants((SAMPLES / CASES["ADT_A01 full"]).read_bytes(), 60)
    traced = allocation_per_message(converters["validated"], adt) / 1024
    print(
        f"peak RSS of this process: {peak_rss_mb:.0f} MB; "
        f"peak traced allocation while converting 50 ADT_A01: {traced:.0f} KB"
    )
    breakdown(converters["no validation"])
    cda_benchmark(converters, args.seconds)


if __name__ == "__main__":
    main()
