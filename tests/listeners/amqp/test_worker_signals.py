"""``passerelle worker`` stopped by a signal while a delivery is in flight: SIGHUP (the
terminal or ssh session closed, ``docker kill -s HUP``, a supervisor's reload signal)
stops it like SIGTERM — the message in flight is delivered and acked, nothing comes back
for another worker — instead of Python's default action (the process dies on the spot,
the delivery cut off and made again by the next owner); a second signal during the drain
ends the process at once, as it does for ``passerelle serve``."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from listeners.config import load_config
from tests.listeners.amqp.support import (
    ConfigFile,
    WorkerProcess,
    bundle_posts,
    envelope,
    store,
    wait_until,
)
from tests.support.fhirserver import FhirServer


def _exit_status(worker: WorkerProcess, *, timeout: float) -> int:
    """The status of a worker that was sent a signal, once it ended by itself."""
    wait_until(lambda: not worker.alive(), timeout=timeout, what="the worker to exit")
    return worker.terminate()


def test_sighup_drains_the_delivery_in_flight_like_sigterm(
    fhir: FhirServer, config_file: ConfigFile
) -> None:
    path = config_file(backend="amqp", log_format="json")
    config = load_config(path, env={})
    worker = WorkerProcess(path, "hup")
    successor: WorkerProcess | None = None
    try:
        wait_until(lambda: len(worker.owned()) == 4, what="the worker to hold every partition")
        fhir.delay(2500)
        asyncio.run(store(config, [envelope("HUP-1", "MRN-HUP-1", "Hangup")]))
        wait_until(lambda: bundle_posts(fhir), what="the delivery in flight")
        os.kill(worker.pid, signal.SIGHUP)
        code = _exit_status(worker, timeout=40)
        assert code == 0, f"exit status {code}\n{worker.text()}"
        assert [e["control_id"] for e in worker.delivered()] == ["HUP-1"]
        messages = [e.get("message") for e in worker.log]
        assert "SIGHUP received: stopping gracefully" in messages and "worker stopped" in messages

        # Nothing unacked was left behind: a new owner of the partitions delivers nothing.
        successor = WorkerProcess(path, "successor")
        wait_until(lambda: len(successor.owned()) == 4, what="the successor to take over")
        time.sleep(1.0)
        assert successor.delivered() == []
        assert len(bundle_posts(fhir)) == 1
    finally:
        for process in (worker, successor):
            if process is not None:
                process.terminate()


def test_a_second_signal_during_the_drain_exits_at_once(
    fhir: FhirServer, config_file: ConfigFile
) -> None:
    path = config_file(backend="amqp", log_format="json")
    config = load_config(path, env={})
    worker = WorkerProcess(path, "impatient")
    try:
        wait_until(lambda: len(worker.owned()) == 4, what="the worker to hold every partition")
        fhir.delay(20_000)
        asyncio.run(store(config, [envelope("TWICE-1", "MRN-TWICE-1", "Twice")]))
        wait_until(lambda: bundle_posts(fhir), what="the delivery in flight")
        os.kill(worker.pid, signal.SIGTERM)
        wait_until(
            lambda: any(
                e.get("message") == "SIGTERM received: stopping gracefully" for e in worker.log
            ),
            what="the drain to begin",
        )
        started = time.monotonic()
        os.kill(worker.pid, signal.SIGINT)
        code = _exit_status(worker, timeout=15)
        assert time.monotonic() - started < 10, "the second signal did not end the drain"
        assert code == 1, f"exit status {code}\n{worker.text()}"
        assert any(
            e.get("message") == "second signal while stopping: exiting now" for e in worker.log
        )
    finally:
        worker.kill()
