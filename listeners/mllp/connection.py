"""One accepted MLLP connection: its frame loop and its closing.

:class:`FrameLoop` reads one frame at a time (within ``idle_timeout``, ``frame_timeout``
and the unfinished-bytes budget shared by all connections), awaits the handler, writes
the ACK it returns, and tells why the connection should close. An MLLP release 2 commit
acknowledgement from the peer (a block holding 0x06 or 0x15) is not a message: it is
counted and not answered. A plain connection whose stream opens with a TLS handshake is
closed at once, saying so. Accepting, TLS, ``max_connections`` and shutdown are
:mod:`.server`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..logs import describe_exception
from .framing import (
    PADDING,
    CommitAck,
    FrameBudget,
    FrameBudgetError,
    FrameReader,
    FrameTimeoutError,
    IncompleteFrameError,
    OversizedFrame,
    TlsOnPlainListenerError,
    commit_ack,
    frame,
    is_keepalive,
    unpad,
)
from .handler import Handler, LaterReply, OversizedHandler, PeerInfo
from .stats import MllpStats

__all__ = ["CLOSE_TIMEOUT", "Connection", "FrameLoop", "close_connection"]

#: Seconds to wait for a connection (or a listener) to close.
CLOSE_TIMEOUT = 2.0


@dataclass(slots=True)
class Connection:
    """One accepted connection: what the server tracks and logs about it."""

    id: int
    listener: str
    peer: str
    task: asyncio.Task[None]
    writer: asyncio.StreamWriter
    opened: float
    busy: bool = False
    frames: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: int = 0
    #: Of them, bytes that are not line ends, blanks or NULs.
    dropped_content: int = 0
    #: An ACK stayed unsent past ``write_timeout``: the connection is aborted, not
    #: closed (a close would wait for the peer to read that ACK, for ever).
    stalled: bool = False


class FrameLoop:
    """Serves the frames of a connection, one at a time, with the server's settings."""

    def __init__(
        self,
        handler: Handler,
        on_oversized: OversizedHandler | None,
        *,
        max_frame_bytes: int,
        idle_timeout: float | None,
        frame_timeout: float | None,
        write_timeout: float | None = None,
        budget: FrameBudget | None,
        stopping: Callable[[], bool],
        logger: logging.Logger,
        commit_listeners: frozenset[str] = frozenset(),
    ) -> None:
        self._handler = handler
        #: Listeners whose senders speak MLLP release 2 (commit acknowledgement blocks).
        self._commit_listeners = commit_listeners
        self._on_oversized = on_oversized
        self._max_frame_bytes = max_frame_bytes
        self._idle_timeout = idle_timeout
        self._frame_timeout = frame_timeout
        # Each ACK write waits at most this long for the peer to take it (and no longer
        # than idle_timeout): with idle_timeout 0 a peer that never reads its ACKs held
        # its connection, its task and a max_connections slot until shutdown.
        limits = [t for t in (idle_timeout, write_timeout) if t]
        self._write_timeout = min(limits) if limits else None
        self._budget = budget
        #: Whether the server is stopping: the loop then reads no further frame.
        self._stopping = stopping
        self._log = logger

    def _unpadded(self, conn: Connection, item: bytes | OversizedFrame) -> bytes | OversizedFrame:
        """The frame without the NUL bytes padding its message (see :func:`unpad`): kept,
        they made the message's last segment unreadable, so it was acknowledged (its MSH
        was read) and then failed its conversion, a dead letter; at its start, an AR."""
        if isinstance(item, OversizedFrame):
            # Only its head is known (read for MSH-10): its start may be padded.
            rest = item.head.lstrip(PADDING)
            lead = item.head[: len(item.head) - len(rest)]
            if b"\0" not in lead:
                return item
            return replace(item, head=lead.replace(b"\0", b"") + rest)
        unpadded = unpad(item)
        if len(unpadded) != len(item):
            self._log.debug(
                "mllp#%d: %d NUL byte(s) padding the message removed",
                conn.id,
                len(item) - len(unpadded),
            )
        return unpadded

    def _log_dropped(self, conn: Connection, dropped: int, content: int) -> None:
        """Bytes dropped outside frames: a WARNING for the first text on a connection (a
        sender not framing its messages), DEBUG otherwise. Line ends, blanks and NULs
        alone (a sender ending every frame with FS CR LF) were a WARNING once per
        connection too: one per message from a sender opening a connection for each."""
        new_content = content - conn.dropped_content
        if new_content:
            self._log.log(
                logging.DEBUG if conn.dropped_content else logging.WARNING,
                "mllp#%d: dropped %d byte(s) outside MLLP frames",
                conn.id,
                dropped,
            )
            conn.dropped_content = content
            return
        self._log.debug(
            "mllp#%d: dropped %d byte(s) of line ends or blanks between MLLP frames",
            conn.id,
            dropped,
        )

    async def serve(
        self,
        conn: Connection,
        peer: PeerInfo,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stats: MllpStats,
    ) -> str:
        """Serve frames until the connection should close; return why."""
        frames = FrameReader(reader, max_frame_bytes=self._max_frame_bytes, budget=self._budget)
        try:
            return await self._serve_frames(conn, peer, frames, writer, stats)
        finally:
            frames.release()

    async def _serve_frames(
        self,
        conn: Connection,
        peer: PeerInfo,
        frames: FrameReader,
        writer: asyncio.StreamWriter,
        stats: MllpStats,
    ) -> str:
        release2 = conn.listener in self._commit_listeners
        while not self._stopping():
            try:
                item = await frames.read_item(
                    idle_timeout=self._idle_timeout, frame_timeout=self._frame_timeout
                )
            except TimeoutError:
                stats.idle_timeouts += 1
                if frames.in_frame:
                    # Not a quiet connection: a frame was left unfinished (frame_timeout 0).
                    self._log.warning(
                        "mllp#%d %s from %s: no byte for %gs inside a frame of %d bytes%s; "
                        "closing without ACK",
                        conn.id,
                        conn.listener,
                        conn.peer,
                        self._idle_timeout,
                        frames.unfinished_bytes,
                        _fs_hint(frames),
                    )
                return f"idle for {self._idle_timeout:g}s"
            except FrameTimeoutError as exc:
                stats.frame_timeouts += 1
                self._log.warning(
                    "mllp#%d %s from %s: %s%s (mllp.frame_timeout); closing without ACK",
                    conn.id,
                    conn.listener,
                    conn.peer,
                    exc,
                    _fs_hint(frames),
                )
                return "frame timeout"
            except FrameBudgetError as exc:
                stats.unfinished_bytes_refusals += 1
                self._log.warning(
                    "mllp#%d %s from %s: %s (mllp.max_unfinished_bytes); closing without "
                    "ACK, the sender will send it again",
                    conn.id,
                    conn.listener,
                    conn.peer,
                    exc,
                )
                return "unfinished frames over the memory budget"
            except TlsOnPlainListenerError as exc:
                stats.tls_handshake_failures += 1
                self._log.warning(
                    "mllp#%d %s from %s: %s; closing (enable TLS on the listener, or "
                    "disable it on the sender)",
                    conn.id,
                    conn.listener,
                    conn.peer,
                    exc,
                )
                return "TLS on a plain listener"
            except IncompleteFrameError as exc:
                stats.truncated_frames += 1
                self._log.warning("mllp#%d: %s%s; no ACK sent", conn.id, exc, _fs_hint(frames))
                return "truncated frame"
            except (ConnectionError, ssl.SSLError) as exc:
                return f"connection error ({type(exc).__name__})"
            finally:
                stats.bytes_received += frames.bytes_read - conn.bytes_in
                conn.bytes_in = frames.bytes_read
                dropped = frames.dropped_bytes - conn.dropped
                if dropped:
                    self._log_dropped(conn, dropped, frames.dropped_content_bytes)
                    stats.dropped_bytes += dropped
                    conn.dropped = frames.dropped_bytes
                if (abandoned := frames.take_abandoned())[0]:
                    self._log.warning(
                        "mllp#%d: dropped %d unfinished frame(s), %d byte(s): a start block "
                        "arrived before the end block (the sender restarted)",
                        conn.id,
                        *abandoned,
                    )
            if item is None:
                return "closed by peer"
            if isinstance(item, bytes) and (kind_of := commit_ack(item)) is not None:
                # An MLLP release 2 peer commits each block it receives, our ACKs included.
                # Answered as a message (an AR without MSA-2), each commit drew an AR that
                # the peer committed in turn, and its next ACK read was not its message's.
                stats.commit_acks += 1
                self._log.log(
                    logging.WARNING if kind_of is CommitAck.NAK else logging.DEBUG,
                    "mllp#%d %s from %s: MLLP commit %s received; not answered",
                    conn.id,
                    conn.listener,
                    conn.peer,
                    "NAK (the peer could not commit our last ACK)"
                    if kind_of is CommitAck.NAK
                    else "acknowledgement",
                )
                continue
            if isinstance(item, bytes) and is_keepalive(item):
                # A keep-alive (heartbeat) some engines send on a quiet connection, empty
                # or padded with blanks or NUL bytes. Handed to the handler it drew an AR
                # (no MSH), which such an engine logs as a rejected message, or reads as
                # the ACK of its next one.
                stats.keepalives += 1
                self._log.debug(
                    "mllp#%d %s from %s: empty frame (%d byte(s)), a keep-alive; not answered",
                    conn.id,
                    conn.listener,
                    conn.peer,
                    len(item),
                )
                continue
            item = self._unpadded(conn, item)
            conn.busy = True
            started = time.perf_counter()
            if isinstance(item, OversizedFrame):
                stats.framing_errors += 1
                size, kind = item.size, "oversized frame"
                if self._on_oversized is None:
                    self._log.warning(
                        "mllp#%d %s from %s: frame of %d bytes exceeds the maximum of %d "
                        "bytes; closing without reply",
                        conn.id,
                        conn.listener,
                        conn.peer,
                        item.size,
                        item.limit,
                    )
                    if release2:
                        await self._commit_nak(conn, writer, stats)
                    return "frame too large"
                answer = functools.partial(self._on_oversized, item, peer)
            else:
                conn.frames += 1
                stats.frames += 1
                size, kind = len(item), "frame"
                answer = functools.partial(self._handler, item, peer)
            try:
                reply = await answer()
            except Exception as exc:
                stats.handler_errors += 1
                self._log.error(
                    "mllp#%d: handler failed on a %d-byte %s: %s; closing without ACK",
                    conn.id,
                    size,
                    kind,
                    describe_exception(exc),
                )
                if release2:
                    await self._commit_nak(conn, writer, stats)
                return "handler error"
            elapsed = (time.perf_counter() - started) * 1000
            if reply is None:
                stats.closed_without_reply += 1
                self._log.warning(
                    "mllp#%d: no ACK for a %d-byte %s (handler declined, "
                    "%.1f ms); closing so that the sender re-sends",
                    conn.id,
                    size,
                    kind,
                    elapsed,
                )
                if release2:
                    await self._commit_nak(conn, writer, stats)
                return "closed without reply"
            # Release 2: the commit acknowledgement comes first, with the reply in one
            # write. The handler returns once the message is durably stored (or refused
            # with an AR / answered without storing: the HL7 reply says which), so the
            # block is taken care of; a message answered with no reply (MSH-15 NE, a
            # received ACK) is committed too, as every block of content must be.
            commit = frame(CommitAck.ACK.value) if release2 else b""
            if isinstance(reply, LaterReply):
                # Stored; the reply waits (for the delivery): the commit goes now.
                if commit:
                    closing = await self._write(conn, writer, stats, commit)
                    if closing is not None:
                        return closing
                    stats.commit_acks_sent += 1
                    commit = b""
                try:
                    reply = await reply.reply()
                except Exception as exc:
                    stats.handler_errors += 1
                    self._log.error(
                        "mllp#%d: handler failed on the reply to a stored %d-byte %s: %s; "
                        "closing without ACK",
                        conn.id,
                        size,
                        kind,
                        describe_exception(exc),
                    )
                    return "handler error"
                elapsed = (time.perf_counter() - started) * 1000
            if reply or commit:
                closing = await self._write(
                    conn, writer, stats, commit + (frame(reply) if reply else b"")
                )
                if closing is not None:
                    return closing
                if reply:
                    stats.acks_sent += 1
                if commit:
                    stats.commit_acks_sent += 1
            self._log.debug(
                "mllp#%d: %s of %d bytes, reply of %d bytes, %.1f ms",
                conn.id,
                kind,
                size,
                len(reply),
                elapsed,
            )
            conn.busy = False
        return "server shutdown"

    async def _write(
        self, conn: Connection, writer: asyncio.StreamWriter, stats: MllpStats, data: bytes
    ) -> str | None:
        """Write and drain within ``write_timeout``; why the connection must close, if it
        must (the peer does not take what is written, or is gone)."""
        try:
            writer.write(data)
            async with asyncio.timeout(self._write_timeout):
                await writer.drain()
        except TimeoutError:
            stats.write_timeouts += 1
            conn.stalled = True
            self._log.warning(
                "mllp#%d %s from %s: an ACK of %d bytes not taken by the peer within "
                "%gs (it does not read its ACKs); aborting the connection",
                conn.id,
                conn.listener,
                conn.peer,
                len(data),
                self._write_timeout,
            )
            return "ACK not taken by the peer (write timeout)"
        except (ConnectionError, ssl.SSLError) as exc:
            return f"ACK not delivered ({type(exc).__name__})"
        stats.bytes_sent += len(data)
        conn.bytes_out += len(data)
        return None

    async def _commit_nak(
        self, conn: Connection, writer: asyncio.StreamWriter, stats: MllpStats
    ) -> None:
        """Tell a release 2 sender its block was not committed (it sends it again) before
        the connection closes; best effort: the close says the same to any sender."""
        data = frame(CommitAck.NAK.value)
        try:
            writer.write(data)
            async with asyncio.timeout(self._write_timeout or CLOSE_TIMEOUT):
                await writer.drain()
        except TimeoutError:
            conn.stalled = True  # a peer not reading: the close must not wait for it
            return
        except (ConnectionError, ssl.SSLError):
            return
        stats.commit_naks_sent += 1
        stats.bytes_sent += len(data)
        conn.bytes_out += len(data)


def _fs_hint(frames: FrameReader) -> str:
    """What an operator needs when a frame never ended on an FS: a sender ending its frames
    with FS alone (no CR) sees every message go unacknowledged, and the bare "frame not
    complete" does not say why."""
    if not frames.ends_with_fs:
        return ""
    return (
        "; it ends with an FS (0x1C) and no CR: the sender's end block looks incomplete "
        "(MLLP ends a frame with FS CR, 0x1C 0x0D)"
    )


async def close_connection(writer: asyncio.StreamWriter, *, abort: bool) -> None:
    """Close gracefully (flush, within CLOSE_TIMEOUT), or abort (drop what is unsent)."""
    if abort:
        writer.transport.abort()
        return
    writer.close()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
