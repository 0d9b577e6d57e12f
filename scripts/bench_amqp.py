#!/usr/bin/env python3
"""Figures of Passerelle over RabbitMQ: the broker's confirm rates, then messages/s through
``passerelle worker`` processes with one and with two workers (the scaling ratio).

    .venv/bin/python scripts/bench_amqp.py [--url amqp://guest:guest@localhost/]
        [--messages 3000] [--confirm-messages 2000] [--inflight 200] [--partitions 16]
        [--workers 1,2] [--convert-processes 1] [--sink amqp|folder|fhir]

Without ``--url`` a throwaway RabbitMQ node is started (``tests/support/rabbitmq.py``: the
distribution's rabbitmq-server, about 10 s) and stopped at the end.

* ``publish, confirm awaited per message``: one persistent message at a time, each publish
  waiting for the broker's confirm (what the MLLP listener does before each ACK);
* ``publish, N in flight``: the same with ``--inflight`` publications outstanding;
* ``consume, manual ack, prefetch 100``: reading back those messages, one ack each;
* ``workers=K``: K ``passerelle worker`` processes are started and hold every partition, then
  ``--messages`` ADT messages (distinct patients) are committed to the partitions as the MLLP
  listener does (``AmqpQueue.put``, ``--inflight`` outstanding) and the clock runs until the
  last bundle is delivered: messages/s end to end (convert + deliver + ack per message). The
  destination is an AMQP exchange (bundles published with confirms, counted in a queue) by
  default, a folder (``--sink folder``) or the test FHIR server (``--sink fhir``, Node).

Each worker converts in ``--convert-processes`` processes (at nice 10). With ``--pin`` worker k
runs on CPU k only, as if each worker had a one-core machine of its own: on a small host, one
unpinned worker already takes every CPU (conversion, its event loop and the broker), so two
cannot go faster; pinned, the ratio shows what a second worker machine adds (the broker and
this script still share the host). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from listeners.amqp import AmqpQueue  # noqa: E402
from listeners.config import ServiceConfig, load_config  # noqa: E402
from listeners.queue.base import Envelope  # noqa: E402

PASSERELLE = str(Path(sys.executable).parent / "passerelle")
AUTHORITY = "HOSP&1.2.250.1.999.7&ISO"


def adt(n: int) -> bytes:
    """An ADT^A08 about patient ``n`` (distinct control id, MRN and visit)."""
    segments = [
        f"MSH|^~\\&|BENCH|FAC|PASSERELLE|GHT|20240314083512+0100||ADT^A08^ADT_A01|B-{n}|P|2.5.1",
        "EVN|A08|20240314083512+0100",
        f"PID|1||MRN-{n}^^^{AUTHORITY}^MR||Bench^Patient{n}||19800101|F",
        f"PV1|1|I|CARDIO^412^1|||||||||||||||||V-{n}^^^{AUTHORITY}^VN",
    ]
    return ("\r".join(segments) + "\r").encode()


# -- broker figures ---------------------------------------------------------------------------
async def confirm_rates(url: str, count: int, inflight: int) -> dict[str, float]:
    body = adt(0)
    name = f"bench.{secrets.token_hex(4)}"
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True)
        exchange = channel.default_exchange

        def message() -> aio_pika.Message:
            return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

        started = time.perf_counter()
        for _ in range(count):
            await exchange.publish(message(), name)
        one_at_a_time = count / (time.perf_counter() - started)

        many = count * 10
        semaphore = asyncio.Semaphore(inflight)

        async def publish() -> None:
            async with semaphore:
                await exchange.publish(message(), name)

        started = time.perf_counter()
        await asyncio.gather(*(publish() for _ in range(many)))
        in_flight = many / (time.perf_counter() - started)

        await channel.set_qos(prefetch_count=100)
        total = count + many
        done = asyncio.Event()
        seen = 0

        async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await incoming.ack()
            seen += 1
            if seen == total:
                done.set()

        started = time.perf_counter()
        tag = await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), timeout=300)
        consumed = total / (time.perf_counter() - started)
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return {"one": one_at_a_time, "inflight": in_flight, "consume": consumed}


# -- workers ----------------------------------------------------------------------------------
def write_config(
    directory: Path, url: str, args: argparse.Namespace, prefix: str, fhir_url: str | None
) -> Path:
    lines = [
        f'data_dir = "{directory / "data"}"',
        'log_level = "WARNING"',
        "[queue]",
        'backend = "amqp"',
        "[delivery]",
        f"convert_processes = {args.convert_processes}",
        "[amqp]",
        f'url = "{url}"',
        f"partitions = {args.partitions}",
        f'partition_exchange = "{prefix}.partitions"',
        f'partition_queue_prefix = "{prefix}.partition"',
        f'presence_queue = "{prefix}.workers"',
        f'dead_letter_exchange = "{prefix}.dead-letter"',
        f'dead_letter_queue = "{prefix}.dead-letter"',
        "rebalance_interval = 0.5",
        "[destinations.default]",
    ]
    if args.sink == "fhir":
        lines.append(f'url = "{fhir_url}"')
    elif args.sink == "folder":
        lines.append(f'folder = "{directory / "out"}"')
    else:
        lines.append(f'amqp = {{ exchange = "{prefix}.bundles", queue = "{prefix}.bundles" }}')
    path = directory / "passerelle.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def counts(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``; (0, 0) while it does not exist."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0, 0
    finally:
        await connection.close()


async def all_claimed(config: ServiceConfig, workers: int) -> bool:
    amqp = config.amqp
    with contextlib.suppress(Exception):
        if (await counts(amqp.url.reveal(), amqp.presence_queue))[1] != workers:  # type: ignore[union-attr]
            return False
        for n in range(amqp.partitions):
            name = f"{amqp.partition_queue_prefix}.{n}"
            if (await counts(amqp.url.reveal(), name))[1] != 1:  # type: ignore[union-attr]
                return False
        return True
    return False


async def delivered(
    config: ServiceConfig,
    args: argparse.Namespace,
    prefix: str,
    directory: Path,
    fhir: Any,
) -> int:
    if args.sink == "amqp":
        assert config.amqp.url is not None
        return (await counts(config.amqp.url.reveal(), f"{prefix}.bundles"))[0]
    if args.sink == "folder":
        return sum(1 for _ in (directory / "out").rglob("*.json"))
    return int(await asyncio.to_thread(fhir.count, "Encounter"))


async def run_workers(
    url: str, args: argparse.Namespace, workers: int, fhir: Any
) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="bench-amqp-"))
    prefix = f"bench.{secrets.token_hex(4)}"
    fhir_url = getattr(fhir, "base_url", None)
    path = write_config(directory, url, args, prefix, fhir_url)
    config = load_config(path, env={})
    if fhir is not None:
        fhir.reset()
    queue = AmqpQueue(config.amqp)
    await queue.start()  # declares the partitions
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    cpus = sorted(os.sched_getaffinity(0))

    def pinned(index: int) -> Callable[[], None] | None:
        """--pin: worker k (and its conversion processes) on CPU k only, as if each worker
        had a machine of one core (the broker and this script still float)."""
        if not args.pin:
            return None
        return lambda: os.sched_setaffinity(0, {cpus[index % len(cpus)]})

    processes = [
        subprocess.Popen(
            [PASSERELLE, "worker", "--config", str(path)],
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=pinned(index),
        )
        for index in range(workers)
    ]
    try:
        deadline = time.monotonic() + 120
        while not await all_claimed(config, workers):
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not claim the partitions in time")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # let the fair share settle (rebalance every 0.5 s)
        if args.sink == "amqp":  # the bundles queue exists once a worker published: warm up
            await queue.put(envelope(-1))
            while await delivered(config, args, prefix, directory, fhir) < 1:
                await asyncio.sleep(0.05)
        baseline = await delivered(config, args, prefix, directory, fhir)
        semaphore = asyncio.Semaphore(args.inflight)

        async def put(n: int) -> None:
            async with semaphore:
                await queue.put(envelope(n))

        started = time.perf_counter()
        await asyncio.gather(*(put(n) for n in range(args.messages)))
        committed = time.perf_counter() - started
        while await delivered(config, args, prefix, directory, fhir) - baseline < args.messages:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        await queue.close()
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "rate": args.messages / elapsed,
        "elapsed": elapsed,
        "commit_rate": args.messages / committed,
    }


def envelope(n: int) -> Envelope:
    return Envelope(
        payload=adt(n),
        sender="mllp/BENCH^FAC",
        listener="mllp",
        received_at=time.time(),
        ordering_key=f"mllp/BENCH^FAC|MRN-{n}^{AUTHORITY}",
        control_id=f"B-{n}",
        message_type="ADT^A08^ADT_A01",
    )


# -- main -------------------------------------------------------------------------------------
@contextlib.contextmanager
def broker(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.support.rabbitmq import RabbitMq, rabbitmq_unavailable_reason

    reason = rabbitmq_unavailable_reason()
    if reason is not None:
        raise SystemExit(f"no --url and cannot start RabbitMQ here: {reason}")
    print("starting a RabbitMQ node…", flush=True)
    with RabbitMq.start() as node:
        yield node.url


@contextlib.contextmanager
def fhir_server(sink: str) -> Iterator[Any]:
    if sink != "fhir":
        yield None
        return
    from tests.support.fhirserver import FhirServer

    with FhirServer.start() as server:
        yield server


async def main_async(args: argparse.Namespace, url: str, fhir: Any) -> None:
    rates = await confirm_rates(url, args.confirm_messages, args.inflight)
    print(f"publish, confirm awaited per message : {rates['one']:8,.0f} messages/s")
    print(
        f"publish, {args.inflight} in flight{' ' * (17 - len(str(args.inflight)))}: "
        f"{rates['inflight']:8,.0f} messages/s"
    )
    print(f"consume, manual ack, prefetch 100    : {rates['consume']:8,.0f} messages/s")
    results: dict[int, float] = {}
    for workers in args.workers:
        figures = await run_workers(url, args, workers, fhir)
        results[workers] = figures["rate"]
        print(
            f"workers={workers}: {figures['rate']:8,.0f} messages/s end to end "
            f"({args.messages} messages in {figures['elapsed']:.1f} s; committed to the "
            f"partitions at {figures['commit_rate']:,.0f}/s)",
            flush=True,
        )
    if 1 in results and 2 in results:
        print(f"scaling 1 → 2 workers: {results[2] / results[1]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="broker URL (default: start a throwaway node)")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--confirm-messages", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument(
        "--workers", default="1,2", type=lambda text: [int(part) for part in text.split(",")]
    )
    parser.add_argument("--convert-processes", type=int, default=1)
    parser.add_argument("--sink", choices=("amqp", "folder", "fhir"), default="amqp")
    parser.add_argument(
        "--pin", action="store_true", help="pin worker k to CPU k (one core per worker)"
    )
    args = parser.parse_args()
    print(
        f"CPUs: {os.cpu_count()}; partitions: {args.partitions}; conversion processes per "
        f"worker: {args.convert_processes}; destination: {args.sink}"
        + ("; each worker pinned to one CPU" if args.pin else "")
    )
    with broker(args.url) as url, fhir_server(args.sink) as fhir:
        asyncio.run(main_async(args, url, fhir))


if __name__ == "__main__":
    main()
