"""Crash-test harness: messages, ``passerelle serve`` as a killable subprocess, MLLP senders
behaving like an interface engine, a TCP proxy to cut the FHIR server off, and the checks.

The promise under test is "what was acknowledged is never lost" (and never delivered as two
resources). A scenario:

* builds distinct ADT messages from the samples (MSH-10, PID-3.1, PV1-19 and the family name
  changed; some patients get several messages, pinned to one connection so that their order is
  defined) — :func:`build_corpus`;
* runs ``python -m listeners.cli serve --config passerelle.toml`` in its own session so that
  ``kill -9`` can hit the whole process tree (or only the main process) — :class:`ServiceProcess`;
* sends with :class:`Fleet`: K concurrent MLLP connections, one message at a time, a message
  without AA/CA sent again after reconnecting (what interface engines do);
* checks, with :func:`verify`, the queue file (one row per control id, all delivered, no dead
  letter) and the FHIR server (for each resource type, the set of ids is exactly the set the
  acknowledged messages convert to — a missing id is a loss, an extra id a duplicate; each
  patient holds its last update).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

from converter import Converter, ConverterConfig
from listeners.config import ConverterSettings
from listeners.mllp.ack import parse_ack
from listeners.mllp.client import MllpClient, MllpClientError
from tests.support.fhirserver import FhirServer

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES = REPO_ROOT / "samples" / "hl7v2"
A01 = SAMPLES / "ADT_A01_admission-full.hl7"
A08 = SAMPLES / "ADT_A08_update-patient.hl7"

#: Resource types the ADT samples produce.
RESOURCE_TYPES = (
    "MessageHeader",
    "Provenance",
    "Patient",
    "Encounter",
    "RelatedPerson",
    "AllergyIntolerance",
    "Condition",
    "Practitioner",
    "Organization",
    "Location",
)


# -- messages -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of the corpus."""

    index: int
    control_id: str
    patient: str
    #: 1 for the patient's first message (A01), 2, 3… for its updates (A08).
    ordinal: int
    payload: bytes

    @property
    def family(self) -> str:
        return family_name(self.ordinal)


def family_name(ordinal: int) -> str:
    """PID-5.1 of a patient's ``ordinal``-th message: tells which update the server holds."""
    return f"DUPONT{ordinal:03d}"


def _segments(path: Path) -> list[list[str]]:
    text = path.read_bytes().decode("utf-8")
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return [line.split("|") for line in lines if line.strip()]


def _first_component(field_value: str, value: str) -> str:
    """``field_value`` with the first component of its first repetition replaced."""
    first, sep, rest = field_value.partition("~")
    _, csep, components = first.partition("^")
    return value + csep + components + sep + rest


def make_message(
    template: list[list[str]], *, control_id: str, patient: str, visit: str, family: str
) -> bytes:
    segments = [list(fields) for fields in template]
    for fields in segments:
        if fields[0] == "MSH":
            fields[9] = control_id
        elif fields[0] == "PID":
            fields[3] = _first_component(fields[3], patient)
            fields[5] = _first_component(fields[5], family)
        elif fields[0] == "PV1":
            fields[19] = _first_component(fields[19], visit)
    return ("\r".join("|".join(fields) for fields in segments) + "\r").encode("utf-8")


def in_original_mode(message: Outgoing) -> Outgoing:
    """The message with MSH-15/16 empty: original acknowledgement mode, the one
    ``ack_after = "delivery"`` answers for (an enhanced-mode ACK is sent at commit)."""
    segments = message.payload.split(b"\r")
    fields = segments[0].split(b"|")
    fields[14:16] = [b"", b""]
    segments[0] = b"|".join(fields)
    return replace(message, payload=b"\r".join(segments))


