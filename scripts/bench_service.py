#!/usr/bin/env python3
"""End-to-end figures of the running service (``passerelle serve``) over loopback.

    .venv/bin/python scripts/bench_service.py [--connections 16] [--seconds 10]
        [--rate 500] [--messages 2000] [--sink fhir|folder] [--fhir-url URL]
        [--phases ingest,latency,e2e] [--log-level INFO] [--keep DIR] [--isolate]

Each phase starts a fresh service as a subprocess (its own queue file, MLLP and HTTP on free
ports, ``ack_after = "commit"``), drives it with K concurrent MLLP connections — each sends
one message and waits for its ACK, like an interface engine — then stops it:

* ``ingest``: every connection sends as fast as it can for ``--seconds``: sustained messages/s
  acknowledged with commit-before-ACK (each AA follows the fsync'd commit of its message),
  and the ACK latency meanwhile;
* ``latency``: the same connections paced to ``--rate`` messages/s in total (open loop: each
  message has a due time; a late one is sent at once): ACK latency p50/p99/max measured from
  the send, and from the due time (which includes any lag of the pacing);
* ``e2e``: ``--messages`` messages as fast as possible, then until the queue drains
  (``passerelle_queue_depth`` of ``GET /metrics``): messages/s from the first send to the last
  bundle accepted by the destination (``passerelle_bundles_delivered_total``), and the
  delivery rate once ingestion is over.

Throughout, the resident memory of the service's process tree (the main process, the
conversion processes, the fork server) is sampled from /proc every 100 ms: the peak is
printed per phase. Messages are the ADT^A01 and ADT^A08 samples with a distinct MSH-10 and
patient identifier each (some patients get several messages). The destination is the test
FHIR server (``tests/fhirserver``, started here; Node ≥ 20.19) or ``--fhir-url``, or a folder
with ``--sink folder``. ``--isolate`` freezes the conversion processes during the ingest and
latency phases (a diagnostic: the receive/store/ACK path alone, without the CPU the
conversion of the backlog takes). The main process's CPU time per acknowledged message is
printed too: unlike rates, it hardly depends on what else runs on the machine.
Targets: ≥ 2,000 messages/s ingest; p99 ACK ≤ 20 ms at 500/s. Prints figures; asserts
nothing. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# A sibling module: the script's own folder is first on sys.path when it runs.
from bench_service_process import Service  # noqa: E402

from listeners.mllp.client import MllpClient, MllpClientError  # noqa: E402

SAMPLES = REPO_ROOT / "samples" / "hl7v2"
TARGET_INGEST = 2000.0
TARGET_P99_MS = 20.0


# -- messages -------------------------------------------------------------------------------
def _template(name: str) -> list[list[str]]:
    text = (SAMPLES / name).read_bytes().decode("utf-8")
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return [line.split("|") for line in lines if line.strip()]


def _replace_first(value: str, new: str) -> str:
    first, sep, rest = value.partition("~")
    _, csep, components = first.partition("^")
    return new + csep + components + sep + rest


class Messages:
    """Distinct ADT messages: ``next()`` gives (control id, payload)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._count = 0
        self._parts = [
            self._split(_template(n))
            for n in ("ADT_A01_admission-full.hl7", "ADT_A08_update-patient.hl7")
        ]

    @staticmethod
    def _split(segments: list[list[str]]) -> tuple[str, ...]:
        """The message text cut around MSH-10, PID-3.1 and PV1-19.1 (placeholders)."""
        marked = [list(fields) for fields in segments]
        for fields in marked:
            if fields[0] == "MSH":
                fields[9] = "\x00"
            elif fields[0] == "PID":
                fields[3] = _replace_first(fields[3], "\x01")
            elif fields[0] == "PV1":
                fields[19] = _replace_first(fields[19], "\x02")
        text = "\r".join("|".join(fields) for fields in marked) + "\r"
        head, rest = text.split("\x00")
        middle, rest = rest.split("\x01")
        middle2, tail = rest.split("\x02")
        return head, middle, middle2, tail

    def next(self) -> tuple[str, bytes]:
        n = self._count
        self._count += 1
        # One message in five updates one of 500 recurring patients (A08), others are new.
        if n % 5 == 4:
            patient, parts = f"R{n % 500:05d}", self._parts[1]
        else:
            patient, parts = f"N{n:08d}", self._parts[0]
        control_id = f"{self._prefix}{n:09d}"
        head, middle, middle2, tail = parts
        text = f"{head}{control_id}{middle}{patient}{middle2}V{patient}{tail}"
        return control_id, text.encode("utf-8")


