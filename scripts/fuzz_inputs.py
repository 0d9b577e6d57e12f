#!/usr/bin/env python3
"""Mutation fuzzing of what senders control: every failure must be a ConversionError.

    .venv/bin/python scripts/fuzz_inputs.py [--count N] [--seed S]

Random edits (delimiters, control bytes, codec names, XML entities, cuts) of the HL7 v2
and CDA samples go through the three places where outside input arrives:

* ``convert``: ``Converter.convert`` in the default, lenient-values and strict-HL7 modes;
* ``listener``: what the MLLP listener does before storing a message (header read,
  support check, the ACK in its three modes, read back);
* ``amqp``: the AMQP consumer's intake (``envelope_of``), with assorted content types
  and headers.

A bare exception there is a bug: the MLLP listener would close without an ACK (the
sender re-sends the message forever), the AMQP consumer would requeue it forever, the
CLI would print a traceback. Prints each distinct one with its traceback; exit 1 when
there is any. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import random
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from converter import ConversionError, Converter, ConverterConfig
from converter.hl7v2 import peek_header
from listeners.amqp.intake import envelope_of
from listeners.config.loading import load_config
from listeners.config.model import RouteConfig
from listeners.ingest import SupportChecker
from listeners.mllp.ack import AckOutcome, build_ack, parse_ack, read_header

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
TOKENS = [
    *(b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b'""', b" ", b"<", b">", b'"', b"/"),
    *(b"\x00", b"\xff", b"\xc3", b"\x0b", b"\x1c", b"\\X0D\\", b"\\.br\\", b"ZZZ|1"),
    *(b"UNDEFINED", b"IDNA", b"UNICODE UTF-16", b"8859/1", b"2.9", b"AL", b"NE", b"SU"),
    *(b"ADT^A01^ADT_A01", b"OBX|1|NM|x^y||abc", b"99999999999999999999", b"1e999", b"NaN"),
    *(b"20241301", b"+2500", b"&amp;", b'nullFlavor="UNK" ', b"<!DOCTYPE x [<!ENTITY a 'b'>]>"),
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    if data.startswith(b"MSH|") and rng.random() < 0.3:
        # MSH is read before anything is stored: replace one of its fields outright.
        msh, _, rest = data.partition(b"\r")
        fields = msh.split(b"|")
        fields[rng.randrange(2, len(fields))] = rng.choice(TOKENS)
        data = b"|".join(fields) + b"\r" + rest
    edited = bytearray(data)
    if rng.random() < 0.3:
        edited = edited[: rng.randrange(1, len(edited))]
    for _ in range(rng.randint(1, 6)):
        position = rng.randrange(0, max(1, len(edited)))
        choice = rng.random()
        if choice < 0.5:
            edited[position:position] = rng.choice(TOKENS)
        elif choice < 0.8:
            del edited[position : position + rng.randint(1, 8)]
        else:
            edited[position : position + 1] = rng.choice(TOKENS)
    return bytes(edited)


def targets() -> dict[str, Callable[[random.Random, bytes], Any]]:
    converters = [
        Converter(ConverterConfig()),
        Converter(ConverterConfig(strict_values=False)),
        Converter(ConverterConfig(strict_hl7=True)),
    ]
    config = load_config(None, env={})
    support = SupportChecker({"default": RouteConfig(name="default", converter=config.converter)})

    def convert(rng: random.Random, data: bytes) -> None:
        rng.choice(converters).convert(data)

    def listener(rng: random.Random, data: bytes) -> None:
        header = read_header(data)
        outcome = header.rejection()
        if outcome is None:
            try:
                support.check("default", peek_header(data))
                outcome = AckOutcome.accept()
            except ConversionError as exc:
                outcome = AckOutcome.from_error(exc)
        for mode in ("auto", "original", "enhanced"):
            parse_ack(build_ack(header, outcome, mode=mode))

    def amqp(rng: random.Random, data: bytes) -> None:
        message = SimpleNamespace(
            body=data,
            content_type=rng.choice([None, "application/hl7-v2", "application/xml", "x/y"]),
            headers=rng.choice(
                [{}, {"x-passerelle-input-type": "cda"}, {"x-passerelle-input-type": 5}]
            ),
            message_id=rng.choice([None, "m-1"]),
            correlation_id=None,
        )
        envelope_of(message, listener="amqp", config=config, support=support)  # type: ignore[arg-type]

    return {"convert": convert, "listener": listener, "amqp": amqp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="mutated inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    inputs = [p.read_bytes() for p in sorted(SAMPLES.glob("*/*")) if p.suffix in (".hl7", ".xml")]
    found: Counter[tuple[str, str, str]] = Counter()
    for name, target in targets().items():
        for _ in range(args.count):
            data = mutate(rng, rng.choice(inputs))
            try:
                target(rng, data)
            except ConversionError:
                pass
            except Exception as exc:  # finding these is the point
                key = (name, type(exc).__name__, str(exc)[:80])
                if not found[key]:
                    print(f"{name}: {type(exc).__name__} on {data[:120]!r}")
                    traceback.print_exc(limit=-4)
                found[key] += 1
        bare = sum(n for key, n in found.items() if key[0] == name)
        print(f"{name}: {args.count} mutated inputs, {bare} bare exceptions")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
