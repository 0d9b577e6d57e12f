"""Session 23, service operations: the logs of the conversion processes and of libraries,
the end of a service whose queue writer died, the metrics loop's bound on queue reads, and
the bound on a conversion running at a stop."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from listeners.queue.sqlite import SqliteQueue
from listeners.service import EXIT_RESTART
from tests.listeners.service.support import (
    SAMPLES,
    RunningService,
    ServeProcess,
    adt,
    make_config,
    passerelle,
    queue_writer_held,
    running,
    wait_until,
    write_config,
)
from tests.listeners.service.test_conversion_timeout import oru

#: A destination nothing listens on: these tests deliver nothing.
NOWHERE = {"destinations.default": {"url": "http://127.0.0.1:9/fhir"}}
SAMPLE = SAMPLES / "ADT_A01_admission-full.hl7"


def _not_json(lines: list[str]) -> list[str]:
    bad = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if not isinstance(entry, dict):
            bad.append(line)
    return bad


# -- 1. every line of a JSON log stream is JSON, the conversion processes' too -----------------
def test_a_conversion_process_warning_is_a_json_line_of_the_service(tmp_path: Path) -> None:
    config = write_config(tmp_path, NOWHERE)
    with ServeProcess(config) as first:
        assert first.terminate() == 0
    # The template cache's lock file made a directory: each conversion process warns
    # (template_cache_not_pruned) while it loads the templates, at start-up.
    locks = list((tmp_path / "data" / "template-cache").glob("*.lock"))
    assert locks
    for lock in locks:
        lock.unlink()
        lock.mkdir()
    with ServeProcess(config) as serve:
        assert serve.terminate() == 0
    assert _not_json(serve.log) == []
    warned = [e for e in serve.entries() if e.get("event") == "template_cache_not_pruned"]
    assert warned, serve.log
    assert warned[0]["logger"] == "passerelle.template_cache"
    assert warned[0]["level"] == "warning" and warned[0]["time"].endswith("Z")


def test_a_library_warning_nobody_configured_is_written_in_the_service_format() -> None:
    # aio-pika, concurrent.futures...: loggers with no handler went to Python's last-resort
    # handler, a bare line with the exception's full traceback and text.
    script = (
        "import logging\n"
        "from listeners.logs import configure_logging\n"
        "configure_logging('json', 'INFO')\n"
        "try:\n"
        "    raise RuntimeError('PID|1||0012345678^^^CHU^MR||DUPONT^Marie')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('aiormq.connection').warning('connection lost', exc_info=True)\n"
        "logging.getLogger('aiormq.connection').info('below the last resort: not written')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    assert _not_json(lines) == [] and len(lines) == 1, done.stderr
    entry = json.loads(lines[0])
    assert entry["logger"] == "aiormq.connection" and entry["message"] == "connection lost"
    assert entry["exception"] == "RuntimeError" and "DUPONT" not in done.stderr


# -- 2. a service whose queue writer died stops itself, to be restarted ------------------------
#: Loaded by every Python process of the service through PYTHONPATH: the queue's writer
#: thread dies (MemoryError, as in tests/listeners/queue/test_queue_s23.py) at its first
#: batch once the file named by $KILL_QUEUE_WRITER exists, a fault nothing real injects on
#: demand.
_KILL_WRITER = """
import os
from pathlib import Path

trigger = os.environ.get("KILL_QUEUE_WRITER")
if trigger:
    from listeners.queue import _sqlite_writer

    original = _sqlite_writer.Writer._gather

    def _gather(self):
        if Path(trigger).exists():
            Path(trigger).unlink()
            raise MemoryError
        return original(self)

    _sqlite_writer.Writer._gather = _gather
