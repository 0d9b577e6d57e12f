"""Helpers of the AMQP tests: names, configurations, messages, an AMQP client, waiting.

Everything runs for real: a RabbitMQ node (:mod:`tests.support.rabbitmq`), the test FHIR
server, :class:`listeners.service.Service` and :class:`listeners.amqp.AmqpWorker` on the
test's event loop, and ``passerelle worker`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from listeners.amqp import AmqpQueue
from listeners.config import ServiceConfig, load_config
from listeners.logs import JsonFormatter
from listeners.queue.base import Envelope
from listeners.service import Service
from tests.listeners.service.support import toml_value
from tests.support import waiting
from tests.support.fhirserver import FhirServer

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES = REPO_ROOT / "samples"
PASSERELLE = str(Path(sys.executable).parent / "passerelle")

#: Assigning authority of the test messages' MRNs (PID-3.4) and the identifier system.
AUTHORITY = "HOSP&1.2.250.1.999.7&ISO"
PATIENT_SYSTEM = "urn:oid:1.2.250.1.999.7"


# -- names ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Names:
    """Exchange and queue names of one test (unique: tests share the broker)."""

    prefix: str

    @classmethod
    def unique(cls) -> Self:
        return cls(f"t{secrets.token_hex(4)}")

    @property
    def ingress(self) -> str:
        return f"{self.prefix}.ingress"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def partitions(self) -> str:
        return f"{self.prefix}.partitions"

    def partition(self, number: int) -> str:
        return f"{self.prefix}.partition.{number}"

    @property
    def presence(self) -> str:
        return f"{self.prefix}.workers"

    @property
    def bundles(self) -> str:
        return f"{self.prefix}.bundles"


# -- configuration ----------------------------------------------------------------------------
def write_config(
    directory: Path,
    *,
    amqp_url: str,
    names: Names,
    fhir_url: str | None = None,
    backend: str = "sqlite",
    consumer: Mapping[str, Any] | None = None,
    bundles: bool = False,
    amqp: Mapping[str, Any] | None = None,
    delivery: Mapping[str, Any] | None = None,
    log_format: str = "text",
    top: Mapping[str, Any] | None = None,
    queue: Mapping[str, Any] | None = None,
) -> Path:
    """A TOML configuration: loopback and ephemeral ports, fast retries, ``names``."""
    tables: dict[str, dict[str, Any]] = {
        "": {
            "data_dir": str(directory / "data"),
            "log_level": "DEBUG",
            "log_format": log_format,
            **(top or {}),
        },
        "mllp": {"host": "127.0.0.1", "port": 0, "idle_timeout": 30},
        "http": {"host": "127.0.0.1", "port": 0},
        "queue": {"backend": backend, "commit_interval_ms": 1, **(queue or {})},
        "delivery": {
            "workers": 4,
            "convert_processes": 1,
            "backoff_initial": 0.05,
            "backoff_max": 0.5,
            **(delivery or {}),
        },
        "amqp": {
            "url": amqp_url,
            "confirm_timeout": 10.0,
            "reconnect_interval": 0.5,
            "dead_letter_exchange": names.dead_letters,
            "dead_letter_queue": names.dead_letters,
            "partition_exchange": names.partitions,
            "partition_queue_prefix": f"{names.prefix}.partition",
            "presence_queue": names.presence,
            "partitions": 4,
            "rebalance_interval": 0.3,
            **(amqp or {}),
        },
    }
    if consumer is not None:
        tables["amqp.consumer"] = {
            "enabled": True,
            "exchange": names.ingress,
            "queue": names.ingress,
            **consumer,
        }
    destination: dict[str, Any] = {}
    if fhir_url is not None:
        destination["url"] = fhir_url
    if destination or bundles:
        tables["destinations.default"] = destination
    if bundles:
        tables["destinations.default.amqp"] = {
            "exchange": names.bundles,
            "queue": names.bundles,
            "routing_key": "bundle",
        }
    lines = [f"{k} = {toml_value(v)}" for k, v in tables.pop("").items()]
    for table, values in tables.items():
        lines.append(f"\n[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "passerelle.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_config(directory: Path, **kwargs: Any) -> ServiceConfig:
    """A configuration read from a real TOML file, as ``passerelle serve`` does."""
    return load_config(write_config(directory, **kwargs), env={})


#: The ``config_file`` and ``configure`` fixtures: ``write_config`` and ``make_config``
#: bound to the test's broker, FHIR server and names, taking the other settings.
ConfigFile = Callable[..., Path]
Configure = Callable[..., ServiceConfig]


# -- messages ---------------------------------------------------------------------------------
def adt(
    control_id: str,
    *,
    mrn: str,
    family: str = "Testpatient",
    event: str = "A08",
    application: str = "APP-A",
    facility: str = "FAC-A",
    message_type: str | None = None,
    birth_date: str = "19800101",
    processing_id: str = "P",
) -> bytes:
    """A small ADT message (MSH, EVN, PID, PV1), CR-separated."""
    msh9 = message_type or f"ADT^{event}^ADT_A01"
    segments = [
        f"MSH|^~\\&|{application}|{facility}|PASSERELLE|GHT|20240314083512+0100||{msh9}|"
        f"{control_id}|{processing_id}|2.5.1",
        f"EVN|{event}|20240314083512+0100",
        f"PID|1||{mrn}^^^{AUTHORITY}^MR||{family}^Alice||{birth_date}|F",
        f"PV1|1|I|CARDIO^412^1|||||||||||||||||V-{control_id}^^^{AUTHORITY}^VN",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def cda_sample() -> bytes:
    # (The CCD sample has more than the 50 updates per transaction the test server takes.)
    return (SAMPLES / "cda" / "DischargeSummary_rousseau-jean-pierre.xml").read_bytes()


def patients(fhir: FhirServer, mrn: str) -> list[dict[str, Any]]:
    return fhir.search_by_identifier("Patient", PATIENT_SYSTEM, mrn)


def bundle_posts(fhir: FhirServer) -> list[dict[str, Any]]:
    """Requests that delivered a bundle (POST to the FHIR base), in arrival order."""
    return [r for r in fhir.requests() if r["method"] == "POST" and r["path"] == "/fhir/R4"]


def history_families(fhir: FhirServer, patient_id: str) -> list[str]:
    """The Patient's family name in each version, oldest first."""
    bundle: dict[str, Any] = fhir._json("GET", f"{fhir.base_url}/Patient/{patient_id}/_history")
    versions = [entry["resource"] for entry in bundle.get("entry", [])]
    versions.sort(
        key=lambda r: (
            r["meta"]["lastUpdated"],
            int(r["meta"]["versionId"]) if str(r["meta"]["versionId"]).isdigit() else 0,
        )
    )
    return [r["name"][0]["family"] for r in versions]


