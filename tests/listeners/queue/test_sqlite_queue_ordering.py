"""Per-key ordering of the SQLite queue against a model, with hypothesis.

Random interleavings of puts on a few keys, claims, and random outcomes for claimed jobs
(complete, retry later, give back unsent, dead letter), clock ticks and dead-letter
retries. After every step the queue must offer exactly what the model says is claimable:
the oldest undelivered message of each key, when nothing of the key is in flight and it
is due, earliest due first, each job counting its claims less those given back. In the
end each key's messages were claimed in put order.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

KEYS = ("a", "b", "c")

_put = st.tuples(st.just("put"), st.lists(st.sampled_from(KEYS), min_size=1, max_size=4))
_claim = st.tuples(st.just("claim"), st.integers(1, 4))
_finish = st.tuples(
    st.just("finish"),
    st.integers(0, 7),
    st.sampled_from(("complete", "retry", "give_back", "dead")),
    st.sampled_from((0.0, 5.0, 20.0)),
)
_tick = st.tuples(st.just("tick"), st.sampled_from((1.0, 5.0, 30.0)))
_retry_dead = st.tuples(st.just("retry_dead"), st.integers(0, 7))
# Puts, claims and outcomes weigh more than ticks and dead-letter retries.
steps = st.lists(
    st.one_of(_put, _claim, _finish, _put, _claim, _finish, _tick, _retry_dead),
    min_size=4,
    max_size=60,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Model:
    """What the queue should hold: per key, its undelivered messages in order."""

    clock: Clock
    key_of: dict[int, str] = field(default_factory=dict)
    due: dict[int, float] = field(default_factory=dict)
    inflight: set[int] = field(default_factory=set)
    active: dict[str, list[int]] = field(default_factory=dict)
    dead: list[int] = field(default_factory=list)
    put_order: dict[str, list[int]] = field(default_factory=dict)
    claimed: dict[str, list[int]] = field(default_factory=dict)
    #: Claims counted: + 1 per claim, - 1 per give back.
    attempts: dict[int, int] = field(default_factory=dict)

    def add(self, seq: int, key: str) -> None:
        self.key_of[seq] = key
        self.attempts[seq] = 0
        self.due[seq] = self.clock.now
        self.active.setdefault(key, []).append(seq)
        self.put_order.setdefault(key, []).append(seq)

    def claimable(self, limit: int) -> list[int]:
        heads = [seqs[0] for seqs in self.active.values() if seqs]
        ready = [s for s in heads if s not in self.inflight and self.due[s] <= self.clock.now]
        return sorted(ready, key=lambda s: (self.due[s], s))[:limit]

    def finish(self, seq: int) -> None:
        self.inflight.discard(seq)
        self.active[self.key_of[seq]].remove(seq)


def check_storage(path: Path, model: Model) -> None:
    """The head flags on disk: one per busy key, on its oldest undelivered message."""
    conn = sqlite3.connect(path)
    try:
        heads = dict(conn.execute("SELECT ordering_key, seq FROM messages WHERE head = 1"))
        counts = dict(
            conn.execute("SELECT ordering_key, count(*) FROM messages WHERE head = 1 GROUP BY 1")
        )
        inflight = dict(
            conn.execute(
                "SELECT ordering_key, count(*) FROM messages WHERE state = 'inflight' GROUP BY 1"
            )
        )
    finally:
        conn.close()
    assert all(n == 1 for n in counts.values()), counts
    assert all(n == 1 for n in inflight.values()), inflight
    assert heads == {key: seqs[0] for key, seqs in model.active.items() if seqs}


async def play(path: Path, program: list[tuple[Any, ...]]) -> None:
    clock = Clock()
    model = Model(clock)
    counter = iter(range(10**6))
    async with SqliteQueue(path, commit_interval_ms=0.0, clock=clock) as queue:

        async def claim(limit: int) -> None:
            expected = model.claimable(limit)
            jobs = await queue.claim(limit)
            assert [job.seq for job in jobs] == expected
            for job in jobs:
                assert job.envelope.ordering_key == model.key_of[job.seq]
                model.attempts[job.seq] += 1
                assert job.attempts == model.attempts[job.seq]
                model.inflight.add(job.seq)
                model.claimed.setdefault(model.key_of[job.seq], []).append(job.seq)

        for step in program:
            kind = step[0]
            if kind == "put":
                envelopes = [
                    Envelope(
                        payload=b"x",
                        sender="S",
                        listener="mllp",
                        received_at=0.0,
                        ordering_key=key,
                        control_id=str(next(counter)),
                    )
                    for key in step[1]
                ]
                results = await asyncio.gather(*(queue.put(e) for e in envelopes))
                for result, env in sorted(
                    zip(results, envelopes, strict=True), key=lambda p: p[0].seq
                ):
                    assert not result.duplicate
                    model.add(result.seq, env.ordering_key)
            elif kind == "claim":
                await claim(step[1])
            elif kind == "finish" and model.inflight:
                seq = sorted(model.inflight)[step[1] % len(model.inflight)]
                action, delay = step[2], step[3]
                if action == "complete":
                    await queue.complete(seq)
                    model.finish(seq)
                elif action == "dead":
                    await queue.dead_letter(seq, {"kind": "rejected"})
                    model.finish(seq)
                    model.dead.append(seq)
                elif action == "give_back":
                    await queue.give_back(seq, delay, {"kind": "DestinationPaused"})
                    model.inflight.discard(seq)
                    model.due[seq] = clock.now + delay
                    model.attempts[seq] -= 1
                else:
                    await queue.retry_later(seq, delay, {"kind": "timeout"})
                    model.inflight.discard(seq)
                    model.due[seq] = clock.now + delay
            elif kind == "tick":
                clock.now += step[1]
            elif kind == "retry_dead" and model.dead:
                seq = model.dead.pop(step[1] % len(model.dead))
                assert await asyncio.to_thread(queue.retry_dead_letter, seq)
                conn = sqlite3.connect(path)
                (new_seq,) = conn.execute("SELECT max(seq) FROM messages").fetchone()
                conn.close()
                assert new_seq > seq
                model.add(new_seq, model.key_of[seq])
            check_storage(path, model)
            assert await queue.depth() == sum(len(seqs) for seqs in model.active.values())

        # Drain: everything undelivered is eventually claimed, in order.
        clock.now += 1_000.0
        for seq in sorted(model.inflight):
            await queue.complete(seq)
            model.finish(seq)
        while any(model.active.values()):
            progress = len(model.inflight)
            await claim(100)
            assert len(model.inflight) > progress, "undelivered messages but nothing claimable"
            for seq in sorted(model.inflight):
                await queue.complete(seq)
                model.finish(seq)
        assert await queue.depth() == 0
        assert sorted(d.id for d in queue.list_dead_letters(1000)) == sorted(model.dead)

    for key, order in model.put_order.items():
        first_claims = list(dict.fromkeys(model.claimed.get(key, [])))
        assert first_claims == order, key
        assert model.claimed[key] == sorted(model.claimed[key]), key


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
# A dead letter retried while its key is busy goes behind the busy message.
@example([("put", ["a", "a"]), ("claim", 1), ("finish", 0, "dead", 0.0), ("retry_dead", 0)])
# A retried head due later lets the other keys' older heads go first.
@example(
    [
        ("put", ["a", "b"]),
        ("claim", 1),
        ("tick", 1.0),
        ("finish", 0, "retry", 0.0),
        ("put", ["c"]),
        ("claim", 4),
    ]
)
# A head given back unsent keeps its key's later messages behind it, its claim uncounted.
@example(
    [
        ("put", ["a", "a", "b"]),
        ("claim", 4),
        ("finish", 0, "give_back", 5.0),
        ("claim", 4),
        ("tick", 5.0),
        ("claim", 4),
    ]
)
def test_claims_follow_the_model(program: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(play(Path(tmp) / "queue.db", program))