# -- senders ------------------------------------------------------------------------------------
@dataclass
class Results:
    acked: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    from_due: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_ack: float = 0.0


def _accepted(reply: bytes, control_id: str) -> bool:
    return f"MSA|AA|{control_id}".encode() in reply or f"MSA|CA|{control_id}".encode() in reply


async def _connection(
    port: int,
    messages: Messages,
    results: Results,
    stop_at: float,
    *,
    interval: float | None,
    offset: float,
    start: float,
    limit: list[int] | None,
) -> None:
    client = MllpClient("127.0.0.1", port, timeout=30)
    due = start + offset
    try:
        while True:
            if interval is not None:
                if due >= stop_at:
                    return
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif time.perf_counter() >= stop_at:
                return
            if limit is not None:
                if limit[0] <= 0:
                    return
                limit[0] -= 1
            control_id, payload = messages.next()
            sent = time.perf_counter()
            results.first_send = results.first_send or time.time()
            try:
                reply = await client.send(payload)
            except (OSError, MllpClientError, TimeoutError):
                results.failed += 1
                continue
            now = time.perf_counter()
            if _accepted(reply, control_id):
                results.acked += 1
                results.latencies.append(now - sent)
                if interval is not None:
                    results.from_due.append(now - due)
                results.last_ack = time.time()
            else:
                results.failed += 1
            if interval is not None:
                due += interval
    finally:
        await client.close()


async def drive(
    port: int,
    connections: int,
    *,
    seconds: float,
    rate: float | None,
    count: int | None = None,
    prefix: str = "B",
) -> Results:
    results = Results()
    messages = Messages(prefix)
    start = time.perf_counter()
    stop_at = start + seconds
    interval = connections / rate if rate else None
    limit = [count] if count is not None else None
    await asyncio.gather(
        *(
            _connection(
                port,
                messages,
                results,
                stop_at,
                interval=interval,
                offset=(interval or 0) * i / connections,
                start=start,
                limit=limit,
            )
            for i in range(connections)
        )
    )
    return results


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# -- phases -------------------------------------------------------------------------------------
def phase_ingest(args: argparse.Namespace, destination: str, work: Path) -> dict[str, Any]:
    with Service(work / "ingest", destination, log_level=args.log_level) as service:
        if args.isolate:
            service.freeze_conversions()
        cpu = service.main_cpu()
        results = asyncio.run(
            drive(service.mllp_port, args.connections, seconds=args.seconds, rate=None, prefix="I")
        )
        cpu = service.main_cpu() - cpu
        depth = service.metrics().get("passerelle_queue_depth", float("nan"))
        rss = service.peak_rss
    rate = results.acked / args.seconds
    return {
        "phase": "ingest (flat out)",
        "messages/s acknowledged": f"{rate:,.0f}  (target ≥ {TARGET_INGEST:,.0f}: "
        f"{'met' if rate >= TARGET_INGEST else 'MISSED'})",
        "acknowledged / failed": f"{results.acked} / {results.failed}",
        "main process CPU per message": f"{cpu / max(1, results.acked) * 1e6:,.0f} µs "
        f"({cpu / args.seconds:.0%} of a core)",
        "ACK latency p50 / p99": f"{pct(results.latencies, 0.5):.1f} / "
        f"{pct(results.latencies, 0.99):.1f} ms",
        "queue depth at the end": f"{depth:,.0f}",
        "peak RSS of the service": f"{rss / 2**20:,.0f} MiB",
    }


def phase_latency(args: argparse.Namespace, destination: str, work: Path) -> dict[str, Any]:
    with Service(work / "latency", destination, log_level=args.log_level) as service:
        if args.isolate:
            service.freeze_conversions()
        results = asyncio.run(
            drive(
                service.mllp_port,
                args.connections,
                seconds=args.seconds,
                rate=args.rate,
                prefix="L",
            )
        )
        rss = service.peak_rss
    p99 = pct(results.latencies, 0.99)
    return {
        "phase": f"ACK latency at {args.rate:g} messages/s",
        "achieved rate": f"{results.acked / args.seconds:,.0f} messages/s "
        f"({results.failed} failed)",
        "ACK latency p50 / p99 / max": f"{pct(results.latencies, 0.5):.1f} / {p99:.1f} / "
        f"{pct(results.latencies, 1.0):.1f} ms  (target p99 ≤ "
        f"{TARGET_P99_MS:g} ms: "
        f"{'met' if p99 <= TARGET_P99_MS else 'MISSED'})",
        "from the due time p50 / p99": f"{pct(results.from_due, 0.5):.1f} / "
        f"{pct(results.from_due, 0.99):.1f} ms",
        "peak RSS of the service": f"{rss / 2**20:,.0f} MiB",
    }


