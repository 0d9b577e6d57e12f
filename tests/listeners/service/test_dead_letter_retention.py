"""The service applies ``queue.dead_letter_retention`` from its configuration: a dead
letter older than the configured period is deleted by the running service and counted
in ``passerelle_dead_letters_expired_total`` (the queue's own tests cover the chunks)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.queue.test_sqlite_queue import Clock

from .support import RunningService, adt, make_config, wait_until

HOUR = 3600.0


def _store_dead_letter(path: Path, failed_at: float) -> None:
    async def main() -> None:
        async with SqliteQueue(path, clock=Clock(failed_at), dead_letter_retention=None) as queue:
            envelope = Envelope(
                payload=adt("RET-1"),
                sender="APP-A^FAC-A",
                listener="mllp",
                received_at=failed_at,
                ordering_key="patient-ret-1",
                control_id="RET-1",
                message_type="ADT^A01",
            )
            await queue.put_dead_letter(envelope, {"kind": "mapping"})

    asyncio.run(main())


def test_the_configured_retention_deletes_older_dead_letters(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"queue": {"dead_letter_retention": "1h"}})
    config.queue.path.parent.mkdir(parents=True, exist_ok=True)
    # Failed two hours ago: past the configured hour, well within the 30-day default.
    _store_dead_letter(config.queue.path, time.time() - 2 * HOUR)
    assert len(SqliteQueue(config.queue.path).list_dead_letters(limit=10)) == 1
    with RunningService(config) as service:
        wait_until(
            lambda: service.metrics().value("passerelle_dead_letters_expired_total") == 1,
            timeout=30,
            what="the dead letter expired",
        )
    assert SqliteQueue(config.queue.path).list_dead_letters(limit=10) == []
