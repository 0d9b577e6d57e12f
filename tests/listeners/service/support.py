"""Helpers of the service tests: messages, a running service, real clients, metrics.

The service runs for real: :class:`RunningService` starts :class:`listeners.service.Service`
on its own event loop in a background thread (MLLP and HTTP on ephemeral ports, conversion in
a real process pool), so tests drive it with ordinary blocking clients — ``MllpClient``,
python-hl7's ``mllp_send``, ``passerelle send``, httpx, the ``passerelle`` command line — while
it runs. :class:`ServeProcess` runs ``passerelle serve`` as a subprocess instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from listeners.config import ServiceConfig, load_config
from listeners.mllp import AckInfo, MllpClient, parse_ack
from listeners.mllp.framing import frame
from listeners.queue.sqlite import SqliteQueue
from listeners.service import Service
from tests.support import waiting
from tests.support.fhirserver import FhirServer

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES = REPO_ROOT / "samples" / "hl7v2"
BIN = Path(sys.executable).parent
PASSERELLE = str(BIN / "passerelle")
MLLP_SEND = str(BIN / "mllp_send")

#: Assigning authority of the test messages' MRNs (PID-3.4) and the identifier system.
AUTHORITY = "HOSP&1.2.250.1.999.7&ISO"
PATIENT_SYSTEM = "urn:oid:1.2.250.1.999.7"

#: Settings every test configuration starts from: loopback, ephemeral ports, fast retries.
BASE_SETTINGS: dict[str, dict[str, Any]] = {
    "": {"data_dir": "data", "log_level": "DEBUG"},
    "mllp": {"host": "127.0.0.1", "port": 0, "idle_timeout": 30},
    "http": {"host": "127.0.0.1", "port": 0},
    "queue": {"commit_interval_ms": 1},
    "delivery": {
        "workers": 4,
        "convert_processes": 1,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
    },
}


# -- messages ---------------------------------------------------------------------------------
_STRUCTURES = {"A01": "ADT_A01", "A04": "ADT_A01", "A08": "ADT_A01", "A03": "ADT_A03"}


def adt(
    control_id: str,
    *,
    event: str = "A01",
    family: str = "Testpatient",
    given: str = "Alice",
    birth_date: str = "19800101",
    mrn: str = "MRN-0001",
    application: str = "APP-A",
    facility: str = "FAC-A",
    version: str = "2.5.1",
    msh9: str | None = None,
    accept_ack: str = "",
    application_ack: str = "",
    processing_id: str = "P",
    charset: str = "",
    encoding: str = "utf-8",
) -> bytes:
    """A small ADT message (MSH, EVN, PID, PV1), segments ending in CR.

    ``charset`` is written in MSH-18 as given; ``encoding`` is the byte encoding actually
    used, so a test can send Latin-1 bytes with or without MSH-18 saying so.
    """
    msh9 = msh9 or f"ADT^{event}^{_STRUCTURES.get(event, 'ADT_A01')}"
    msh = [
        "MSH",
        "^~\\&",
        application,
        facility,
        "PASSERELLE",
        "GHT",
        "20240314083512+0100",
        "",
        msh9,
        control_id,
        processing_id,
        version,
        "",
        "",
        accept_ack,
        application_ack,
        "",
        charset,
    ]
    while msh[-1] == "":
        msh.pop()
    segments = [
        "|".join(msh),
        f"EVN|{event}|20240314083512+0100",
        f"PID|1||{mrn}^^^{AUTHORITY}^MR||{family}^{given}||{birth_date}|F",
        f"PV1|1|I|CARDIO^412^1|||||||||||||||||V-{control_id}^^^{AUTHORITY}^VN",
    ]
    return ("\r".join(segments) + "\r").encode(encoding)


def latin_name_adt(control_id: str, mrn: str, *, charset: str = "", encoding: str) -> bytes:
    """An ADT^A08 for ``Lefèvre^Zoé``: a name whose bytes differ in Latin-1 and UTF-8."""
    return adt(
        control_id,
        event="A08",
        family="Lefèvre",
        given="Zoé",
        mrn=mrn,
        charset=charset,
        encoding=encoding,
    )


def sample(name: str) -> bytes:
    """A sample message with CR segment terminators."""
    data = (SAMPLES / name).read_bytes()
    return data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def control_id_of(message: bytes) -> str:
    return message.split(b"\r", 1)[0].decode("latin-1").split("|")[9]


# -- configuration ----------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def render_toml(settings: Mapping[str, Mapping[str, Any]], extra: str = "") -> str:
    """TOML text: ``settings`` maps a table name ("" = top level) to its keys."""
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.get("", {}).items()]
    for table, values in settings.items():
        if table:
            lines.append(f"\n[{table}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n" + extra


def write_config(
    directory: Path,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    extra: str = "",
) -> Path:
    """``directory/passerelle.toml``: the base settings updated by ``settings`` (a None value
    removes a key), then ``extra`` (TOML text, e.g. ``[[routes]]`` tables)."""
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BASE_SETTINGS.items()}
    for table, values in (settings or {}).items():
        merged.setdefault(table, {}).update(values)
        for key in [k for k, v in values.items() if v is None]:
            del merged[table][key]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "passerelle.toml"
    path.write_text(render_toml(merged, extra), encoding="utf-8")
    return path


def make_config(
    directory: Path,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    extra: str = "",
    *,
    fhir_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ServiceConfig:
    """A configuration read from a real TOML file (and ``env``), as ``passerelle serve`` does."""
    environment = dict(env or {})
    if fhir_url is not None:
        environment["PASSERELLE_FHIR_URL"] = fhir_url
    return load_config(write_config(directory, settings, extra), env=environment)


# -- the FHIR server --------------------------------------------------------------------------
def fresh(server: FhirServer) -> FhirServer:
    """``server`` running (restarted if a test stopped it) and emptied."""
    if not server.running:
        server.restart()
    server.reset()
    return server


def patients(server: FhirServer, mrn: str) -> list[dict[str, Any]]:
    return server.search_by_identifier("Patient", PATIENT_SYSTEM, mrn)


def bundle_posts(server: FhirServer) -> list[dict[str, Any]]:
    """Requests that delivered a bundle (POST to the FHIR base), in arrival order."""
    return [r for r in server.requests() if r["method"] == "POST" and r["path"] == "/fhir/R4"]


# -- waiting ----------------------------------------------------------------------------------
wait_until = waiting.wait_until


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a client scenario on a fresh loop (in the test thread); a hang fails."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# -- metrics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricsSnapshot:
    """Samples of one ``GET /metrics`` answer."""

    samples: tuple[tuple[str, Mapping[str, str], float], ...]

    @classmethod
    def parse(cls, text: str) -> MetricsSnapshot:
        samples = []
        for family in text_string_to_metric_families(text):
            for sample_ in family.samples:
                samples.append((sample_.name, dict(sample_.labels), float(sample_.value)))
        return cls(tuple(samples))

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        )

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}


# -- the service in a background thread -------------------------------------------------------
class RunningService:
    """:class:`Service` started on its own event loop in a thread (see the module docstring)."""

    def __init__(
        self, config: ServiceConfig, *, stop_grace: float = 10.0, use_threads: bool = False
    ) -> None:
        self.config = config
        # use_threads: conversions in threads of this process, where a test can patch them.
        self.service = Service(config, use_threads=use_threads)
        self._stop_grace = stop_grace
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopped = False

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            self.call(self.service.start(), timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._thread.is_alive():
                self.call(self.service.stop(self._stop_grace), timeout=self._stop_grace + 30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    # -- addresses ----------------------------------------------------------------------------
    def mllp_port(self, listener: str = "mllp") -> int:
        assert self.service.mllp is not None
        return self.service.mllp.addresses[listener][1]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    # -- observations -------------------------------------------------------------------------
    def metrics(self) -> MetricsSnapshot:
        response = httpx.get(f"{self.http_url}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        return MetricsSnapshot.parse(response.text)

    def depth(self) -> int:
        return self.call(self.service.queue.depth())

    def drained(self, timeout: float = 20.0) -> None:
        """Wait until every stored message is delivered or dead-lettered."""
        wait_until(lambda: self.depth() == 0, timeout=timeout, what="an empty queue")

    def send(
        self,
        messages: Sequence[bytes],
        *,
        listener: str = "mllp",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 20.0,
    ) -> list[AckInfo]:
        """Send on one connection, one at a time; the parsed ACKs."""
        return send_mllp(
            self.mllp_port(listener), messages, ssl_context=ssl_context, timeout=timeout
        )


@contextlib.contextmanager
def running(config: ServiceConfig, **kwargs: Any) -> Iterator[RunningService]:
    with RunningService(config, **kwargs) as service:
        yield service


@contextlib.contextmanager
def queue_writer_held(service: RunningService) -> Iterator[threading.Event]:
    """The running service's SQLite queue writer held in one operation (a disk that stops
    answering an fsync) until the block ends; yields the event set once it is held."""
    from listeners.queue.sqlite import SqliteQueue

    store = service.service.queue
    assert isinstance(store, SqliteQueue)
    held, release = threading.Event(), threading.Event()

    def stuck(conn: sqlite3.Connection) -> tuple[None, int]:
        held.set()
        release.wait(60)
        return None, 0

    async def block() -> None:
        store._writer.submit(stuck)  # not awaited: the writer is held by it

    service.call(block())
    try:
        yield held
    finally:
        release.set()


# -- clients ----------------------------------------------------------------------------------
def send_mllp(
    port: int,
    messages: Sequence[bytes],
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 20.0,
    server_hostname: str | None = None,
) -> list[AckInfo]:
    """Send ``messages`` with :class:`MllpClient` on one connection; the parsed ACKs."""

    async def scenario() -> list[AckInfo]:
        acks = []
        async with MllpClient(
            "127.0.0.1",
            port,
            ssl_context=ssl_context,
            timeout=timeout,
            server_hostname=server_hostname,
        ) as client:
            for message in messages:
                acks.append(parse_ack(await client.send(message)))
        return acks

    return run(scenario(), timeout=timeout * (len(messages) + 1))


def mllp_send_cli(port: int, messages: Sequence[bytes], tmp: Path) -> list[AckInfo]:
    """Send with python-hl7's ``mllp_send`` (a framed file, one connection); the ACKs."""
    path = tmp / f"mllp-send-{time.monotonic_ns()}.hl7"
    path.write_bytes(b"".join(frame(m) for m in messages))
    result = subprocess.run(
        [MLLP_SEND, "--file", str(path), "--port", str(port), "127.0.0.1"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    acks = [part.strip(b"\x0b\r\n") for part in result.stdout.split(b"\x1c")]
    return [parse_ack(ack) for ack in acks if ack]


def passerelle(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real ``passerelle`` command; stdout and stderr captured as text."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    environment.update(env or {})
    return subprocess.run(
        [PASSERELLE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=cwd,
        check=False,
    )


# -- passerelle serve as a subprocess ---------------------------------------------------------
class ServeProcess:
    """``passerelle serve --config FILE`` with JSON logs; ports read from its log lines."""

    def __init__(self, config_path: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
        environment.update({"PASSERELLE_LOG_FORMAT": "json", **(env or {})})
        self._env = environment
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self._pump: threading.Thread | None = None
        self.mllp_ports: dict[str, int] = {}
        self.http_port = 0

    def start(self, timeout: float = 60.0) -> Self:
        self._process = subprocess.Popen(
            [PASSERELLE, "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self._env,
            cwd=self.config_path.parent,
        )
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while not self.http_port:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.01, remaining))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                self.kill()
                pytest.fail("passerelle serve did not start:\n" + "\n".join(self.log[-40:]))
            entry = _json_line(line or "")
            if entry.get("message") == "MLLP listener ready":
                self.mllp_ports[entry["listener"]] = int(entry["port"])
            elif entry.get("message") == "HTTP API ready":
                self.http_port = int(entry["port"])
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.log.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit status."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> int:
        assert self._process is not None
        code = self._process.wait(timeout=timeout)
        if self._pump is not None:
            self._pump.join(timeout=10)
        return code

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        if self._pump is not None:
            self._pump.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def entries(self) -> list[dict[str, Any]]:
        """The JSON log entries so far."""
        return [entry for entry in map(_json_line, self.log) if entry]


def _json_line(line: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def limit_queue_pages(service: RunningService, extra_pages: int | None) -> None:
    """SQLite's own "database or disk is full" (SQLITE_FULL) in the running service's
    queue: the file may not grow beyond its size + ``extra_pages`` (None: no limit), as
    on a full volume."""
    store = service.service.queue
    assert isinstance(store, SqliteQueue)

    def limit(conn: sqlite3.Connection) -> tuple[None, int]:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(
            f"PRAGMA max_page_count = {2**31 - 2 if extra_pages is None else pages + extra_pages}"
        )
        return None, 0

    service.call(store._submit(limit))


# -- conversion processes on a loaded host ----------------------------------------------------
def compile_templates(config: ServiceConfig, messages: Sequence[bytes]) -> None:
    """Convert ``messages`` here, before the service starts, with its default route's
    converter settings and its template cache (``data_dir/template-cache``): its
    conversion processes then load their compiled templates instead of compiling them
    within their first messages' ``delivery.conversion_timeout`` (a process runs at
    nice 10: on a loaded host, compiling takes it tens of seconds)."""
    from dataclasses import replace

    from converter import Converter
    from listeners.file_modes import template_cache_dir

    converter = Converter(
        replace(
            config.default_route().converter.converter_config(),
            template_cache_dir=template_cache_dir(config.data_dir),
        )
    )
    for message in messages:
        converter.convert(message)