def build_corpus(
    count: int,
    *,
    repeated_patients: int,
    messages_per_repeated: int,
    prefix: str = "CRASH",
    seed: int = 20240314,
) -> list[Outgoing]:
    """``count`` distinct ADT messages: ``repeated_patients`` patients get
    ``messages_per_repeated`` messages each (an A01 then A08 updates), every other message is
    a new patient's A01. Deterministic for a given seed."""
    rng = random.Random(seed)
    repeated = repeated_patients * messages_per_repeated
    if repeated > count:
        raise ValueError("more repeated messages than messages")
    slots = [f"R{p:05d}" for p in range(repeated_patients) for _ in range(messages_per_repeated)]
    slots += [f"U{u:05d}" for u in range(count - repeated)]
    rng.shuffle(slots)
    a01, a08 = _segments(A01), _segments(A08)
    ordinals: Counter[str] = Counter()
    corpus = []
    for index, patient_key in enumerate(slots):
        ordinals[patient_key] += 1
        ordinal = ordinals[patient_key]
        patient = f"P{patient_key}"
        control_id = f"{prefix}-{index:06d}"
        payload = make_message(
            a01 if ordinal == 1 else a08,
            control_id=control_id,
            patient=patient,
            visit=f"V{patient_key}",
            family=family_name(ordinal),
        )
        corpus.append(Outgoing(index, control_id, patient, ordinal, payload))
    return corpus


def last_update(corpus: Iterable[Outgoing]) -> dict[str, str]:
    """Patient (PID-3.1) → family name of its last message."""
    final: dict[str, tuple[int, str]] = {}
    for message in corpus:
        if message.patient not in final or final[message.patient][0] < message.ordinal:
            final[message.patient] = (message.ordinal, message.family)
    return {patient: family for patient, (_, family) in final.items()}


# -- expected resources ---------------------------------------------------------------------
_converter: Converter | None = None


def _init_converter(config: ConverterConfig) -> None:
    global _converter
    _converter = Converter(config)


def _entry_urls(payload: bytes) -> tuple[str, ...]:
    assert _converter is not None
    urls: list[str] = []
    for conversion in _converter.convert(payload):
        urls.extend(entry["request"]["url"] for entry in conversion.bundle["entry"])
    return tuple(urls)


def expected_entries(
    corpus: Sequence[Outgoing], settings: ConverterSettings | None = None, *, processes: int = 2
) -> dict[str, tuple[str, ...]]:
    """Control id → the ``Type/id`` the service's conversion of the message writes.

    Converted here with the service's converter settings (defaults unless given); validation
    is turned off, it never changes a bundle, only whether one is produced.
    """
    config = replace((settings or ConverterSettings()).converter_config(), validate=False)
    with ProcessPoolExecutor(
        max_workers=processes,
        mp_context=get_context("spawn"),
        initializer=_init_converter,
        initargs=(config,),
    ) as pool:
        results = pool.map(_entry_urls, [m.payload for m in corpus], chunksize=50)
        return {m.control_id: urls for m, urls in zip(corpus, results, strict=True)}


# -- the service as a subprocess ------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, pgid) of a live process, None when gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields_ = text[text.rindex(")") + 2 :].split()
    if fields_[0] == "Z":
        return None
    return int(fields_[1]), int(fields_[2])


def process_group(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] == pgid:
                members.append(int(entry))
    return sorted(members)


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of the resident set sizes of ``pids`` (those still alive)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class ServiceError(AssertionError):
    pass


class EarlyAckError(AssertionError):
    """ack_after="delivery": an AA went out before the FHIR server had the message."""


