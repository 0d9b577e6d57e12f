"""A second SIGTERM while ``passerelle serve`` drains: out at once, and quietly (session 27).

The second signal exits with ``os._exit(1)``, skipping multiprocessing's exit hook, which
unlinks the named semaphores of the conversion pool's queues. Multiprocessing's resource
tracker (a process of its own, writing to the service's stderr) then found them still
registered and printed ``UserWarning: resource_tracker: There appear to be 5 leaked
semaphore objects to clean up at shutdown``: an operator reading it went looking for a
leak. A real ``passerelle serve`` process, its stderr read to the end (every process
holding it, the resource tracker's and the conversion processes' too, gone).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from listeners.mllp.framing import FrameDecoder, frame
from tests.listeners.service.support import PASSERELLE, adt, write_config


@pytest.fixture
def silent_fhir() -> Iterator[str]:
    """The base URL of a server that takes connections and never answers: a delivery to
    it holds the drain (``destinations.default.timeout``, 30 s, is longer than the test)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        held: list[socket.socket] = []
        stop = threading.Event()

        def take() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(server.accept()[0])
                except TimeoutError:
                    continue

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        try:
            yield f"http://127.0.0.1:{server.getsockname()[1]}/fhir"
        finally:
            stop.set()
            taker.join(timeout=5)
            for connection in held:
                connection.close()


def _entries(lines: list[str]) -> list[dict[str, object]]:
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _ack(port: int, message: bytes) -> bytes:
    decoder = FrameDecoder()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(frame(message))
        while True:
            data = sock.recv(65536)
            assert data, "closed without an ACK"
            for item in decoder.feed(data):
                assert isinstance(item, bytes)
                return item


def test_a_second_sigterm_while_draining_exits_at_once_without_a_leak_warning(
    tmp_path: Path, silent_fhir: str
) -> None:
    config = write_config(tmp_path, {"destinations.default": {"url": silent_fhir}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    env["PASSERELLE_LOG_FORMAT"] = "json"
    process = subprocess.Popen(
        [PASSERELLE, "serve", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        cwd=tmp_path,
    )
    stderr: list[str] = []
    arrived: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            stderr.append(line.rstrip("\n"))
            arrived.put(line)
        arrived.put(None)  # EOF: every process holding the service's stderr is gone

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def wait_for(message: str, timeout: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            for entry in _entries(stderr):
                if entry.get("message") == message:
                    return entry
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {message!r} logged:\n" + "\n".join(stderr[-40:]))
            if arrived.get(timeout=remaining) is None:
                pytest.fail(f"exited before {message!r}:\n" + "\n".join(stderr[-40:]))

    try:
        port = int(str(wait_for("MLLP listener ready")["port"]))
        wait_for("HTTP API ready")
        assert b"|AA|" in _ack(port, adt("TERM-2", mrn="MRN-TERM-2"))
        wait_for("stored")
        time.sleep(0.5)  # its delivery under way, held by the silent server
        process.send_signal(signal.SIGTERM)
        wait_for("stopping")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 1
        assert time.monotonic() - started < 10
        reader.join(timeout=30)
        assert not reader.is_alive(), "a process of the service still holds its stderr"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert any(
        e.get("message") == "second signal while stopping: exiting now" for e in _entries(stderr)
    )
    others = [line for line in stderr if line.strip() and not line.startswith("{")]
    assert not others, "\n".join(others)