"""


def test_a_service_whose_queue_writer_died_stops_itself_with_the_restart_status(
    tmp_path: Path,
) -> None:
    """/health turned red, but plain Docker (``restart: unless-stopped``) and systemd
    restart no unhealthy container: the service refused every sender until someone came.
    It now stops (a CRITICAL line, the usual drain) and exits 75 for its restart."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_KILL_WRITER, encoding="utf-8")
    trigger = tmp_path / "kill-writer"
    config = write_config(tmp_path / "service", NOWHERE)
    env = {"PYTHONPATH": str(hooks), "KILL_QUEUE_WRITER": str(trigger)}
    serve = ServeProcess(config, env=env).start()
    try:
        base = f"http://127.0.0.1:{serve.http_port}"
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        trigger.touch()
        sent = passerelle("send", str(SAMPLE), "--port", str(serve.mllp_ports["mllp"]))
        assert sent.returncode != 0  # stored nothing: no ACK
        status = serve.wait(timeout=60)
    finally:
        serve.kill()
    assert status == EXIT_RESTART == 75
    entries = serve.entries()
    critical = [e for e in entries if e.get("event") == "component_stopped"]
    assert len(critical) == 1 and critical[0]["level"] == "critical", serve.log
    assert critical[0]["message"].startswith("queue stopped for good (")
    messages = [e.get("message") for e in entries]
    assert messages.index(critical[0]["message"]) < messages.index("stopping")
    assert "stopped" in messages  # the usual drain, the queue closed last
    assert "DUPONT" not in "\n".join(serve.log)
    assert _not_json(serve.log) == []


# -- 3. the metrics loop is not frozen by a queue that does not answer -------------------------
def test_the_mllp_metrics_keep_moving_while_the_queue_writer_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer held in one commit (a disk that stops answering an fsync): the loop
    that updates the metrics awaited the queue's depth without a bound, and every metric
    it updates froze, the MLLP listeners' open connections among them."""
    holding = False
    reads = 0
    depth = SqliteQueue.depth

    async def counted_depth(self: SqliteQueue) -> int:
        nonlocal reads
        reads += holding
        return await depth(self)

    monkeypatch.setattr(SqliteQueue, "depth", counted_depth)

    with running(make_config(tmp_path, NOWHERE)) as service:
        with queue_writer_held(service) as held:
            assert held.wait(10)
            holding = True
            time.sleep(1.5)  # the loop is waiting for a depth by now
            with socket.create_connection(("127.0.0.1", service.mllp_port()), timeout=10):
                wait_until(
                    lambda: (
                        service.metrics().value("passerelle_mllp_connections", listener="mllp") == 1
                    ),
                    timeout=10,
                    what="the open MLLP connection counted",
                )
            wait_until(
                lambda: (
                    service.metrics().value("passerelle_mllp_connections", listener="mllp") == 0
                ),
                timeout=10,
                what="the closed MLLP connection counted",
            )
            assert reads <= 1  # one read waited for, none piled up behind it
        service.send([adt("S23-DEPTH-1")], timeout=30)  # stored, nothing delivers it
        wait_until(
            lambda: service.metrics().value("passerelle_queue_depth") == 1,
            timeout=10,
            what="the depth read again once the writer answers",
        )


# -- review: a conversion running at a stop holds it no longer than the grace -----------------
def test_a_conversion_running_at_the_stop_is_ended_within_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A long message converting when SIGTERM came (up to delivery.conversion_timeout,
    60 s by default): the delivery was cancelled at the end of the grace, but closing
    the pool waited for the conversion to end, and the 30-second stop took a minute,
    past the container runtime's SIGKILL (``--stop-timeout 40``)."""
    config = make_config(tmp_path, {**NOWHERE, "delivery": {"conversion_timeout": 120}})
    service = RunningService(config, stop_grace=2.0)
    with service:
        # About 1.5 ms an observation: half a minute of conversion.
        assert all(ack.success for ack in service.send([oru("S23-SLOW-1", 20000)], timeout=60))
        time.sleep(2.0)  # claimed, and converting
        started = time.monotonic()
        service.stop()
        took = time.monotonic() - started
    assert took < 15, f"the stop took {took:.1f} s"
    ended = [r for r in caplog.records if getattr(r, "event", None) == "conversions_ended_at_stop"]
    assert len(ended) == 1 and ended[0].levelno == logging.WARNING
    # The message stays in the queue, converted again after the restart.
    with running(config, stop_grace=1.0) as again:
        assert again.depth() == 1
