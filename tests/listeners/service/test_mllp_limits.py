"""The MLLP limits in the running service: max_connections per listener, frame_timeout,
their metric, and a flood of idle connections on one listener under a low file-descriptor
limit, which once starved every other listener and the HTTP API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from listeners.mllp import parse_ack
from listeners.mllp.framing import START_BLOCK, frame

from .support import (
    ServeProcess,
    adt,
    make_config,
    running,
    send_mllp,
    wait_until,
    write_config,
)

REFUSED = "passerelle_mllp_connections_refused_total"


def _closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def test_refusals_and_frame_timeouts_are_counted_in_the_metrics(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"mllp": {"max_connections": 2, "frame_timeout": 0.5}})
    assert config.mllp.listeners[0].max_connections == 2
    with running(config) as service:
        port = service.mllp_port()
        metrics = service.metrics()
        for reason in ("max_connections", "frame_timeout", "max_unfinished_bytes"):
            assert (REFUSED, {"listener": "mllp", "reason": reason}, 0.0) in metrics.samples
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        wait_until(lambda: service.metrics().value("passerelle_mllp_connections") == 2)
        refused = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert _closed_by_server(refused)
        # A held connection trickles a frame: closed at frame_timeout, not idle_timeout (30 s).
        held[0].sendall(START_BLOCK + b"MSH|")
        assert _closed_by_server(held[0])
        # Its slot is free again: a sender gets its ACK.
        (ack,) = send_mllp(port, [adt("LIMITS-1")])
        assert ack.code == "AA"
        wait_until(lambda: service.metrics().value(REFUSED, reason="frame_timeout") == 1, timeout=5)
        metrics = service.metrics()
        assert metrics.value(REFUSED, listener="mllp", reason="max_connections") == 1
        assert metrics.value(REFUSED, reason="max_unfinished_bytes") == 0
        for sock in (*held, refused):
            sock.close()


def test_tls_clients_on_a_plain_listener_commit_acks_and_keepalives_are_counted(
    tmp_path: Path,
) -> None:
    """The listener's counts of a TLS client on a plain port, of MLLP release 2 commit
    acknowledgements and of keep-alives (empty blocks) reach /metrics (they were in the
    listener's stats only)."""
    with running(make_config(tmp_path)) as service:
        port = service.mllp_port()
        metrics = service.metrics()
        assert (REFUSED, {"listener": "mllp", "reason": "tls_handshake"}, 0.0) in metrics.samples
        assert metrics.value("passerelle_mllp_commit_acks_total", listener="mllp") == 0
        assert metrics.value("passerelle_mllp_keepalives_total", listener="mllp") == 0
        assert (REFUSED, {"listener": "mllp", "reason": "write_timeout"}, 0.0) in metrics.samples
        # A TLS ClientHello's record header, as a sender configured for TLS opens with.
        hello = socket.create_connection(("127.0.0.1", port), timeout=5)
        hello.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        assert _closed_by_server(hello)
        hello.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(frame(b"\x06"))
            sock.sendall(frame(b"") + frame(b" \r\n"))
            time.sleep(0.2)
        wait_until(
            lambda: (
                service.metrics().value(REFUSED, reason="tls_handshake") == 1
                and service.metrics().value("passerelle_mllp_commit_acks_total") == 1
                and service.metrics().value("passerelle_mllp_keepalives_total") == 2
            ),
            timeout=5,
        )


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_an_idle_flood_on_one_listener_leaves_the_others_and_the_api_served(
    tmp_path: Path,
) -> None:
    """300 idle connections on listener "noisy", the service limited to 256 file
    descriptors: before max_connections, accept() failed with EMFILE on every socket, and
    the sender on "chu" and GET /health timed out until the flood ended."""
    listeners = (
        "[[mllp.listeners]]\nname = 'noisy'\nhost = '127.0.0.1'\nport = 0\nmax_connections = 50\n"
        "[[mllp.listeners]]\nname = 'chu'\nhost = '127.0.0.1'\nport = 0\n"
    )
    path = write_config(
        tmp_path, {"mllp": {"host": None, "port": None}, "": {"log_level": "INFO"}}, listeners
    )
    with ServeProcess(path) as serve:
        subprocess.run(
            ["prlimit", f"--pid={serve.pid}", "--nofile=256:256"], check=True, timeout=10
        )
        noisy, chu = serve.mllp_ports["noisy"], serve.mllp_ports["chu"]
        flood = []
        try:
            for _ in range(300):
                flood.append(socket.create_connection(("127.0.0.1", noisy), timeout=5))
            time.sleep(1.0)  # let the service accept (and refuse) them all
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", chu), timeout=5) as legit:
                legit.settimeout(5)
                legit.sendall(frame(adt("LEGIT-1")))
                data = legit.recv(65536)
            assert data.startswith(START_BLOCK), data[:40]
            assert parse_ack(data[1:].split(b"\x1c", 1)[0]).code == "AA"
            assert httpx.get(f"http://127.0.0.1:{serve.http_port}/health", timeout=5).is_success
            assert time.monotonic() - started < 5
            # 50 held, the others closed at once by the service.
            closed = sum(_closed_by_server(sock, timeout=0.01) for sock in flood)
            assert closed == 250
        finally:
            for sock in flood:
                sock.close()
        entries = serve.entries()
    refusals = [e for e in entries if "refused" in e.get("message", "")]
    assert refusals and refusals[0]["level"] == "warning"
    assert refusals[0]["message"].startswith("MLLP listener noisy: connection from 127.0.0.1:")