def ordering_key(mrn: str) -> str:
    """The key the MLLP listener gives APP-A^FAC-A's messages about ``mrn``."""
    return f"mllp/APP-A^FAC-A|{mrn}^{AUTHORITY}"


def envelope(control_id: str, mrn: str, family: str, **changes: Any) -> Envelope:
    """An ADT^A08 as the MLLP listener would have stored it (``changes`` override)."""
    stored = Envelope(
        payload=adt(control_id, mrn=mrn, family=family),
        sender="mllp/APP-A^FAC-A",
        listener="mllp",
        received_at=time.time(),
        ordering_key=ordering_key(mrn),
        control_id=control_id,
        message_type="ADT^A08^ADT_A01",
    )
    return dataclasses.replace(stored, **changes)


async def store(config: ServiceConfig, envelopes: Iterable[Envelope]) -> None:
    """Commit envelopes to the partitions as the MLLP listener does."""
    queue = AmqpQueue(config.amqp)
    await queue.start()
    try:
        for item in envelopes:
            await queue.put(item)
    finally:
        await queue.close()


# -- AMQP client ------------------------------------------------------------------------------
class AmqpClient:
    """A plain aio-pika client: confirmed publishing, reading queues, counting."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> Self:
        self._connection = await aio_pika.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def channel(self) -> AbstractChannel:
        assert self._connection is not None
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
        return self._channel

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        **properties: Any,
    ) -> None:
        """Publish persistently and wait for the broker's confirm."""
        channel = await self.channel()
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        properties.setdefault("delivery_mode", aio_pika.DeliveryMode.PERSISTENT)
        await target.publish(aio_pika.Message(body, **properties), routing_key, timeout=10)

    async def get(self, queue: str) -> AbstractIncomingMessage | None:
        """One message of ``queue`` (removed), None when it is empty or not declared yet."""
        channel = await self.channel()
        declared = await channel.get_queue(queue, ensure=False)
        try:
            return await declared.get(no_ack=True, fail=False, timeout=10)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None

    async def take(
        self,
        queue: str,
        count: int,
        *,
        timeout: float = 20.0,
    ) -> list[AbstractIncomingMessage]:
        """Exactly ``count`` messages from ``queue`` (waiting for them), removed from it."""
        found: list[AbstractIncomingMessage] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            message = await self.get(queue)
            if message is not None:
                found.append(message)
                continue
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{queue}: {len(found)} message(s) after {timeout:g}s, expected {count}"
                )
            await asyncio.sleep(0.05)
        return found

    async def counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue``."""
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)
        finally:
            await channel.close()


# -- the service on the test's loop -----------------------------------------------------------
@contextlib.asynccontextmanager
async def running_service(
    config: ServiceConfig,
    *,
    grace: float = 10.0,
    use_threads: bool = True,
) -> AsyncIterator[Service]:
    """:class:`Service` started, stopped on the way out; ``use_threads=False``: real
    conversion processes."""
    service = Service(config, use_threads=use_threads)
    try:
        await service.start()
        yield service
    finally:
        await service.stop(grace)


# -- waiting ----------------------------------------------------------------------------------
async def eventually(
    predicate: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll a blocking ``predicate`` (in a thread) until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """:func:`tests.support.waiting.wait_until` with this suite's (broker-sized) defaults."""
    return waiting.wait_until(predicate, timeout=timeout, interval=interval, what=what)