def phase_e2e(args: argparse.Namespace, destination: str, work: Path) -> dict[str, Any]:
    with Service(work / "e2e", destination, log_level=args.log_level) as service:
        results = asyncio.run(
            drive(
                service.mllp_port,
                args.connections,
                seconds=1e9,
                rate=None,
                count=args.messages,
                prefix="E",
            )
        )
        ingested_at = time.time()
        delivered_at_ingest = service.metrics().get("passerelle_bundles_delivered_total", 0.0)
        deadline = time.monotonic() + args.drain_timeout
        zero_since = None
        last_delivered = delivered_at_ingest
        last_change = time.time()
        while time.monotonic() < deadline:
            values = service.metrics()
            delivered = values.get("passerelle_bundles_delivered_total", 0.0)
            if delivered != last_delivered:
                last_delivered, last_change = delivered, time.time()
            if values.get("passerelle_queue_depth", 1) == 0 and delivered >= results.acked:
                zero_since = zero_since or time.monotonic()
                if time.monotonic() - zero_since > 1.2:
                    break
            else:
                zero_since = None
            time.sleep(0.1)
        values = service.metrics()
        rss = service.peak_rss
    delivered = values.get("passerelle_bundles_delivered_total", 0.0)
    elapsed = last_change - results.first_send
    drain = last_change - ingested_at
    drain_rate = (delivered - delivered_at_ingest) / max(1e-9, drain)
    return {
        "phase": f"end to end, {args.messages:,} messages",
        "ingested in": f"{ingested_at - results.first_send:.1f} s "
        f"({results.acked / max(1e-9, ingested_at - results.first_send):,.0f}"
        " messages/s)",
        "delivered": f"{delivered:,.0f} of {results.acked:,} acknowledged"
        f"{'' if delivered >= results.acked else ' (DRAIN TIMEOUT)'}",
        "end-to-end throughput": f"{delivered / max(1e-9, elapsed):,.1f} messages/s "
        f"(first send → last bundle accepted, {elapsed:.1f} s)",
        "delivery rate after ingestion": f"{drain_rate:,.1f} messages/s",
        "dead letters": f"{values.get('passerelle_messages_dead_lettered_total', 0):.0f}",
        "retries": f"{values.get('passerelle_deliveries_retried_total', 0):.0f}",
        "peak RSS of the service": f"{rss / 2**20:,.0f} MiB",
    }


@contextlib.contextmanager
def destination(args: argparse.Namespace, work: Path) -> Iterator[tuple[str, Any]]:
    if args.sink == "folder":
        yield f'[destinations.default]\nfolder = "{work / "out"}"\n', None
        return
    if args.fhir_url:
        yield f'[destinations.default]\nurl = "{args.fhir_url}"\n', None
        return
    from tests.support.fhirserver import FhirServer

    with FhirServer.start() as server:
        yield f'[destinations.default]\nurl = "{server.base_url}"\n', server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--sink", choices=("fhir", "folder"), default="fhir")
    parser.add_argument("--fhir-url", help="an existing FHIR server instead of the test one")
    parser.add_argument("--phases", default="ingest,latency,e2e")
    parser.add_argument(
        "--log-level", default="INFO", help="the service's log_level (default INFO, its default)"
    )
    parser.add_argument("--keep", type=Path, help="keep queue files and logs in this directory")
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="diagnostic: freeze the conversion processes (SIGSTOP) during the ingest and "
        "latency phases, to measure the receive/store/ACK path without the conversion load",
    )
    args = parser.parse_args()
    phases = {"ingest": phase_ingest, "latency": phase_latency, "e2e": phase_e2e}
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-service-"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{os.cpu_count()} CPU(s) (load average {load:.1f}), {args.connections} connections, "
        f"sink {args.sink}, log level {args.log_level}"
        f"{', conversions frozen' if args.isolate else ''}"
        f"{' ' + args.fhir_url if args.fhir_url else ''}",
        flush=True,
    )
    try:
        with destination(args, work) as (config, server):
            for name in args.phases.split(","):
                if server is not None:
                    server.reset()
                figures = phases[name.strip()](args, config, work)
                print(f"\n== {figures.pop('phase')}")
                for key, value in figures.items():
                    print(f"  {key:32} {value}")
                sys.stdout.flush()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
