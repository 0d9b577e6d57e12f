"""A conversion that runs past ``delivery.conversion_timeout`` is stopped and dead-lettered.

The slow message is real: an ORU^R01 with thousands of OBX (about 1.5 ms each to
convert), so without the deadline it would convert, be delivered, and every assertion
about the dead letter would fail. Real conversion processes, MLLP, SQLite and files.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from converter import ConverterConfig
from listeners.conversion import (
    CONVERSION_TIMEOUT,
    ConversionFailure,
    ConversionPool,
    ConversionResult,
)
from tests.listeners.service.support import SAMPLES, adt, make_config, running, wait_until

ORU = (SAMPLES / "ORU_R01_20-obx.hl7").read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def oru(control_id: str, observations: int, *, mrn: str = "") -> bytes:
    """The ORU sample with its control id (and patient id ``mrn``), keeping its first
    order and ``observations`` copies of its first OBX (numbered, so each is its own
    Observation)."""
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


def test_a_slow_message_is_dead_lettered_and_the_feed_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"delivery": {"conversion_timeout": 2}})
    assert config.delivery.conversion_timeout == 2
    out = config.destinations["default"].folder
    with running(config) as service:
        # First an ADT and a small ORU of other patients: the process compiles their
        # templates (about a second, counted in the first message's deadline).
        warm = [adt("WARM-1", mrn="MRN-WARM"), oru("WARM-2", 3, mrn="MRN-WARM-2")]
        assert all(a.success for a in service.send(warm))
        wait_until(lambda: len(delivered_control_ids(out)) == 2, what="the warm-up delivered")
        # The slow ORU; then another patient; then the ORU's patient again, which waits
        # behind it and must be delivered once it is settled.
        acks = service.send([oru("SLOW-1", 4000), adt("ADT-2"), oru("ORU-3", 3)])
        assert all(a.success for a in acks)
        wait_until(
            lambda: delivered_control_ids(out) >= {"ADT-2", "ORU-3"},
            timeout=60,
            what="the messages after the slow one delivered",
        )
        service.drained()
        (letter,) = service.service.queue.list_dead_letters(limit=10, offset=0)
        # The HTTP API stops it too, and answers 422 naming the deadline.
        answer = httpx.post(f"{service.http_url}/convert", content=oru("SLOW-4", 4000), timeout=60)
    assert "SLOW-1" not in delivered_control_ids(out)
    assert letter.envelope.control_id == "SLOW-1"
    assert letter.error["kind"] == CONVERSION_TIMEOUT
    assert "conversion stopped after 2 s" in letter.error["reason"]
    assert answer.status_code == 422, answer.text
    assert "conversion stopped after 2 s" in answer.text


def test_the_conversion_process_converts_again_after_a_deadline() -> None:
    # 5 s: the first ORU of a process compiles its templates (about 2 s on an idle
    # machine, more under the full suite's load), which a 2 s deadline stopped.
    pool = ConversionPool({"default": ConverterConfig()}, processes=1, timeout=5)
    try:
        pool.warm_up()

        async def scenario() -> list[list[ConversionResult] | ConversionFailure]:
            return [
                await pool.convert("default", oru(control_id, observations))
                for control_id, observations in (
                    ("WARM-1", 3),
                    ("SLOW-2", 8000),
                    ("AFTER-3", 3),
                    ("SLOW-4", 8000),
                )
            ]

        warm, stopped, after, again = asyncio.run(scenario())
    finally:
        pool.close()
    assert isinstance(warm, list) and warm[0].control_id == "WARM-1"
    assert isinstance(stopped, ConversionFailure) and stopped.kind == CONVERSION_TIMEOUT
    assert isinstance(after, list) and after[0].control_id == "AFTER-3"
    assert after[0].entries == warm[0].entries  # the same conversion as before the stop
    assert isinstance(again, ConversionFailure) and again.kind == CONVERSION_TIMEOUT
    assert pool.restarts == 0  # stopped in place, no process killed


def test_without_a_deadline_the_same_message_converts() -> None:
    pool = ConversionPool({"default": ConverterConfig()}, processes=1, timeout=0)
    try:
        outcome = asyncio.run(pool.convert("default", oru("SLOW-1", 4000)))
    finally:
        pool.close()
    assert isinstance(outcome, list) and outcome[0].entries > 4000
