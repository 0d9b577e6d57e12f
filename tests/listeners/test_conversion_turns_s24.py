"""Session 24, review of the conversions *alone* after a conversion process died.

A message whose conversion process died converts alone next time. Alone first meant the
whole pool converting nothing else: a turn alone waited for the conversions running and
held back every other one meanwhile, so one long conversion in progress when a poison
message came back for its retry stalled every feed until it ended (a steady feed's
delivery latency 0.3 s → 12.8 s median behind a 15-s conversion; for ever with
``conversion_timeout = 0`` and a conversion that never ends). Now a message converts alone
in a process of its own, one at a time, while the pool converts the others.

Real conversion processes (killed with SIGKILL, as the OOM killer would), a real service
(MLLP, SQLite queue, folder destination). The first conversion in a process compiles its
templates and loads the FHIR models: about a second of CPU, tens of seconds on a loaded
host, where a conversion process (nice 10) gets a few percent of a core. So each test
compiles the templates first, into the template cache its processes load them from, and
waits minutes, not seconds, for what must happen; a HOLD message waits for its gate far
longer still, so that a wait that fails is a wait for the HOLD (the behaviour fixed), not
the end of the HOLD's own time limit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from converter import Converter, ConverterConfig
from listeners import conversion
from listeners.conversion import ConversionPool, ConversionResult
from listeners.conversion_deaths import CONVERSION_PROCESS_DIED
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import (
    adt,
    compile_templates,
    make_config,
    running,
    wait_until,
)
from tests.listeners.service.test_conversion_timeout import delivered_control_ids

T = TypeVar("T")

#: How long a HOLD message waits for its gate at most (its test opens the gate earlier).
HOLD_LIMIT = 600.0
#: How long a test waits for what must happen (a first conversion in a new process
#: included: tens of seconds on a loaded host).
PATIENCE = 180.0


# -- run in the conversion processes (pickled by reference: module-level) ----------------------
def gated(route: str, payload: bytes, *args: object) -> object:
    """A message names its test's directory (its family name, ``DIR=<path>;``). HOLD
    writes ``<path>/holding``, then converts once ``<path>/open`` exists
    (:data:`HOLD_LIMIT` at most); POISON kills its process;
    SLOWDEATH writes ``<path>/started``, then kills its process a second later. (Not in
    an environment variable: the fork server, started by the first test, keeps its own.)"""
    directory = Path(payload.split(b"DIR=", 1)[1].split(b";", 1)[0].decode())
    if b"HOLD" in payload:
        (directory / "holding").touch()
        deadline = time.monotonic() + HOLD_LIMIT
        while not (directory / "open").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    if b"POISON" in payload:
        os.kill(os.getpid(), signal.SIGKILL)
    if b"SLOWDEATH" in payload:
        (directory / "started").touch()
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)
    return conversion._convert(route, payload, *args)  # type: ignore[arg-type]


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """The file that ends the HOLD messages' conversions."""
    directory = tmp_path / "gate"
    directory.mkdir()
    return directory / "open"


def message(control_id: str, mrn: str, gate: Path) -> bytes:
    return adt(control_id, mrn=mrn, family=f"DIR={gate.parent};")


def compiled_cache(tmp_path: Path) -> Path:
    """A template cache holding the ADT templates, compiled here (see the docstring)."""
    cache = tmp_path / "cache"
    Converter(ConverterConfig(template_cache_dir=cache)).convert(adt("COMPILE-0"))
    return cache


async def holding(gate: Path) -> None:
    """Until a HOLD message is converting (waiting for ``gate``)."""
    while not (gate.parent / "holding").exists():
        await asyncio.sleep(0.02)


def _run(coro: Coroutine[Any, Any, T], timeout: float = 3 * PATIENCE) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def _control_ids(outcome: object) -> list[str | None]:
    assert isinstance(outcome, list), outcome
    return [r.control_id for r in outcome if isinstance(r, ConversionResult)]


