"""Session 24, a poison message: one whose conversion kills its conversion process.

Before: the pool was replaced and the delivery retried like any transient failure, for
ever (``max_attempts = 0``): the patient's later messages waited behind it for good and
each retry failed the other conversions in progress. Now the third death while converting
a message dead-letters it (kind ``ConversionProcessDied``, stage conversion).

Real conversion processes that SIGKILL themselves (as the OOM killer would), a real
service (MLLP, SQLite queue, folder destination). Each death replaces the pool, whose new
processes load the FHIR models and templates at their first conversion: tens of seconds
on a loaded host (they run at nice 10). So the templates are compiled first, into the
cache the processes load them from, and the waits are minutes
(:func:`tests.listeners.support.prepared_config`, :data:`~tests.listeners.support.PATIENCE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from listeners import conversion
from listeners.config import ServiceConfig
from listeners.conversion_deaths import (
    CONVERSION_OUT_OF_MEMORY,
    CONVERSION_PROCESS_DIED,
    DEATHS_TO_DEAD_LETTER,
    ConversionDeaths,
)
from listeners.conversion_turns import AloneTurns
from tests.listeners.service.support import RunningService, adt, running, wait_until
from tests.listeners.service.test_conversion_timeout import delivered_control_ids
from tests.listeners.support import (
    PATIENCE,
    dead_letters,
    die_on_poison,
    marker_dir,
    memory_error_on_huge,
    prepared_config,
    slow_innocent_and_poison,
)


@contextlib.contextmanager
def _folder_service(
    config: ServiceConfig, monkeypatch: pytest.MonkeyPatch, convert: Callable[..., object]
) -> Iterator[tuple[RunningService, Path]]:
    """``config``'s service running, and the folder it delivers to; its conversions made
    by ``convert`` from once it is started."""
    out = config.destinations["default"].folder
    assert out is not None
    with running(config) as service:
        monkeypatch.setattr(conversion, "_convert", convert)
        yield service, out


def _send_until_delivered(
    service: RunningService, out: Path, messages: list[bytes], delivered: set[str]
) -> None:
    """Send ``messages`` (each acknowledged AA), wait until the folder ``out`` holds the
    bundles of ``delivered`` (control ids) and no more, then until the queue is empty."""
    acks = service.send(messages)
    assert [a.code for a in acks] == ["AA"] * len(messages)
    wait_until(
        lambda: delivered_control_ids(out) == delivered,
        timeout=PATIENCE,
        what=f"{sorted(delivered)} delivered",
    )
    service.drained(PATIENCE)


def test_a_message_killing_its_conversion_process_is_dead_lettered_at_the_third_death(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: after 25 s, 35 pool restarts, POISON-1 and NEXT-2 still queued, no dead letter.
    config = prepared_config(tmp_path)
    assert config.delivery.max_attempts == 0  # the default: retried for ever before
    caplog.set_level("INFO", logger="passerelle")
    with _folder_service(config, monkeypatch, die_on_poison) as (service, out):
        # NEXT-2, behind POISON-1 (same patient), goes once POISON-1 is settled.
        _send_until_delivered(
            service,
            out,
            [adt("POISON-1", mrn="MRN-7"), adt("NEXT-2", mrn="MRN-7"), adt("OTHER-3", mrn="MRN-8")],
            {"NEXT-2", "OTHER-3"},
        )
        [error] = [letter.error for letter in dead_letters(service)]
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
    # (converting whenever POISON-1 did) was in progress at each of POISON-1's retries and
    # dead-lettered with it; after a death a message converts alone
    # (listeners.conversion_turns).
    config = prepared_config(tmp_path, {"delivery": {"convert_processes": 2}})
    caplog.set_level("INFO", logger="passerelle")
    with _folder_service(config, monkeypatch, slow_innocent_and_poison) as (service, out):
        _send_until_delivered(
            service,
            out,
            [
                adt("SLOW-2", mrn="MRN-2", family=marker_dir(tmp_path)),
                adt("POISON-1", mrn="MRN-1", family=marker_dir(tmp_path)),
            ],
            {"SLOW-2"},
        )
        [letter] = dead_letters(service)
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
    config = prepared_config(tmp_path)
    caplog.set_level("INFO", logger="passerelle")
    with _folder_service(config, monkeypatch, memory_error_on_huge) as (service, out):
        _send_until_delivered(
            service, out, [adt("HUGE-1", mrn="MRN-9"), adt("NEXT-2", mrn="MRN-9")], {"NEXT-2"}
        )
        [error] = [letter.error for letter in dead_letters(service)]
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
