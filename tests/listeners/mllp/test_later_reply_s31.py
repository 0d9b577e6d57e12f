"""A handler's :class:`LaterReply` (the message stored, its ACK waiting for the delivery):
on a release 2 listener the commit block is written at once and the ACK when it comes;
on a release 1 listener only the ACK, as before. A failure while waiting closes the
connection without a NAK: the block was committed. Real sockets, the real server."""

from __future__ import annotations

import asyncio

import pytest

from listeners.mllp import AckBuilder, AckOutcome, LaterReply, PeerInfo, frame, parse_ack
from listeners.mllp.framing import CommitAck

from ._support import RawConnection, listener, message, port_of, run, serving

COMMIT = CommitAck.ACK.value


class Held:
    """A handler whose replies wait until the test releases them."""

    def __init__(self, *, fail: bool = False) -> None:
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, payload: bytes, peer: PeerInfo) -> LaterReply:
        async def reply() -> bytes:
            await self.release.wait()
            if self.fail:
                raise RuntimeError("the delivery wait failed")
            return AckBuilder().build(payload, AckOutcome.accept())

        return LaterReply(reply)


def test_release_2_writes_the_commit_before_the_reply_is_ready() -> None:
    async def scenario() -> None:
        held = Held()
        async with serving(held, [listener(release=2)]) as server:
            conn = await RawConnection.open(port_of(server))
            assert await conn.exchange(message("LATER-1")) == COMMIT
            # The ACK is not there yet: the reply is still held.
            assert server.stats().acks_sent == 0
            held.release.set()
            ack = await conn.read()
            assert ack is not None and parse_ack(ack).acknowledged_id == "LATER-1"
            stats = server.stats()
            assert (stats.commit_acks_sent, stats.acks_sent) == (1, 1)
            # The connection goes on: the next message is served as usual.
            assert await conn.exchange(message("LATER-2")) == COMMIT
            ack = await conn.read()
            assert ack is not None and parse_ack(ack).acknowledged_id == "LATER-2"
            await conn.close()

    run(scenario())


def test_release_1_writes_the_reply_alone_once_ready() -> None:
    async def scenario() -> None:
        held = Held()
        async with serving(held, [listener()]) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(frame(message("LATER-R1")))
            with pytest.raises(TimeoutError):
                await conn.read(timeout=0.3)  # nothing before the reply is ready
            held.release.set()
            ack = await conn.read()
            assert ack is not None and parse_ack(ack).acknowledged_id == "LATER-R1"
            assert server.stats().commit_acks_sent == 0
            await conn.close()

    run(scenario())


def test_a_failed_wait_after_the_commit_closes_without_a_nak() -> None:
    async def scenario() -> None:
        held = Held(fail=True)
        async with serving(held, [listener(release=2)]) as server:
            conn = await RawConnection.open(port_of(server))
            assert await conn.exchange(message("LATER-FAIL")) == COMMIT
            held.release.set()
            assert await conn.closed_by_server()
            stats = server.stats()
            assert (stats.commit_naks_sent, stats.handler_errors) == (0, 1)

    run(scenario())
