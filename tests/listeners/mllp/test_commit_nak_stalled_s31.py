"""A release 2 commit NAK that the peer does not take: the connection is marked stalled
(aborted, not closed) within the write timeout instead of waiting for the peer.

With asyncio's default write-buffer limits the NAK (4 bytes) only waits when what was
written before it is still unsent, which the frame loop never leaves behind (each ACK
write is drained); so the frame loop is driven directly here, on a real socket pair
whose outgoing buffers were filled first, as a peer that stopped reading while the
queue refused its message would leave them. Earlier notes listed this path as untested.
"""

from __future__ import annotations

import asyncio
import logging
import time

from listeners.mllp import PeerInfo, frame
from listeners.mllp.connection import Connection, FrameLoop, close_connection
from listeners.mllp.stats import MllpStats

from ._support import message, run

WRITE_TIMEOUT = 0.3
#: More than loopback's socket buffers take (a few MB at most with autotuning).
FILL_BYTES = 64 * 1024 * 1024


def _loop(handler_result: bytes | None) -> FrameLoop:
    async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
        return handler_result

    return FrameLoop(
        handler,
        None,
        max_frame_bytes=1 << 20,
        idle_timeout=None,
        frame_timeout=None,
        write_timeout=WRITE_TIMEOUT,
        budget=None,
        stopping=lambda: False,
        logger=logging.getLogger("test.mllp"),
        commit_listeners=frozenset({"r2"}),
    )


async def _serve_one(
    *, fill: bool, handler_result: bytes | None
) -> tuple[str, Connection, MllpStats, float]:
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    accepted = asyncio.get_running_loop().create_future()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # The peer: sends one message, then reads nothing.
    _, peer_writer = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await accepted
    if fill:
        writer.write(b"\0" * FILL_BYTES)  # not drained: the transport stays paused
    peer_writer.write(frame(message("STALL-1")))
    await peer_writer.drain()
    task = asyncio.current_task()
    assert task is not None
    conn = Connection(
        id=1, listener="r2", peer="test", task=task, writer=writer, opened=time.monotonic()
    )
    stats = MllpStats()
    started = time.monotonic()
    reason = await _loop(handler_result).serve(
        conn, PeerInfo("r2", "127.0.0.1", 0, 1), reader, writer, stats
    )
    elapsed = time.monotonic() - started
    await close_connection(writer, abort=conn.stalled)
    peer_writer.transport.abort()
    server.close()
    await server.wait_closed()
    return reason, conn, stats, elapsed


def test_a_commit_nak_not_taken_marks_the_connection_stalled_within_the_timeout() -> None:
    reason, conn, stats, elapsed = run(_serve_one(fill=True, handler_result=None))
    assert reason == "closed without reply"
    assert conn.stalled
    assert stats.commit_naks_sent == 0  # not counted as sent: it was never taken
    assert elapsed < WRITE_TIMEOUT + 5  # the timeout, not the peer, ended the wait


def test_a_commit_nak_taken_is_counted_and_the_connection_closes_normally() -> None:
    """The same refusal with buffers that take the NAK: the control case."""
    reason, conn, stats, _ = run(_serve_one(fill=False, handler_result=None))
    assert reason == "closed without reply"
    assert not conn.stalled
    assert stats.commit_naks_sent == 1