class ServiceProcess:
    """``passerelle serve`` in its own session (process group = its pid), restartable on the
    same ports and queue file."""

    def __init__(
        self,
        directory: Path,
        *,
        fhir_url: str | None,
        ack_after: str = "commit",
        workers: int = 4,
        convert_processes: int = 2,
        delivery_ack_timeout: float = 60.0,
        destination_timeout: float = 10.0,
        log_level: str = "INFO",
        extra: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.env = None if env is None else {**os.environ, **env}
        directory.mkdir(parents=True, exist_ok=True)
        self.mllp_port = free_port()
        self.http_port = free_port()
        self.queue_path = directory / "queue.db"
        self.log_path = directory / "service.log"
        self.config_path = directory / "passerelle.toml"
        destination = (
            f'[destinations.default]\nurl = "{fhir_url}"\ntimeout = {destination_timeout}\n'
            if fhir_url
            else f'[destinations.default]\nfolder = "{directory / "out"}"\n'
        )
        self.config_path.write_text(
            f'data_dir = "{directory / "data"}"\n'
            f'log_level = "{log_level}"\n'
            "[mllp]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.mllp_port}\n"
            "idle_timeout = 120\n"
            f'ack_after = "{ack_after}"\n'
            f"delivery_ack_timeout = {delivery_ack_timeout}\n"
            "[http]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.http_port}\n"
            "[queue]\n"
            f'path = "{self.queue_path}"\n'
            "[delivery]\n"
            f"workers = {workers}\n"
            f"convert_processes = {convert_processes}\n"
            "backoff_initial = 0.05\n"
            "backoff_max = 0.5\n" + destination + extra,
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        #: Process groups started, to clean up whatever a test leaves behind.
        self._groups: list[int] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 90.0) -> None:
        """Start and wait until MLLP and HTTP answer."""
        if self.running:
            raise ServiceError("the service is already running")
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts + 1} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "listeners.cli", "serve", "--config", str(self.config_path)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        self._groups.append(self.process.pid)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"the service exited at start-up with status {self.process.returncode}"
                    f"\n{self.log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"the service did not start in {timeout:g}s\n{self.log_tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            response = httpx.get(f"{self.base_url}/health", timeout=1.0)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.mllp_port), timeout=1.0),
        ):
            return True
        return False

    def kill(self, *, whole_group: bool = True) -> list[int]:
        """``kill -9`` the service: its whole process tree (a container or host crash), or
        only its main process (what the OOM killer does). Returns the pids killed."""
        assert self.process is not None
        pid = self.process.pid
        victims = process_group(pid) if whole_group else [pid]
        if whole_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.kills += 1
        return victims

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful drain) and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServiceError(f"the service did not stop in {timeout:g}s") from None

    def leftovers(self) -> list[int]:
        """Processes still alive in any process group this service has had."""
        return sorted(pid for group in self._groups for pid in process_group(group))

    def cleanup(self) -> None:
        """Kill whatever is left of every process group started (a test's finalizer)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def conversion_processes(self) -> list[int]:
        """The running service's conversion processes: its children, or the children of
        its multiprocessing fork server (never the fork server or resource tracker)."""
        helpers = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")
        children: dict[int, list[int]] = defaultdict(list)
        for pid in process_group(self.pid):
            stat = _proc_stat(pid)
            if stat is not None:
                children[stat[0]].append(pid)
        found = []
        for pid in children[self.pid]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "multiprocessing.forkserver" in cmdline:
                found.extend(children[pid])
            elif not any(helper in cmdline for helper in helpers):
                found.append(pid)
        return sorted(found)

    def metrics(self) -> dict[str, float]:
        """``GET /metrics``: every sample's value summed by name (labels dropped)."""
        response = httpx.get(f"{self.base_url}/metrics", timeout=5.0)
        response.raise_for_status()
        values: dict[str, float] = defaultdict(float)
        for line in response.text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            with contextlib.suppress(ValueError):
                values[name] += float(value)
        return dict(values)

    def wait_drained(self, timeout: float = 180.0) -> None:
        """Until ``passerelle_queue_depth`` (refreshed every second) reads 0 twice, more than
        a refresh apart."""
        deadline = time.monotonic() + timeout
        zero_since: float | None = None
        depth = -1.0
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                depth = self.metrics().get("passerelle_queue_depth", -1.0)
                if depth == 0:
                    zero_since = zero_since or time.monotonic()
                    if time.monotonic() - zero_since > 1.5:
                        return
                else:
                    zero_since = None
            time.sleep(0.2)
        raise ServiceError(
            f"the queue did not drain in {timeout:g}s (depth {depth:g})\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no service log)"
        return "--- service log (tail) ---\n" + "\n".join(text[-lines:])


# -- a TCP proxy in front of the FHIR server ------------------------------------------------
class TcpProxy:
    """Forwards 127.0.0.1:<port> to the FHIR server; :meth:`down` makes the server unreachable
    (connections in progress reset, new ones refused) without losing its data, :meth:`up`
    brings it back on the same port. Runs its own event loop in a thread."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.StreamWriter] = set()
        self._thread.start()
        self.up()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def up(self) -> None:
        self._call(self._listen())

    def down(self) -> None:
        self._call(self._close())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._transports):
            writer.transport.abort()
        self._transports.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._transports.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                if self._server is None:  # down: reset, like a server that went away
                    dst.transport.abort()
                else:
                    dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._transports.discard(writer)
            self._transports.discard(up_writer)


# -- senders --------------------------------------------------------------------------------
@dataclass
class Fleet:
    """K connections sending like interface engines: one message at a time, resent until it
    gets AA/CA (after reconnecting when there was no ACK, after a pause on AE when
    ``resend_on_error``). Each patient's messages go over one connection, in corpus order."""

    port: int
    corpus: Sequence[Outgoing]
    connections: int
    timeout: float = 20.0
    retry_pause: float = 0.05
    resend_on_error: bool = False
    #: Control id → wall-clock time of its first AA/CA.
    acked: dict[str, float] = field(default_factory=dict)
    #: (control id, code, ERR/MSA text) of every non-AA answer.
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    #: Exchanges that ended without an ACK, by exception type.
    no_ack: Counter[str] = field(default_factory=Counter)
    sends: int = 0
    #: (time sent, seconds to the AA) of every accepted exchange.
    latencies: list[tuple[float, float]] = field(default_factory=list)
    #: Messages from this index on wait for ``gate`` (set it inside the running loop).
    gate_from: int | None = None
    gate: asyncio.Event | None = None
    _stop: bool = False

    def stop(self) -> None:
        self._stop = True

    async def run(self) -> None:
        queues: dict[int, list[Outgoing]] = defaultdict(list)
        for message in self.corpus:  # a patient's messages go over one connection, in order
            queues[zlib.crc32(message.patient.encode()) % self.connections].append(message)
        await asyncio.gather(*(self._connection(q) for q in queues.values()))

    async def _connection(self, messages: list[Outgoing]) -> None:
        client = MllpClient("127.0.0.1", self.port, timeout=self.timeout)
        try:
            for message in messages:
                if (
                    self.gate is not None
                    and self.gate_from is not None
                    and message.index >= self.gate_from
                ):
                    await self.gate.wait()
                while not self._stop:
                    self.sends += 1
                    sent = time.time()
                    started = time.perf_counter()
                    try:
                        reply = await client.send(message.payload)
                    except (OSError, MllpClientError, TimeoutError) as exc:
                        self.no_ack[type(exc).__name__] += 1
                        await asyncio.sleep(self.retry_pause)
                        continue
                    info = parse_ack(reply)
                    if info.success and info.acknowledged_id == message.control_id:
                        self.acked.setdefault(message.control_id, time.time())
                        self.latencies.append((sent, time.perf_counter() - started))
                        break
                    detail = "; ".join(info.texts) or ",".join(info.error_codes)
                    self.rejected.append((message.control_id, info.code, detail))
                    if not self.resend_on_error:
                        break
                    await asyncio.sleep(self.retry_pause * 10)
                if self._stop:
                    return
        finally:
            await client.close()


async def until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


# -- checks ---------------------------------------------------------------------------------
def _sample(items: Iterable[Any], limit: int = 12) -> str:
    items = sorted(items)
    head = ", ".join(map(str, items[:limit]))
    return f"{head}{', …' if len(items) > limit else ''} ({len(items)})"


def queue_rows(queue_path: Path) -> list[tuple[str | None, str, int]]:
    """(control id, state, attempts) of every row of a (stopped) service's queue file."""
    with contextlib.closing(sqlite3.connect(f"file:{queue_path}?mode=ro", uri=True)) as conn:
        return list(conn.execute("SELECT control_id, state, attempts FROM messages"))


def server_ids(server: FhirServer, resource_type: str) -> list[str]:
    """Every id of ``resource_type`` on the server (a list: a repeated id would show)."""
    bundle = server.search(resource_type, _count="20000", _elements="id")
    ids = [entry["resource"]["id"] for entry in bundle.get("entry", [])]
    total = bundle.get("total")
    if total is not None and int(total) != len(ids):
        raise AssertionError(f"{resource_type}: search returned {len(ids)} of {total}")
    return ids


def successful_posts(server: FhirServer) -> int:
    """Transaction bundles the server accepted (its request log)."""
    return sum(
        1
        for r in server.requests()
        if r["method"] == "POST" and r["path"] == "/fhir/R4" and 200 <= (r.get("status") or 0) < 300
    )


@dataclass
class Report:
    """What a scenario observed; printed with ``-s`` / on failure."""

    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"  {k}: {v}" for k, v in self.figures.items()]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


