"""A second process for the SQLite queue tests (run by path, not collected).

python sqlite_queue_child.py put DB PRODUCERS   put until killed; print "<seq> <control id>"
                                                for each acknowledged put
python sqlite_queue_child.py claim DB           claim everything, print "claimed N", hang
python sqlite_queue_child.py admin DB COMMAND [ARG]
                                                list | show ID | retry ID | retry-all |
                                                purge [OLDER_THAN]: prints JSON
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from pathlib import Path

from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def put_forever(path: Path, producers: int) -> None:
    queue = SqliteQueue(path, commit_interval_ms=1.0)
    await queue.start()
    _print("ready")
    counter = itertools.count()

    async def producer() -> None:
        while True:
            n = next(counter)
            control_id = f"{os.getpid()}-{n}"
            envelope = Envelope(
                payload=b"MSH|^~\\&|" + control_id.encode() * 20,
                sender="APP^FAC",
                listener="mllp",
                received_at=time.time(),
                ordering_key=f"patient-{n % 7}",
                control_id=control_id,
            )
            result = await queue.put(envelope)
            _print(f"{result.seq} {control_id}")

    await asyncio.gather(*(producer() for _ in range(producers)))


async def claim_and_hang(path: Path) -> None:
    queue = SqliteQueue(path, commit_interval_ms=0.0)
    await queue.start()
    jobs = await queue.claim(1000)
    _print(f"claimed {' '.join(str(job.seq) for job in jobs)}")
    await asyncio.sleep(3600)


def admin(path: Path, command: str, arg: str | None) -> None:
    queue = SqliteQueue(path)
    result: object
    if command == "list":
        result = [
            {"id": d.id, "payload": d.envelope.payload.decode(), "error": d.error}
            for d in queue.list_dead_letters(100)
        ]
    elif command == "show":
        letter = queue.get_dead_letter(int(arg or 0))
        result = None if letter is None else letter.envelope.payload.decode()
    elif command == "retry":
        result = queue.retry_dead_letter(int(arg or 0))
    elif command == "retry-all":
        result = queue.retry_all_dead_letters()
    elif command == "purge":
        result = queue.purge_dead_letters(None if arg is None else float(arg))
    else:
        raise SystemExit(f"unknown command {command}")
    _print(json.dumps(result))


def main() -> None:
    mode, path = sys.argv[1], Path(sys.argv[2])
    if mode == "put":
        asyncio.run(put_forever(path, int(sys.argv[3])))
    elif mode == "claim":
        asyncio.run(claim_and_hang(path))
    else:
        admin(path, sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)


if __name__ == "__main__":
    main()