def test_a_conversion_alone_neither_waits_for_a_long_one_nor_holds_back_the_others(
    tmp_path: Path, gate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: SUSPECT-2 (alone) waited for HOLD-1 to end, and OTHER-3 waited behind it:
    # both timed out here, HOLD-1 still converting.
    monkeypatch.setattr(conversion, "_convert", gated)

    async def scenario() -> None:
        pool = ConversionPool(
            {"default": ConverterConfig()}, processes=2, template_cache_dir=compiled_cache(tmp_path)
        )
        try:
            await asyncio.get_running_loop().run_in_executor(None, pool.warm_up)
            hold = asyncio.create_task(pool.convert("default", message("HOLD-1", "M1", gate)))
            await holding(gate)
            suspect = await asyncio.wait_for(
                pool.convert("default", message("SUSPECT-2", "M2", gate), alone=True), PATIENCE
            )
            other = await asyncio.wait_for(
                pool.convert("default", message("OTHER-3", "M3", gate)), PATIENCE
            )
            assert not hold.done()  # both converted while HOLD-1 was converting
            assert _control_ids(suspect) == ["SUSPECT-2"]
            assert _control_ids(other) == ["OTHER-3"]
            gate.touch()
            assert _control_ids(await hold) == ["HOLD-1"]
            assert pool.restarts == 0
        finally:
            gate.touch()
            pool.close(5)

    _run(scenario())


def test_a_death_alone_fails_no_other_conversion(
    tmp_path: Path, gate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process converting alone dies: the pool's conversions in progress go on. Before:
    # POISON-2 waited for HOLD-1 to end (timed out here).
    monkeypatch.setattr(conversion, "_convert", gated)

    async def scenario() -> None:
        pool = ConversionPool(
            {"default": ConverterConfig()}, processes=2, template_cache_dir=compiled_cache(tmp_path)
        )
        try:
            await asyncio.get_running_loop().run_in_executor(None, pool.warm_up)
            hold = asyncio.create_task(pool.convert("default", message("HOLD-1", "M1", gate)))
            await holding(gate)
            with pytest.raises(BrokenProcessPool):
                poison = pool.convert("default", message("POISON-2", "M2", gate), alone=True)
                await asyncio.wait_for(poison, PATIENCE)
            assert pool.restarts == 1
            await asyncio.sleep(0.5)
            assert not hold.done()  # HOLD-1 still converting: not failed by that death
            gate.touch()
            assert _control_ids(await hold) == ["HOLD-1"]
            # The next one alone gets a new process.
            again = await pool.convert("default", message("NEXT-3", "M3", gate), alone=True)
            assert _control_ids(again) == ["NEXT-3"]
        finally:
            gate.touch()
            pool.close(5)

    _run(scenario())


def test_a_cancelled_conversion_alone_keeps_its_turn_until_its_process_ends_it(
    tmp_path: Path, gate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SLOWDEATH-1's caller stops waiting (a stop, a released AMQP partition) while its
    # process still converts it. Given back at once, the turn let NEXT-2 into the same
    # process behind it: SLOWDEATH-1's death then failed NEXT-2 too (counted against it).
    monkeypatch.setattr(conversion, "_convert", gated)
    started = gate.parent / "started"

    async def scenario() -> None:
        pool = ConversionPool(
            {"default": ConverterConfig()}, processes=1, template_cache_dir=compiled_cache(tmp_path)
        )
        try:
            await asyncio.get_running_loop().run_in_executor(None, pool.warm_up)
            # The process converting alone started (templates loaded).
            await pool.convert("default", message("WARM-0", "M0", gate), alone=True)
            doomed = asyncio.create_task(
                pool.convert("default", message("SLOWDEATH-1", "M1", gate), alone=True)
            )
            while not started.exists():
                await asyncio.sleep(0.02)
            doomed.cancel()
            nxt = await pool.convert("default", message("NEXT-2", "M2", gate), alone=True)
            assert _control_ids(nxt) == ["NEXT-2"]
            assert pool.restarts == 1  # SLOWDEATH-1's process died, after its turn
        finally:
            pool.close(5)

    _run(scenario())


def test_a_steady_feed_goes_on_while_a_victim_of_a_death_converts_alone(
    tmp_path: Path, gate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve, two conversion processes: HOLD-1 (a long message) converts in one when
    # POISON-2 kills the other, and with it the pool: HOLD-1 is a victim, retried alone.
    # Before: its turn alone held back every other conversion until it ended (the feed
    # waited for HOLD-1, up to conversion_timeout; for ever with 0).
    config = make_config(tmp_path / "svc", {"delivery": {"convert_processes": 2}})
    compile_templates(config, [adt("COMPILE-0")])
    out = config.destinations["default"].folder
    assert out is not None
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", gated)
        assert [a.code for a in service.send([message("HOLD-1", "MRN-H", gate)])] == ["AA"]
        wait_until(lambda: (gate.parent / "holding").exists(), timeout=PATIENCE)
        assert [a.code for a in service.send([message("POISON-2", "MRN-P", gate)])] == ["AA"]
        pool = service.service.pool
        assert pool is not None
        wait_until(lambda: pool.restarts > 0, timeout=PATIENCE, what="the pool's death")
        feed = [message(f"FEED-{i}", f"MRN-F{i}", gate) for i in range(10)]
        assert {a.code for a in service.send(feed)} == {"AA"}
        wait_until(
            lambda: delivered_control_ids(out) >= {f"FEED-{i}" for i in range(10)},
            timeout=PATIENCE,
            what="the feed delivered while HOLD-1 converts alone",
        )
        assert "HOLD-1" not in delivered_control_ids(out)
        gate.touch()
        queue = service.service.queue
        assert isinstance(queue, SqliteQueue)
        wait_until(lambda: len(queue.list_dead_letters()) == 1, timeout=PATIENCE)
        service.drained(PATIENCE)
        assert "HOLD-1" in delivered_control_ids(out)
        [letter] = queue.list_dead_letters()
        assert letter.envelope.control_id == "POISON-2"
        assert letter.error["kind"] == CONVERSION_PROCESS_DIED


def test_an_api_client_sending_a_poison_message_again_kills_the_pool_once(
    tmp_path: Path, gate: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A client honouring Retry-After sends the message that killed the pool again, every
    # 2 s. Before: each time the pool died, failing every delivery in progress (a feed of
    # 4/s: delivery latency 0.3 s → 1.0 s median, 6 pool deaths in 12 s), and each time a
    # 503 inviting it to send again. Now it converts alone when sent again; the third death
    # is a 422.
    config = make_config(tmp_path / "svc", {"delivery": {"convert_processes": 2}})
    compile_templates(config, [adt("COMPILE-0")])
    out = config.destinations["default"].folder
    assert out is not None
    caplog.set_level("INFO", logger="passerelle")
    poison = message("POISON-9", "MRN-P", gate)
    with running(config) as service, httpx.Client(timeout=PATIENCE) as client:
        monkeypatch.setattr(conversion, "_convert", gated)
        pool = service.service.pool
        assert pool is not None
        answers = [client.post(f"{service.http_url}/convert", content=poison)]
        executor = pool._executor  # the pool that replaced the dead one
        assert [a.code for a in service.send([message("HOLD-2", "MRN-H", gate)])] == ["AA"]
        wait_until(lambda: (gate.parent / "holding").exists(), timeout=PATIENCE)
        for _ in range(2):
            answers.append(client.post(f"{service.http_url}/convert", content=poison))
        assert [a.status_code for a in answers] == [503, 503, 422]
        assert "died 3 times" in answers[2].json()["issue"][0]["diagnostics"]
        assert pool._executor is executor  # the pool did not die again
        gate.touch()
        wait_until(lambda: "HOLD-2" in delivered_control_ids(out), timeout=PATIENCE)
        service.drained(PATIENCE)
    victims = {
        getattr(r, "control_id", None)
        for r in caplog.records
        if r.getMessage() == "conversion process died during the conversion; will retry"
    }
    assert "HOLD-2" not in victims


def test_the_stop_ends_the_process_converting_alone_within_its_grace(
    tmp_path: Path, gate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long conversion alone when the service stops: ended with the pool's, within the
    # stop's grace (it would otherwise hold the interpreter's exit until it ends).
    monkeypatch.setattr(conversion, "_convert", gated)

    async def scenario() -> None:
        pool = ConversionPool(
            {"default": ConverterConfig()}, processes=1, template_cache_dir=compiled_cache(tmp_path)
        )
        await asyncio.get_running_loop().run_in_executor(None, pool.warm_up)
        await pool.convert("default", message("WARM-0", "M0", gate), alone=True)
        alone = pool._alone
        assert isinstance(alone, ProcessPoolExecutor)
        [process] = alone._processes.values()
        held = asyncio.create_task(
            pool.convert("default", message("HOLD-1", "M1", gate), alone=True)
        )
        await holding(gate)
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, pool.close, 1.0)
        assert time.monotonic() - started < 10
        assert not process.is_alive()
        await asyncio.gather(held, return_exceptions=True)
        with pytest.raises(RuntimeError):  # no process started after the close
            await pool.convert("default", message("LATE-2", "M2", gate), alone=True)

    _run(scenario())
