#!/usr/bin/env python3
"""Where a conversion's CPU time goes, by kind of work: a sampling profile.

    .venv/bin/python scripts/profile_split.py [FILE] [--count N] [--interval-ms MS]

Converts FILE (an HL7 v2 message, default the typical ADT_A01 sample; or a CDA
document) N times, validated, while SIGPROF samples the innermost Python frame, and
prints the share of samples per kind of work: HL7 parsing and value access, the JSON
text templates write and the parsing back, the sandbox's checks, Jinja's runtime,
assembly, validation… Builtins count for the Python frame that called them.

Sampling does not slow the code it measures the way cProfile does (cProfile charges
every call, and makes code made of many small calls look heavier than it is). It
prints shares, not times, and asserts nothing. POSIX only (SIGPROF).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections import Counter
from pathlib import Path
from types import FrameType

from benchmark import CASES, SAMPLES, document_variants, variants

from converter import Converter, ConverterConfig

JSON_OUT = "JSON text out (to_json, Markup, encoder)"
JSON_IN = "JSON text in (decode, prune)"
SANDBOX = "Jinja sandbox checks"
ASSEMBLY = "assembly (emit, ids, merge, bundle)"
_JSON_IN_FUNCTIONS = {"json_from_template", "_prune_object", "_prune_list"}


def kind_of_work(frame: FrameType) -> str:
    path = frame.f_code.co_filename.replace("\\", "/")
    function = frame.f_code.co_name
    if path.endswith(".j2"):
        return "generated template code"
    if "/jinja2/sandbox" in path:
        return SANDBOX
    if "/jinja2/" in path:
        return "Jinja runtime (contexts, macros, loops)"
    if "/markupsafe/" in path or path.endswith("json/encoder.py"):
        return JSON_OUT
    if path.endswith("templates/json_output.py"):
        return JSON_OUT
    if path.endswith("templates/environment.py"):
        return SANDBOX
    if path.endswith(("json/decoder.py", "templates/template_json.py")):
        return JSON_IN
    if path.endswith(("templates/render.py", "templates/runner.py")):
        return JSON_IN if function in _JSON_IN_FUNCTIONS else ASSEMBLY
    if "/converter/assembly/" in path or path.endswith("converter/convert.py"):
        return ASSEMBLY
    if "/converter/hl7v2/" in path:
        return "HL7 v2 parsing and value access"
    if "/converter/cda/" in path:
        return "CDA parsing and navigation"
    if "/converter/validation/" in path:
        return "validation"
    if "/converter/templates/" in path or path.endswith("converter/datetimes.py"):
        return "filters, code maps, timestamps"
    return "other"


def function_of(frame: FrameType) -> str:
    """``file:function`` of a frame, the file named from its package or template root."""
    path = frame.f_code.co_filename.replace("\\", "/")
    for root in ("/site-packages/", "/converter/", "/mappings/"):
        if root in path:
            path = path.rsplit(root, 1)[1]
            break
    return f"{path}:{frame.f_code.co_name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=SAMPLES / CASES["ADT_A01 typical"])
    parser.add_argument("--count", type=int, default=3000, help="conversions to sample")
    parser.add_argument("--interval-ms", type=float, default=0.1, help="sampling interval")
    parser.add_argument(
        "--functions", type=int, default=0, metavar="N", help="also the N functions sampled most"
    )
    args = parser.parse_args()
    if not hasattr(signal, "SIGPROF"):
        sys.exit("profile_split.py needs SIGPROF (POSIX)")

    converter = Converter(ConverterConfig())
    data = args.file.read_bytes()
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        inputs = document_variants(data, 20)
        convert = converter.convert_document
    else:
        inputs = variants(data, 500)
        convert = converter.convert_message
    for item in inputs[:20]:  # templates compiled, tables built
        convert(item)

    samples: Counter[str] = Counter()
    functions: Counter[str] = Counter()

    def sample(signum: int, frame: FrameType | None) -> None:
        if frame is not None:
            samples[kind_of_work(frame)] += 1
            functions[function_of(frame)] += 1

    interval = args.interval_ms / 1000
    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, interval, interval)
    try:
        for n in range(args.count):
            convert(inputs[n % len(inputs)])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
    total = sum(samples.values())
    print(f"{args.file.name}: {args.count} conversions, {total} samples")
    for kind, count in samples.most_common():
        print(f"{count / total * 100:5.1f}%  {kind}")
    if args.functions:
        print(f"the {args.functions} functions sampled most:")
        for function, count in functions.most_common(args.functions):
            print(f"{count / total * 100:5.1f}%  {function}")


if __name__ == "__main__":
    main()
