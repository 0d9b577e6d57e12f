"""Session 24, a poison message: one whose conversion kills its conversion process.

Before: the pool was replaced and the delivery retried like any transient failure, for
ever (``max_attempts = 0``): the patient's later messages waited behind it for good and
each retry failed the other conversions in progress. Now the third death while converting
a message dead-letters it (kind ``ConversionProcessDied``, stage conversion).

Real conversion processes that SIGKILL themselves (as the OOM killer would), a real
service (MLLP, SQLite queue, folder destination).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from listeners import conversion
from listeners.conversion_deaths import (
    CONVERSION_OUT_OF_MEMORY,
    CONVERSION_PROCESS_DIED,
    DEATHS_TO_DEAD_LETTER,
    ConversionDeaths,
)
from listeners.conversion_turns import AloneTurns
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import adt, make_config, running, wait_until
from tests.listeners.service.test_conversion_timeout import delivered_control_ids


# -- run in the conversion processes (pickled by reference: module-level) ----------------------
def die_on_poison(route: str, payload: bytes, *args: object) -> object:
    """A message holding POISON kills its conversion process; others convert."""
    if b"POISON" in payload:
        os.kill(os.getpid(), signal.SIGKILL)
    return conversion._convert(route, payload, *args)  # type: ignore[arg-type]


def slow_innocent_and_poison(route: str, payload: bytes, *args: object) -> object:
    """POISON kills its process 0.3 s into each conversion; SLOW's conversions take 2 s
    (in progress in the other process when POISON's dies)."""
    if b"POISON" in payload:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    if b"SLOW" in payload:
        time.sleep(2.0)
    return conversion._convert(route, payload, *args)  # type: ignore[arg-type]


def memory_error_on_huge(route: str, payload: bytes, *args: object) -> object:
    """HUGE runs out of memory (a MemoryError: the process survives) at each conversion."""
    if b"HUGE" in payload:
        raise MemoryError
    return conversion._convert(route, payload, *args)  # type: ignore[arg-type]


def _dead_letters(queue: object) -> list[dict[str, object]]:
    assert isinstance(queue, SqliteQueue)
    return [letter.error for letter in queue.list_dead_letters()]


def test_a_message_killing_its_conversion_process_is_dead_lettered_at_the_third_death(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: after 25 s, 35 pool restarts, POISON-1 and NEXT-2 still queued, no dead letter.
    config = make_config(tmp_path)
    assert config.delivery.max_attempts == 0  # the default: retried for ever before
    out = config.destinations["default"].folder
    assert out is not None
    caplog.set_level("INFO", logger="passerelle")
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", die_on_poison)
        acks = service.send(
            [adt("POISON-1", mrn="MRN-7"), adt("NEXT-2", mrn="MRN-7"), adt("OTHER-3", mrn="MRN-8")]
        )
        assert [a.code for a in acks] == ["AA", "AA", "AA"]
        # NEXT-2, behind POISON-1 (same patient), goes once POISON-1 is settled.
        wait_until(
            lambda: delivered_control_ids(out) == {"NEXT-2", "OTHER-3"},
            timeout=60,
            what="the poison message's patient's next message delivered",
        )
        service.drained()
        queue = service.service.queue
        [error] = _dead_letters(queue)
        assert error["kind"] == CONVERSION_PROCESS_DIED
        assert error["stage"] == "conversion"
        assert "died 3 times" in str(error["reason"])
        pool = service.service.pool
        assert pool is not None and pool.restarts == DEATHS_TO_DEAD_LETTER
        dead = service.metrics().value(
            "passerelle_messages_dead_lettered_total", reason="conversion"
        )
        assert dead == 1
    lines = [
        r for r in caplog.records if r.getMessage() == "conversion failed; message dead-lettered"
    ]
    assert [(r.levelname, getattr(r, "error_kind", None)) for r in lines] == [
        ("ERROR", CONVERSION_PROCESS_DIED)
    ]
    assert getattr(lines[0], "control_id", None) == "POISON-1"


def test_a_message_failed_by_another_ones_death_is_still_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Two processes: SLOW-2 (another patient) is converting when POISON-1 kills its
    # process; the pool's death fails SLOW-2 too. One death is no proof: SLOW-2 is retried
    # and delivered, only POISON-1 is dead-lettered. Counting deaths was not enough: SLOW-2
    # (2 s a conversion) was in progress at each of POISON-1's retries and dead-lettered
    # with it; after a death a message converts alone (listeners.conversion_turns).
    config = make_config(tmp_path, {"delivery": {"convert_processes": 2}})
    out = config.destinations["default"].folder
    assert out is not None
    caplog.set_level("INFO", logger="passerelle")
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", slow_innocent_and_poison)
        acks = service.send([adt("SLOW-2", mrn="MRN-2"), adt("POISON-1", mrn="MRN-1")])
        assert [a.code for a in acks] == ["AA", "AA"]
        wait_until(
            lambda: delivered_control_ids(out) == {"SLOW-2"}, timeout=60, what="SLOW-2 delivered"
        )
        service.drained()
        queue = service.service.queue
        assert isinstance(queue, SqliteQueue)
        [letter] = queue.list_dead_letters()
        assert letter.envelope.control_id == "POISON-1"
        assert letter.error["kind"] == CONVERSION_PROCESS_DIED
        pool = service.service.pool
        assert pool is not None and pool.restarts == DEATHS_TO_DEAD_LETTER
    # SLOW-2 was a victim of the first death (else this test proves nothing).
    victims = {
        getattr(r, "control_id", None)
        for r in caplog.records
        if r.getMessage() == "conversion process died during the conversion; will retry"
    }
    assert "SLOW-2" in victims


def test_a_message_running_out_of_memory_each_time_is_dead_lettered_at_the_third(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: retried for ever (max_attempts = 0), each time an ERROR "delivery crashed"
    # with three tracebacks, and NEXT-2 (same patient) waited behind it for good.
    config = make_config(tmp_path)
    out = config.destinations["default"].folder
    assert out is not None
    caplog.set_level("INFO", logger="passerelle")
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", memory_error_on_huge)
        acks = service.send([adt("HUGE-1", mrn="MRN-9"), adt("NEXT-2", mrn="MRN-9")])
        assert [a.code for a in acks] == ["AA", "AA"]
        wait_until(
            lambda: delivered_control_ids(out) == {"NEXT-2"}, timeout=60, what="NEXT-2 delivered"
        )
        service.drained()
        [error] = _dead_letters(service.service.queue)
        assert error["kind"] == CONVERSION_OUT_OF_MEMORY
        assert error["stage"] == "conversion"
        pool = service.service.pool
        assert pool is not None and pool.restarts == 0  # the process survived
    assert not [r for r in caplog.records if r.getMessage().startswith("delivery crashed")]
    retries = [
        r.getMessage()
        for r in caplog.records
        if getattr(r, "control_id", None) == "HUGE-1" and "will retry" in r.getMessage()
    ]
    assert retries.count("conversion ran out of memory; will retry alone") == 2


def test_the_count_resets_when_the_message_converts() -> None:
    deaths: ConversionDeaths[int] = ConversionDeaths()
    assert deaths.died(7) is None
    assert deaths.died(7) is None
    deaths.converted(7)
    assert deaths.died(7) is None
    assert deaths.died(7) is None
    failure = deaths.died(7)
    assert failure is not None and failure.kind == CONVERSION_PROCESS_DIED
    assert deaths.deaths(7) == 0  # settled: forgotten


def test_only_the_most_recent_messages_are_remembered() -> None:
    deaths: ConversionDeaths[int] = ConversionDeaths(remembered=2)
    for seq in (1, 2, 3):
        assert deaths.died(seq) is None
    assert [deaths.deaths(seq) for seq in (1, 2, 3)] == [0, 1, 1]


# -- the turns alone ----------------------------------------------------------------------------
def _note(log: list[str], name: str, seconds: float) -> str:
    log.append(f"+{name}")
    time.sleep(seconds)
    log.append(f"-{name}")
    return name


def test_turns_alone_are_one_at_a_time_in_the_order_asked() -> None:
    # (The process converting alone is the pool's; these threads could run together.)
    async def scenario() -> list[str]:
        turns, log = AloneTurns(), list[str]()
        with ThreadPoolExecutor(max_workers=3) as threads:
            names = await asyncio.gather(
                *(
                    turns.run(partial(threads.submit, _note, log, name, 0.05))
                    for name in ("a", "b", "c")
                )
            )
        assert names == ["a", "b", "c"]
        assert turns.busy == 0
        return log

    assert asyncio.run(scenario()) == ["+a", "-a", "+b", "-b", "+c", "-c"]


def test_a_cancelled_turn_alone_is_given_back_when_its_work_ends() -> None:
    async def scenario() -> list[str]:
        turns, log = AloneTurns(), list[str]()
        with ThreadPoolExecutor(max_workers=2) as threads:
            first = asyncio.create_task(turns.run(partial(threads.submit, _note, log, "a", 0.3)))
            await asyncio.sleep(0.1)
            first.cancel()  # its caller stops waiting; its work goes on
            await asyncio.wait_for(turns.run(partial(threads.submit, _note, log, "b", 0.0)), 5)
            await asyncio.gather(first, return_exceptions=True)
        assert turns.busy == 0
        return log

    assert asyncio.run(scenario()) == ["+a", "-a", "+b", "-b"]
