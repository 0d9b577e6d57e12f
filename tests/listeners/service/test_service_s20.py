"""Session 20: the service's lifecycle, delivery deletes, the CLI output, the queue.

Each test drives the real thing (a local HTTP server, ``passerelle`` processes, pipes,
signals, SQLite files) and fails without the fix it names.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from converter import Converter, ConverterConfig, json_dumps, json_loads
from listeners.config import DestinationConfig
from listeners.delivery import FhirServerSink
from listeners.errors import RejectedDeliveryError
from tests.listeners.delivery.helpers import make_envelope
from tests.listeners.service.support import (
    PASSERELLE,
    ServeProcess,
    make_config,
    running,
    write_config,
)
from tests.support.loop_stall import longest_stall
from tests.support.stop_signals import ENV, big_oru

# -- 1. a rejected large bundle is not parsed on the event loop (delivery/deletes.py) --------
#: Results of a large laboratory report: many small values, as real resources have.
_ENTRIES = 20_000
_PARTS = [
    {"code": {"text": f"part {k}"}, "valueQuantity": {"value": k, "unit": "mg"}} for k in range(12)
]
_OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}


def _large_bundle() -> bytes:
    entries: list[dict[str, object]] = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
            "resource": {"resourceType": "Observation", "id": f"o{n}", "component": _PARTS},
            "request": {"method": "PUT", "url": f"Observation/o{n}"},
        }
        for n in range(_ENTRIES)
    ]
    entries.append({"request": {"method": "DELETE", "url": "Patient/p1"}})
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


class _Refusing(ThreadingHTTPServer):
    """Answers every POST with ``status`` and an OperationOutcome; GET metadata with a
    CapabilityStatement (a FHIR server is there), GET of a resource with the resource (the
    DELETE target is present: the rejection stands)."""

    daemon_threads = True

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _RefusingHandler)
        self.status = status


class _RefusingHandler(BaseHTTPRequestHandler):
    server: _Refusing

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(self.server.status, _OUTCOME)

    def do_GET(self) -> None:
        if self.path.endswith("/metadata"):
            self._answer(200, {"resourceType": "CapabilityStatement"})
        else:
            self._answer(200, {"resourceType": "Patient", "id": "p1"})


@pytest.fixture(scope="module")
def large_bundle() -> bytes:
    return _large_bundle()


@pytest.fixture
def refusing_server(request: pytest.FixtureRequest) -> Iterator[str]:
    server = _Refusing(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("refusing_server", [400, 404], indirect=True)
def test_a_large_rejected_bundle_does_not_stall_the_event_loop(
    refusing_server: str, large_bundle: bytes
) -> None:
    # A 400 is no answer about a DELETE: the bundle was parsed all the same, on the loop.
    # A 404 with an OperationOutcome is checked: the bundle is read off the loop, in steps.
    began = time.perf_counter()
    json.loads(large_bundle)
    parse = time.perf_counter() - began
    assert parse > 0.2, "the bundle is too small to tell a stall on this machine"

    async def scenario() -> tuple[float, BaseException | None]:
        sink = FhirServerSink(DestinationConfig(name="test", url=refusing_server, timeout=120.0))
        async with sink:
            delivery = asyncio.ensure_future(sink.deliver(large_bundle, make_envelope()))
            stall = await longest_stall(delivery)
            return stall, delivery.exception()

    # The shortest of up to three deliveries: on a loaded 2-core host one step can wait
    # for the CPU (0.21 s once, against 0.59 s for the whole parse). A bundle parsed on
    # the loop stalls it for the whole parse every time.
    stalls = []
    for _ in range(3):
        stall, error = asyncio.run(scenario())
        assert isinstance(error, RejectedDeliveryError)
        stalls.append(stall)
        if stall < parse / 3:
            break
    assert min(stalls) < parse / 3, (stalls, parse)


# -- 2. a stop signal during start-up (listeners/entry.py, listeners/stop_signals.py) -----------
#: The ``passerelle`` console script, with the signal sent to itself right after the entry
#: point's module ran and before the command's modules are imported (seconds on a loaded
#: host): where a supervisor's SIGTERM lands when it stops a service that is starting.
_SIGNALLED_AT_START = (
    "import os, sys\n"
    "sys.argv[0] = {script!r}\n"
    "from listeners.entry import main\n"
    "os.kill(os.getpid(), {signum})\n"
    "sys.exit(main())\n"
)


def _signalled_at_start(
    command: str, config: Path, directory: Path, signum: signal.Signals
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``passerelle COMMAND`` sent ``signum`` while it imports its modules: the process
    and the messages it logged (JSON lines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    env["PASSERELLE_LOG_FORMAT"] = "json"
    code = _SIGNALLED_AT_START.format(script=PASSERELLE, signum=int(signum))
    done = subprocess.run(
        [sys.executable, "-c", code, command, "--config", str(config)],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    messages = [
        json.loads(line)["message"]
        for line in (done.stdout + done.stderr).splitlines()
        if line[:1] == "{"
    ]
    return done, messages


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_while_serve_imports_its_modules_stops_it_cleanly(
    signum: signal.Signals, tmp_path: Path
) -> None:
    # Python's default ended the process there: status -15 / -1, no log line. Nothing was
    # lost (no port bound yet, the queue not opened), but a supervisor saw a crash.
    config = write_config(tmp_path)
    done, messages = _signalled_at_start("serve", config, tmp_path, signum)
    assert done.returncode == 0, done.stdout + done.stderr
    assert messages == [f"{signum.name} received: stopping gracefully", "stopping", "stopped"]
    # Nothing was started: no port bound, the queue never opened.
    assert not (tmp_path / "data").exists()


def test_a_stop_signal_while_worker_imports_its_modules_stops_it_without_connecting(
    tmp_path: Path,
) -> None:
    # The same for ``passerelle worker``: it stops without starting. The broker URL names a
    # port nothing listens on; started, the worker would log its connection attempts.
    config = tmp_path / "passerelle.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[http]\nhost = "127.0.0.1"\nport = 0\n'
        '[queue]\nbackend = "amqp"\n'
        '[amqp]\nurl = "amqp://guest:guest@127.0.0.1:9/"\n',
        encoding="utf-8",
    )
    done, messages = _signalled_at_start("worker", config, tmp_path, signal.SIGTERM)
    assert done.returncode == 0, done.stdout + done.stderr
    assert messages[0] == "SIGTERM received: stopping gracefully", messages
    assert not any("connect" in message.lower() for message in messages), messages


# -- 3. convert printing a large bundle on a pipe, stopped (converter/cli_convert.py) ----------
def test_sigterm_while_a_large_bundle_fills_the_stdout_pipe_is_a_clear_failure(
    tmp_path: Path,
) -> None:
    # The bundle (megabytes) fills the pipe: the process blocks in the write until the
    # reader reads, and the signal lands there. What the reader got is cut off: the exit
    # status says the run was stopped, and stderr now says that the bundle is incomplete.
    source = tmp_path / "big.hl7"
    source.write_bytes(big_oru(1000))
    process = subprocess.Popen(
        [PASSERELLE, "convert", str(source), "--no-validate"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.read(1)  # the write has begun
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        output = first + process.stdout.read()
        errors = process.stderr.read().decode()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(ValueError):
        json.loads(output)  # never whole: megabytes would not fit the pipe before the signal
    assert process.returncode == 143, errors
    assert "terminated after 0 of 1 inputs (the bundle being printed was cut off)" in errors
    assert "Traceback" not in errors


# -- review: POST /convert of a large message does not stall the service (http/api.py) -------
_CLIENT = (
    "import sys, httpx\n"
    "data = open(sys.argv[2], 'rb').read()\n"
    "response = httpx.post(sys.argv[1], content=data, timeout=600)\n"
    "open(sys.argv[3], 'wb').write(response.content)\n"
    "print(response.status_code)\n"
)


def _round_trip(text: bytes | str) -> float:
    """The fastest of two parse-and-write runs of ``text``: what the loop would stand still."""
    took = []
    for _ in range(2):
        began = time.perf_counter()
        json_dumps(json_loads(text))
        took.append(time.perf_counter() - began)
    return min(took)


def _oru_sized_for_this_machine(seconds: float) -> bytes:
    """An ORU whose bundle takes at least ``seconds`` to parse and write here: the stall is
    measured against that time, so a fast machine gets a larger message (a fixed size was
    too small on CI's)."""
    converter = Converter(ConverterConfig())
    count = 500
    for _ in range(4):
        message = big_oru(count)
        took = _round_trip(converter.convert(message)[0].to_json())
        if took >= seconds:
            return message
        count = math.ceil(count * 1.5 * seconds / took)
    raise AssertionError(f"{count} results still parse and write in under {seconds}s")


def test_a_large_bundle_answered_by_the_http_api_does_not_stall_the_event_loop(
    tmp_path: Path,
) -> None:
    # The conversion runs in the pool, but its JSON text was parsed (json_loads) and
    # written again (json_dumps) on the service's event loop to be answered: MLLP ACKs,
    # /ready and the deliveries waited that long. The client runs in its own process, so
    # that its reading does not take the GIL from the service.
    source = tmp_path / "big.hl7"
    source.write_bytes(_oru_sized_for_this_machine(0.4))
    answer = tmp_path / "answer.json"
    config = make_config(tmp_path / "service", {"delivery": {"conversion_timeout": 600}})
    with running(config) as service:
        loop = service._loop

        async def future() -> asyncio.Future[None]:
            return loop.create_future()

        work = service.call(future())
        stall = asyncio.run_coroutine_threadsafe(longest_stall(work), loop)
        client = subprocess.run(
            [sys.executable, "-c", _CLIENT, f"{service.http_url}/convert", source, answer],
            capture_output=True,
            text=True,
            timeout=900,
        )
        loop.call_soon_threadsafe(work.set_result, None)
        longest = stall.result(60)
    assert client.stdout.strip() == "200", client.stderr
    text = answer.read_bytes()
    round_trip = _round_trip(text)
    assert round_trip > 0.15, "the bundle is too small to tell a stall on this machine"
    assert json_loads(text)["resourceType"] == "Bundle"
    assert longest < round_trip / 3, (longest, round_trip)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``signum`` (/proc, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_conversion_processes_keep_sigterms_default(tmp_path: Path) -> None:
    # They re-run the console script with the service's argv: keeping SIGTERM for later
    # there, ProcessPoolExecutor's SIGTERM to the survivors of a broken pool would leave
    # them running.
    with ServeProcess(write_config(tmp_path)) as serve:
        workers = [
            worker
            for child in _children(serve.pid)
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()
            for worker in _children(child)
        ]
        assert workers, "no conversion process found"
        assert not any(_catches(worker, signal.SIGTERM) for worker in workers)
        assert _catches(serve.pid, signal.SIGTERM)  # the service's own loop handler
