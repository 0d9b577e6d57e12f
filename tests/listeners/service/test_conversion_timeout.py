"""A conversion that runs past ``delivery.conversion_timeout`` is stopped and dead-lettered.

The slow message does not depend on the machine's speed: a template override
(``templates/hl7v2/messages/ADT.j2`` beside this file) spins before the shipped ADT root
when MSH-10 reads ``SPIN-<n>-<label>``, n**3 loop turns. With n = :data:`ENDLESS` that is
10**15 turns, a conversion that never ends however fast the machine: the deadline is
certainly reached, and only the deadline stops it (without it these tests time out). The
same message with a small n ends and converts as usual.

The first conversion in a process compiles its templates and loads the FHIR models
(about a second of CPU; tens of seconds on a loaded host, where the conversion process,
at nice 10, gets a few percent of a core): counted in its deadline, it stopped the
warm-up messages of a loaded run. So the templates are compiled in the test's process
first, into the template cache the conversion process loads them from, and the process
is warmed with an ordinary message, tried again while the deadline stops it (what a
process builds is kept, so each attempt goes further), before the slow one. Real
conversion processes, MLLP, HTTP, SQLite and files.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from converter import Converter, ConverterConfig
from listeners.conversion import (
    CONVERSION_TIMEOUT,
    ConversionFailure,
    ConversionPool,
    ConversionResult,
)
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import (
    SAMPLES,
    adt,
    compile_templates,
    make_config,
    running,
    wait_until,
)

ORU = (SAMPLES / "ORU_R01_20-obx.hl7").read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")

#: The override directory holding the spinning ADT root.
SPIN_TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Turns of each of the three nested loops of a message that never ends (the sandbox's
#: largest range): 10**15 turns, years of CPU.
ENDLESS = 100_000
#: The deadline of these tests, in seconds (each endless message costs that long).
DEADLINE = 5
#: Attempts at warming a conversion process; each is stopped by the deadline at worst.
WARM_ATTEMPTS = 60


def spinning(label: str, turns: int, *, mrn: str = "MRN-0001") -> bytes:
    """An ADT^A01 whose conversion first spins ``turns``**3 loop turns (the override)."""
    return adt(f"SPIN-{turns}-{label}", mrn=mrn)


def oru(control_id: str, observations: int, *, mrn: str = "") -> bytes:
    """The ORU sample with its control id (and patient id ``mrn``), keeping its first
    order and ``observations`` copies of its first OBX (numbered, so each is its own
    Observation). (A large message for other tests: a long conversion in progress.)"""
    segments = [s for s in ORU.split(b"\r") if s]
    msh = segments[0].split(b"|")
    msh[9] = control_id.encode()
    pid = segments[1].split(b"|")
    if mrn:
        pid[3] = mrn.encode() + pid[3][pid[3].find(b"^") :]
    head = [b"|".join(msh), b"|".join(pid), *segments[2:5]]
    obx = segments[5].split(b"|")
    lines = [*head]
    for number in range(1, observations + 1):
        obx[1] = str(number).encode()
        lines.append(b"|".join(obx))
    return b"\r".join(lines) + b"\r"


def delivered_control_ids(folder: Path) -> set[str]:
    return {
        json.loads(path.read_text(encoding="utf-8"))["identifier"]["value"]
        for path in folder.rglob("*.json")
    }


def warm_service(http_url: str, message: bytes) -> None:
    """``message`` converted once through ``POST /convert`` (the service's only conversion
    process: ``convert_processes = 1``), tried again while the deadline stops it. Nothing
    is stored: no delivery, no dead letter."""
    for _ in range(WARM_ATTEMPTS):
        answer = httpx.post(f"{http_url}/convert", content=message, timeout=60)
        if answer.status_code == 200:
            return
        assert answer.status_code == 422 and "conversion stopped" in answer.text, answer.text
    raise AssertionError(f"not converted within the deadline in {WARM_ATTEMPTS} attempts")


async def warm_pool(pool: ConversionPool, message: bytes) -> list[ConversionResult]:
    """``message`` converted once by ``pool``, tried again while the deadline stops it."""
    for _ in range(WARM_ATTEMPTS):
        outcome = await asyncio.wait_for(pool.convert("default", message), 60)
        if isinstance(outcome, list):
            return outcome
        assert outcome.kind == CONVERSION_TIMEOUT, outcome
    raise AssertionError(f"not converted within the deadline in {WARM_ATTEMPTS} attempts")


def spinning_pool(cache: Path, timeout: float) -> ConversionPool:
    """One conversion process with the spinning ADT, its templates compiled here first
    (into ``cache``, which the process loads them from)."""
    config = ConverterConfig(template_dirs=(SPIN_TEMPLATES,), template_cache_dir=cache)
    Converter(config).convert(adt("COMPILE-0"))
    return ConversionPool({"default": config}, processes=1, timeout=timeout)


def test_a_slow_message_is_dead_lettered_and_the_feed_goes_on(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        {
            "converter": {"templates": [SPIN_TEMPLATES]},
            "delivery": {"conversion_timeout": DEADLINE},
        },
    )
    assert config.delivery.conversion_timeout == DEADLINE
    assert config.delivery.convert_processes == 1
    out = config.destinations["default"].folder
    assert out is not None
    compile_templates(config, [adt("COMPILE-0")])
    slow = spinning("SLOW-1", ENDLESS, mrn="MRN-SLOW")
    with running(config) as service:
        warm_service(service.http_url, adt("WARM-0", mrn="MRN-WARM"))
        # The endless ADT; then another patient; then the slow one's patient again, which
        # waits behind it and must be delivered once it is settled.
        acks = service.send([slow, adt("ADT-2", mrn="MRN-OTHER"), adt("ADT-3", mrn="MRN-SLOW")])
        assert [a.code for a in acks] == ["AA", "AA", "AA"]
        wait_until(
            lambda: delivered_control_ids(out) >= {"ADT-2", "ADT-3"},
            timeout=60 + DEADLINE,
            what="the messages after the slow one delivered",
        )
        service.drained()
        queue = service.service.queue
        assert isinstance(queue, SqliteQueue)
        (letter,) = queue.list_dead_letters(limit=10, offset=0)
        # The HTTP API stops it too, and answers 422 naming the deadline.
        answer = httpx.post(
            f"{service.http_url}/convert", content=spinning("SLOW-4", ENDLESS), timeout=60
        )
    assert delivered_control_ids(out) == {"ADT-2", "ADT-3"}
    assert letter.envelope.control_id == f"SPIN-{ENDLESS}-SLOW-1"
    assert letter.error["kind"] == CONVERSION_TIMEOUT
    assert f"conversion stopped after {DEADLINE} s" in letter.error["reason"]
    assert answer.status_code == 422, answer.text
    assert f"conversion stopped after {DEADLINE} s" in answer.text


def test_the_conversion_process_converts_again_after_a_deadline(tmp_path: Path) -> None:
    pool = spinning_pool(tmp_path / "cache", DEADLINE)
    try:
        pool.warm_up()

        async def scenario() -> list[list[ConversionResult] | ConversionFailure]:
            warm = await warm_pool(pool, adt("WARM-1"))
            return [
                warm,
                *[
                    await asyncio.wait_for(pool.convert("default", message), 60)
                    for message in (
                        spinning("SLOW-2", ENDLESS),
                        adt("AFTER-3"),
                        spinning("SLOW-4", ENDLESS),
                    )
                ],
            ]

        warm, stopped, after, again = asyncio.run(scenario())
    finally:
        pool.close(5)  # ends an endless conversion still running (a test failed)
    assert isinstance(warm, list) and warm[0].control_id == "WARM-1"
    assert isinstance(stopped, ConversionFailure) and stopped.kind == CONVERSION_TIMEOUT
    assert isinstance(after, list) and after[0].control_id == "AFTER-3"
    assert after[0].entries == warm[0].entries  # the same conversion as before the stop
    assert isinstance(again, ConversionFailure) and again.kind == CONVERSION_TIMEOUT
    assert pool.restarts == 0  # stopped in place, no process killed


def test_without_a_deadline_the_same_message_converts(tmp_path: Path) -> None:
    # The same spinning ADT with a finite spin (3.4 million turns, seconds on a loaded
    # host): it ends, and converts like any ADT, however long it took.
    pool = spinning_pool(tmp_path / "cache", 0)
    try:
        plain = asyncio.run(pool.convert("default", adt("PLAIN-1")))
        spun = asyncio.run(asyncio.wait_for(pool.convert("default", spinning("SLOW-1", 150)), 600))
    finally:
        pool.close(5)
    assert isinstance(plain, list) and isinstance(spun, list)
    assert spun[0].control_id == "SPIN-150-SLOW-1"
    assert spun[0].entries == plain[0].entries