def verify(
    *,
    server: FhirServer,
    queue_path: Path,
    corpus: Sequence[Outgoing],
    fleet: Fleet,
    expected: Mapping[str, tuple[str, ...]],
    report: Report,
    max_redeliveries: int,
) -> None:
    """The checks shared by the scenarios; failures accumulate in ``report.problems``."""
    by_id = {m.control_id: m for m in corpus}
    acked = set(fleet.acked)
    never = set(by_id) - acked
    if never:
        report.problems.append(f"messages never acknowledged: {_sample(never)}")
    if fleet.rejected:
        report.problems.append(
            f"non-AA acknowledgements: {fleet.rejected[:5]} ({len(fleet.rejected)})"
        )

    # The queue: one row per acknowledged control id, delivered.
    rows = queue_rows(queue_path)
    per_id: Counter[str | None] = Counter(cid for cid, _, _ in rows)
    states: dict[str, Counter[str]] = defaultdict(Counter)
    for cid, state, _ in rows:
        states[state][str(cid)] += 1
    report.figures["queue rows"] = dict(Counter(state for _, state, _ in rows))
    report.figures["max attempts of a row"] = max((a for _, _, a in rows), default=0)
    lost_in_queue = acked - {str(c) for c in per_id}
    if lost_in_queue:
        report.problems.append(f"acknowledged but not in the queue: {_sample(lost_in_queue)}")
    stored_twice = {str(c) for c, n in per_id.items() if n > 1}
    if stored_twice:
        report.problems.append(f"stored more than once: {_sample(stored_twice)}")
    for state in ("dead", "pending", "inflight"):
        if states[state]:
            report.problems.append(f"rows left {state}: {_sample(states[state])}")

    # The FHIR server: exactly the resources of the acknowledged messages, each once.
    wanted: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for cid in acked:
        for url in expected[cid]:
            rtype, _, rid = url.partition("/")
            wanted[rtype][rid].add(cid)
    counts: dict[str, int] = {}
    for rtype in sorted(set(RESOURCE_TYPES) | set(wanted)):
        ids = server_ids(server, rtype)
        counts[rtype] = len(ids)
        present = Counter(ids)
        missing = set(wanted[rtype]) - set(present)
        if missing:
            lost = sorted({cid for rid in missing for cid in wanted[rtype][rid]})
            report.problems.append(
                f"{rtype}: {len(missing)} expected resource(s) missing, written by "
                f"acknowledged message(s) {_sample(lost)}"
            )
        extra = set(present) - set(wanted[rtype])
        if extra:
            report.problems.append(f"{rtype}: unexpected (duplicate?) ids {_sample(extra)}")
        twice = {rid for rid, n in present.items() if n > 1}
        if twice:
            report.problems.append(f"{rtype}: ids present more than once {_sample(twice)}")
    report.figures["resources on the server"] = counts

    # Ordering: each patient holds its last update.
    final = last_update(m for m in corpus if m.control_id in acked)
    families: dict[str, str] = {}
    patients = server.search("Patient", _count="20000", _elements="identifier,name")
    for entry in patients.get("entry", []):
        resource = entry["resource"]
        mrn = next(
            (i["value"] for i in resource.get("identifier", []) if i.get("value") in final),
            None,
        )
        if mrn is not None:
            families[mrn] = resource.get("name", [{}])[0].get("family", "")
    stale = {p: (families.get(p), f) for p, f in final.items() if families.get(p) != f}
    if stale:
        report.problems.append(
            f"patients not holding their last update (server, expected): "
            f"{list(stale.items())[:8]} ({len(stale)})"
        )

    posts = successful_posts(server)
    redeliveries = posts - len(acked)
    report.figures["bundles accepted by the server"] = posts
    report.figures["redeliveries (at-least-once)"] = redeliveries
    if redeliveries > max_redeliveries:
        report.problems.append(
            f"{redeliveries} redeliveries, more than the {max_redeliveries} a crash can explain"
        )
