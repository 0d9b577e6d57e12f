"""Session 23 (b), service robustness: a conversion process dying while the service
starts, and a stop whose steps fail."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from listeners import conversion
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import (
    REPO_ROOT,
    RunningService,
    adt,
    make_config,
    write_config,
)

#: A destination nothing listens on: these tests deliver nothing.
NOWHERE = {"destinations.default": {"url": "http://127.0.0.1:9/fhir"}}


# -- run in the conversion processes (pickled by reference: module-level) ----------------------
def die_once_then_warm(marker: str, routes: tuple[str, ...]) -> None:
    """The first call (in any process) kills its own process, as the OOM killer would;
    the next ones warm up as usual."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        conversion._warm(routes)
        return
    os.kill(os.getpid(), signal.SIGKILL)


def die(routes: tuple[str, ...]) -> None:
    """Every process dies while it loads the templates (a crash that comes back)."""
    del routes
    os.kill(os.getpid(), signal.SIGKILL)


# -- 1. a conversion process dying during the start-up warm-up ----------------------------------
def test_a_conversion_process_killed_during_the_warm_up_is_replaced_and_the_service_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the BrokenProcessPool of warm_up failed the start (a traceback from serve).
    marker = tmp_path / "killed-once"
    monkeypatch.setattr(conversion, "_warm", partial(die_once_then_warm, str(marker)))
    config = make_config(tmp_path, NOWHERE)
    caplog.set_level(logging.INFO, logger="passerelle")
    with RunningService(config) as running:
        assert marker.exists()  # a process did die
        pool = running.service.pool
        assert pool is not None and pool.restarts == 1
        # The replaced pool converts.
        bundles = running.call(
            running.service.convert(adt("H8-1"), input_type="hl7v2", root_template=None)
        )
        assert len(bundles) == 1 and b'"resourceType"' in bundles[0]
    restarted = [
        r for r in caplog.records if getattr(r, "event", None) == "conversion_pool_restarted"
    ]
    assert len(restarted) == 1 and restarted[0].levelno == logging.ERROR
    assert "start-up" in restarted[0].getMessage()


#: ``passerelle COMMAND --config FILE`` whose conversion processes all die at start.
_RUN_WITH_DYING_PROCESSES = """
import sys
from listeners import conversion, cli
from tests.listeners.test_service_s23b import die
conversion._warm = die
sys.exit(cli.main([sys.argv[1], "--config", sys.argv[2]]))
"""


def run_with_dying_processes(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    return subprocess.run(
        [sys.executable, "-c", _RUN_WITH_DYING_PROCESSES, command, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment | {"PYTHONPATH": str(REPO_ROOT), "PASSERELLE_LOG_FORMAT": "text"},
        cwd=config.parent,
        check=False,
    )


def test_serve_whose_conversion_processes_keep_dying_at_start_exits_1_with_one_line(
    tmp_path: Path,
) -> None:
    result = run_with_dying_processes("serve", write_config(tmp_path, NOWHERE))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("passerelle: cannot start: a conversion process died"), last
    # Replaced once, then given up; the stop that follows closed the queue.
    assert result.stderr.count("event=conversion_pool_restarted") == 1
    assert "passerelle.service: stopped" in result.stderr


# -- 2. a stop whose steps fail ----------------------------------------------------------------
class _Broken(RuntimeError):
    pass


async def _fail(*args: object, **kwargs: object) -> None:
    # A library's error text may quote message content: it must not reach the log.
    raise _Broken("Testpatient^Alice")


def test_a_failing_stop_step_skips_none_of_the_later_ones_the_queue_close_included(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, NOWHERE)
    caplog.set_level(logging.INFO, logger="passerelle")
    running = RunningService(config).__enter__()
    service = running.service
    try:
        assert service._http is not None and service.pool is not None
        pool = service.pool
        # The HTTP server's and a destination's close raise.
        service._http.stop = _fail  # type: ignore[method-assign]
        service.sinks["default"].close = _fail  # type: ignore[method-assign]
        processes = list((getattr(pool._executor, "_processes", None) or {}).values())
        assert processes
    finally:
        running.stop()
    # The steps after them ran: conversion processes ended, queue closed (lock released).
    assert all(not process.is_alive() for process in processes)

    async def reopen() -> None:
        queue = SqliteQueue(config.queue.path)
        await queue.start()
        await queue.close()

    asyncio.run(reopen())
    failures = [r for r in caplog.records if getattr(r, "event", None) == "stop_step_failed"]
    assert [r.levelno for r in failures] == [logging.ERROR, logging.ERROR]
    text = " ".join(r.getMessage() for r in failures)
    assert "the HTTP API" in text and "destination 'default'" in text and "_Broken" in text
    assert "Testpatient" not in caplog.text
    service_lines = [r for r in caplog.records if r.name == "passerelle.service"]
    last = service_lines[-1]  # the queue closed last, after the failures
    assert last.getMessage().startswith("stopped") and last.levelno == logging.WARNING
    assert getattr(last, "count", None) == 2