# -- logs -------------------------------------------------------------------------------------
@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the ``passerelle`` loggers write (JSON lines, DEBUG and up)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("passerelle")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def log_entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


# -- passerelle worker as a process ------------------------------------------------------------
class WorkerProcess:
    """``passerelle worker --config FILE`` with JSON logs, read by a thread."""

    def __init__(self, config_path: Path, name: str) -> None:
        self.name = name
        self.config_path = config_path
        self.log: list[dict[str, Any]] = []
        self._raw: queue.SimpleQueue[str] = queue.SimpleQueue()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
        env["PASSERELLE_LOG_FORMAT"] = "json"
        self._process = subprocess.Popen(
            [PASSERELLE, "worker", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            cwd=config_path.parent,
        )
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"message": line.rstrip("\n"), "raw": True}
            if isinstance(entry, dict):
                self.log.append(entry)

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def owned(self) -> set[str]:
        """Partition queues held now, from the claimed/released log lines."""
        held: set[str] = set()
        for entry in list(self.log):
            message = str(entry.get("message", ""))
            if message.startswith("partition claimed: "):
                held.add(message.removeprefix("partition claimed: "))
            elif message.startswith("partition released: "):
                held.discard(message.removeprefix("partition released: "))
        return held

    def delivered(self) -> list[dict[str, Any]]:
        return [e for e in list(self.log) if e.get("message") == "delivered"]

    def text(self) -> str:
        return "\n".join(json.dumps(e) for e in list(self.log))

    def terminate(self, timeout: float = 30.0) -> int:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait(timeout=10)
        self._pump.join(timeout=10)
        return code

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._pump.join(timeout=10)
