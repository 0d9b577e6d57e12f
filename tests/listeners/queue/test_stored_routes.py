"""A stored message keeps the route it was received under: when the configuration no
longer has that route, its conversion is a dead letter saying so, not a converter bug."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from converter import ConverterConfig
from listeners.conversion import ROUTE_NOT_CONFIGURED, ConversionFailure, ConversionPool
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

REPO_ROOT = Path(__file__).resolve().parents[3]
A01 = (REPO_ROOT / "samples" / "hl7v2" / "ADT_A01_admission-full.hl7").read_bytes()


def test_a_message_of_a_route_no_longer_configured_is_a_clear_dead_letter(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[object, dict[str, object] | None]:
        # Stored under "chu-lyon"; the service restarted with the route renamed.
        async with SqliteQueue(tmp_path / "queue.db") as queue:
            stored = await queue.put(
                Envelope(
                    payload=A01,
                    sender="chu/SIH-ORCHIDEE^CHU-LYON",
                    listener="chu",
                    received_at=time.time(),
                    ordering_key="chu/SIH-ORCHIDEE^CHU-LYON|0012345678",
                    control_id="CHU-ADT-20240314-000101",
                    route="chu-lyon",
                )
            )
            (job,) = await queue.claim(1)
            pool = ConversionPool({"default": ConverterConfig()}, processes=1)
            try:
                await asyncio.get_running_loop().run_in_executor(None, pool.warm_up)
                outcome = await pool.convert(job.envelope.route, job.envelope.payload)
                # The same bytes under a configured route convert: only the route is wrong.
                converted = await pool.convert("default", job.envelope.payload)
            finally:
                pool.close()
            assert not isinstance(converted, ConversionFailure)
            assert isinstance(outcome, ConversionFailure)
            await queue.dead_letter(job.seq, outcome.as_record() | {"stage": "conversion"})
            letter = queue.get_dead_letter(stored.seq)
            return outcome, None if letter is None else letter.error

    outcome, error = asyncio.run(scenario())
    assert isinstance(outcome, ConversionFailure)
    # Before: kind InternalError, "unexpected KeyError in the converter (a bug)".
    assert outcome.kind == ROUTE_NOT_CONFIGURED
    assert "'chu-lyon'" in outcome.reason and "no longer configured" in outcome.reason
    assert "bug" not in outcome.reason
    assert error is not None and error["kind"] == ROUTE_NOT_CONFIGURED
