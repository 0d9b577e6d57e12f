"""``passerelle serve`` as a real process and the signals that stop it.

SIGHUP comes when the terminal, the ssh session or the multiplexer pane the service was
started from goes away, and from some supervisors: Python's default ended the process at
once, without the drain SIGTERM gets.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from converter import ConverterConfig
from listeners.conversion import ConversionPool
from listeners.mllp import parse_ack
from listeners.mllp.framing import FrameDecoder, frame
from tests.listeners.service.support import (
    PASSERELLE,
    ServeProcess,
    adt,
    patients,
    wait_until,
    write_config,
)
from tests.support.fhirserver import FhirServer


def _read_frame(sock: socket.socket, timeout: float) -> bytes | None:
    """The first frame the service sends on ``sock``, or None when it closes first."""
    decoder = FrameDecoder()
    sock.settimeout(timeout)
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        for item in decoder.feed(data):
            assert isinstance(item, bytes)
            return item


def _logged(serve: ServeProcess, message: str) -> bool:
    return any(entry.get("message") == message for entry in serve.entries())


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_sighup_drains_like_sigterm_the_waiting_sender_gets_its_ack(
    signum: signal.Signals, tmp_path: Path, fhir: FhirServer
) -> None:
    """A sender waiting for its ACK (``ack_after = "delivery"``, a slow FHIR server) when
    the signal arrives gets its AA once the server took the bundle, and the service exits
    0 after its graceful stop. Before, SIGHUP killed the process at once: no ACK (the
    sender sends again), the delivery cut off, no ``stopped`` line, killed by a signal."""
    fhir.delay(2500, count=1)
    config = write_config(
        tmp_path,
        {
            "destinations.default": {"url": fhir.base_url},
            "mllp": {"ack_after": "delivery", "delivery_ack_timeout": 20},
        },
    )
    with ServeProcess(config) as serve:
        with socket.create_connection(("127.0.0.1", serve.mllp_ports["mllp"])) as sock:
            sock.sendall(frame(adt("HUP-1", mrn="MRN-HUP-1")))
            wait_until(lambda: _logged(serve, "stored"), what="the message stored")
            time.sleep(0.5)  # its delivery under way, held by the slow server
            os.kill(serve.pid, signum)
            reply = _read_frame(sock, timeout=30)
        assert serve.wait(timeout=60) == 0
    assert reply is not None, "no ACK: the signal cut the waiting sender off"
    ack = parse_ack(reply)
    assert (ack.code, ack.acknowledged_id) == ("AA", "HUP-1")
    assert patients(fhir, "MRN-HUP-1")
    assert _logged(serve, "stopping") and _logged(serve, "stopped")


def test_a_second_signal_while_draining_exits_at_once(tmp_path: Path, fhir: FhirServer) -> None:
    """SIGHUP then SIGTERM while a delivery holds the drain: the second one exits at once
    with status 1 (what was acknowledged is stored; the delivery is made after restart)."""
    fhir.delay(20_000, count=1)
    config = write_config(tmp_path, {"destinations.default": {"url": fhir.base_url}})
    with ServeProcess(config) as serve:
        with socket.create_connection(("127.0.0.1", serve.mllp_ports["mllp"])) as sock:
            sock.sendall(frame(adt("HUP-2", mrn="MRN-HUP-2")))
            assert _read_frame(sock, timeout=30) is not None
        wait_until(lambda: _logged(serve, "stored"), what="the message stored")
        time.sleep(0.5)
        os.kill(serve.pid, signal.SIGHUP)
        wait_until(lambda: _logged(serve, "stopping"), what="the drain to begin")
        started = time.monotonic()
        os.kill(serve.pid, signal.SIGTERM)
        assert serve.wait(timeout=15) == 1
        assert time.monotonic() - started < 10
    assert _logged(serve, "second signal while stopping: exiting now")


def test_sighup_ignored_by_the_parent_stays_ignored(tmp_path: Path) -> None:
    """Under ``nohup`` (SIGHUP ignored when the service starts) a hang-up changes nothing:
    the service goes on serving, as the operator asked; SIGTERM still stops it."""
    config = write_config(tmp_path, {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    env["PASSERELLE_LOG_FORMAT"] = "json"
    process = subprocess.Popen(
        [PASSERELLE, "serve", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        # What nohup does before exec'ing the command.
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        assert process.stdout is not None
        mllp_port = 0
        for line in process.stdout:
            if '"MLLP listener ready"' in line:
                mllp_port = int(json.loads(line)["port"])
            if '"HTTP API ready"' in line:
                break
        assert mllp_port, "passerelle serve did not start"
        process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert process.poll() is None, "SIGHUP stopped a service started under nohup"
        with socket.create_connection(("127.0.0.1", mllp_port)) as sock:
            sock.sendall(frame(adt("NOHUP-1")))
            reply = _read_frame(sock, timeout=30)
        assert reply is not None and parse_ack(reply).acknowledged_id == "NOHUP-1"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_closing_the_terminal_stops_the_service_gracefully(tmp_path: Path) -> None:
    """``passerelle serve`` run from a terminal (a pty) that goes away, as when an ssh
    session drops: the kernel sends SIGHUP. The acknowledged message is delivered, the
    queue closed (its WAL checkpointed away) and the exit status 0; before, the process
    died at once (killed by SIGHUP), the message still undelivered."""
    config = write_config(tmp_path, {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    env["PASSERELLE_LOG_FORMAT"] = "json"
    pid, terminal = pty.fork()
    if pid == 0:  # the child: exec at once
        os.chdir(tmp_path)
        os.execve(PASSERELLE, [PASSERELLE, "serve", "--config", str(config)], env)
    try:
        output = b""
        deadline = time.monotonic() + 60
        while b"HTTP API ready" not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 1.0)
            if ready:
                output += os.read(terminal, 65536)
        lines = output.decode("utf-8", "replace").splitlines()
        ports = [json.loads(line)["port"] for line in lines if "MLLP listener ready" in line]
        assert ports, "passerelle serve did not start:\n" + "\n".join(lines[-20:])
        with socket.create_connection(("127.0.0.1", ports[0])) as sock:
            sock.sendall(frame(adt("PTY-1")))
            reply = _read_frame(sock, timeout=30)
        assert reply is not None and parse_ack(reply).code == "AA"
        os.close(terminal)  # the terminal goes away
        terminal = -1
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
        data = tmp_path / "data"
        assert len(list((data / "out").rglob("*.json"))) == 1
        assert not (data / "queue.db-wal").exists()
    finally:
        if terminal >= 0:
            os.close(terminal)
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_a_conversion_process_outlives_a_sighup() -> None:
    """A hang-up reaching the whole process group (the terminal closed) must leave the
    conversion processes to the service's drain: killed by it, the conversion in progress
    failed with BrokenProcessPool and the pool was replaced during the stop."""
    pool = ConversionPool({"default": ConverterConfig()}, processes=1)
    try:
        pool.warm_up()
        pid = pool._executor.submit(os.getpid).result(timeout=30)
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.5)
        os.kill(pid, 0)  # still there (ProcessLookupError otherwise)
        [result] = asyncio.run(pool.convert("default", adt("HUP-3")))  # type: ignore[misc]
    finally:
        pool.close()
    assert result.control_id == "HUP-3"
    assert pool.restarts == 0
