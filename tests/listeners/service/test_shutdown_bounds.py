"""``passerelle serve`` stops within its grace period whatever its HTTP clients do.

A client that POSTs a batch to ``/convert`` and never reads the answer (megabytes of
bundles) used to hold its connection for ever, and uvicorn's shutdown waited for it with
no limit: after SIGTERM, the workers and the queue were never closed.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from tests.listeners.service import support
from tests.listeners.service.support import SAMPLES, ServeProcess, write_config

#: The service's drain grace in these tests (30 s in production).
GRACE = 3.0
#: ~45 KB of bundle per message: megabytes more than the kernel's socket buffers hold.
MESSAGES = 200

#: ``passerelle`` itself (the console script's two lines), with a shorter grace and a write
#: stall timeout out of the way, so that the grace is what ends the connection.
_LAUNCHER = """#!{python}
import sys

import listeners.http.server as http_server
import listeners.service as service

service.SHUTDOWN_GRACE = {grace}
http_server._GuardedH11Protocol.write_timeout = 3600.0

from listeners.cli import main

if __name__ == "__main__":  # conversion processes import this file again
    sys.exit(main())
"""


@pytest.fixture
def short_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = tmp_path / "passerelle"
    launcher.write_text(_LAUNCHER.format(python=sys.executable, grace=GRACE), encoding="utf-8")
    launcher.chmod(0o755)
    monkeypatch.setattr(support, "PASSERELLE", str(launcher))


def _batch() -> bytes:
    message = (SAMPLES / "ORU_R01_20-obx.hl7").read_bytes()
    message = message.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return b"".join(message.replace(b"|MSG", b"|M%04d" % i, 1) for i in range(MESSAGES))


def _wait_for_answer(sock: socket.socket, timeout: float) -> None:
    sock.settimeout(timeout)
    assert sock.recv(1, socket.MSG_PEEK), "no answer"


@pytest.mark.usefixtures("short_grace")
def test_sigterm_stops_the_service_despite_a_client_not_reading(tmp_path: Path) -> None:
    config = write_config(tmp_path / "svc", {"http": {"max_messages": MESSAGES}})
    body = _batch()
    with ServeProcess(config) as serve, socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", serve.http_port))
        client.sendall(
            b"POST /convert HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        _wait_for_answer(client, timeout=120)  # converted; the answer is being written
        time.sleep(0.5)
        started = time.monotonic()
        try:
            code = serve.terminate(timeout=GRACE + 30)
        except Exception:
            pytest.fail("still running after SIGTERM:\n" + "\n".join(serve.log[-20:]))
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < GRACE + 10, elapsed
    messages = [entry.get("message", "") for entry in serve.entries()]
    assert any(m.startswith("HTTP shutdown: 1 connection(s) still open after") for m in messages)
    # The workers and the queue were closed: the last step of the stop is logged.
    assert messages[-1] == "stopped", messages[-5:]
