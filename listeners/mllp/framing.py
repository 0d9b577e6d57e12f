"""MLLP framing: ``VT payload FS CR``, read incrementally with bounded memory.

:class:`FrameDecoder` is the sans-I/O core (bytes in, frames out); :class:`FrameReader`
drives it from an :class:`asyncio.StreamReader`, one chunk at a time. At most
``max_frame_bytes`` (+1) of an unfinished frame and one chunk of complete frames are ever
held, so a peer that never sends the end block, or sends a huge frame, cannot exhaust
memory.

The sans-I/O core (the block format, :class:`FrameDecoder` and its rules on bytes outside
frames, restarted and oversized frames) is :mod:`listeners.mllp.frame_decoder`; its names
are re-exported here.

:class:`FrameReader` adds two limits a server needs against peers that hold memory or
connections: ``frame_timeout`` (a frame must be complete within it, counted from its
first byte: a peer trickling a byte now and then defeats an idle timeout, not this; each
byte received moves the deadline by 1/:data:`FRAME_PROGRESS_RATE` s, up to
``max_frame_bytes`` of them, so a large message on a slow link is not cut off) and
a :class:`FrameBudget` shared by every connection, bounding the bytes of unfinished
frames held at once (each connection may hold up to ``max_frame_bytes``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ..errors import FramingError
from .frame_decoder import (
    CR,
    DEFAULT_HEAD_BYTES,
    DEFAULT_MAX_FRAME_BYTES,
    END_BLOCK,
    FS,
    PADDING,
    START_BLOCK,
    VT,
    CommitAck,
    FrameDecoder,
    FrameTooLargeError,
    IncompleteFrameError,
    OversizedFrame,
    commit_ack,
    frame,
    is_keepalive,
    unpad,
)

__all__ = [
    "CR",
    "DEFAULT_HEAD_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "END_BLOCK",
    "FRAME_PROGRESS_RATE",
    "FS",
    "PADDING",
    "START_BLOCK",
    "VT",
    "CommitAck",
    "FrameBudget",
    "FrameBudgetError",
    "FrameDecoder",
    "FrameReader",
    "FrameTimeoutError",
    "FrameTooLargeError",
    "IncompleteFrameError",
    "OversizedFrame",
    "TlsOnPlainListenerError",
    "commit_ack",
    "frame",
    "is_keepalive",
    "unpad",
]

_CHUNK = 64 * 1024
#: Bytes per second of a frame that earn it one more second past ``frame_timeout``.
#: A fixed deadline asked 170 KB/s of a 10 MB message in 60 s (1.4 Mbit/s): an ORU
#: with a PDF sent over a slower link was cut off each time, re-sent for ever, its feed
#: stalled behind it. A peer trickling bytes still meets the deadline (100 bytes earn
#: 6 ms), and the extension stops at ``max_frame_bytes`` (an endless frame at this rate
#: ends after frame_timeout + max_frame_bytes / FRAME_PROGRESS_RATE: 11 min by default).
FRAME_PROGRESS_RATE = 16 * 1024
#: How a TLS connection starts: a handshake record (0x16) of TLS 1.x / SSL 3 (0x03).
_TLS_HANDSHAKE = b"\x16\x03"


class FrameTimeoutError(FramingError):
    """A frame was not complete within ``frame_timeout`` of its first byte."""

    def __init__(self, size: int, limit: float, rate: int = FRAME_PROGRESS_RATE) -> None:
        super().__init__(
            f"frame not complete {limit:g}s after its start block, plus 1s per "
            f"{rate // 1024} KiB received ({size} bytes received)"
        )
        self.size = size
        self.limit = limit


class TlsOnPlainListenerError(FramingError):
    """The stream opens with a TLS handshake record: the peer speaks TLS to a listener
    that does not (an MLLP stream never starts with 0x16 0x03)."""

    def __init__(self) -> None:
        super().__init__(
            "the peer opened a TLS handshake, but this listener is not configured for TLS"
        )


class FrameBudgetError(FramingError):
    """Unfinished frames of every connection sharing a :class:`FrameBudget` would hold
    more than its limit; the frame that went over it is dropped."""

    def __init__(self, size: int, used: int, limit: int) -> None:
        super().__init__(
            f"unfinished frame of {size} bytes dropped: unfinished frames of all "
            f"connections would hold {used} bytes, over the maximum of {limit}"
        )
        self.size = size
        self.used = used
        self.limit = limit


class FrameBudget:
    """Bytes of unfinished frames held by the :class:`FrameReader` objects sharing it.

    Each reader counts the bytes its decoder holds; a read that would take the total
    over ``limit`` raises :class:`FrameBudgetError` in that reader (memory is first come,
    first served; ``frame_timeout`` makes sure no frame keeps its share for long).
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the frame budget must be positive")
        self.limit = limit
        #: Bytes currently counted by the readers.
        self.used = 0


class FrameReader:
    """Reads MLLP frames from a stream, one chunk at a time."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        head_bytes: int = DEFAULT_HEAD_BYTES,
        chunk_size: int = _CHUNK,
        budget: FrameBudget | None = None,
        progress_rate: int = FRAME_PROGRESS_RATE,
    ) -> None:
        self._reader = reader
        self._decoder = FrameDecoder(max_frame_bytes, head_bytes=head_bytes)
        self._frames: deque[bytes | OversizedFrame] = deque()
        self._chunk_size = chunk_size
        self._progress_rate = progress_rate
        #: Bytes read from the stream, framing included.
        self.bytes_read = 0
        self._abandoned_taken = (0, 0)
        self._budget = budget
        # Bytes of the unfinished frame counted in the budget.
        self._counted = 0
        # When the unfinished frame started (monotonic, shifted by the time spent
        # outside read_item: the caller's handling of earlier frames is not the
        # sender's delay), and when read_item last returned.
        self._frame_started: float | None = None
        self._returned_at: float | None = None

    @property
    def dropped_bytes(self) -> int:
        """Bytes read outside any frame."""
        return self._decoder.dropped_bytes

    @property
    def dropped_content_bytes(self) -> int:
        """Bytes read outside any frame that are not :data:`PADDING`."""
        return self._decoder.dropped_content_bytes

    @property
    def abandoned_frames(self) -> int:
        """Unfinished frames dropped because a new start block arrived."""
        return self._decoder.abandoned_frames

    @property
    def abandoned_bytes(self) -> int:
        """Payload bytes of the :attr:`abandoned_frames`."""
        return self._decoder.abandoned_bytes

    @property
    def oversized_frames(self) -> int:
        """Complete frames over ``max_frame_bytes``."""
        return self._decoder.oversized_frames

    def take_abandoned(self) -> tuple[int, int]:
        """Frames and bytes abandoned since the last call: ``(0, 0)`` when none.

        For the caller's log line after each :meth:`read_frame` (a count, never content).
        """
        now = (self._decoder.abandoned_frames, self._decoder.abandoned_bytes)
        taken, self._abandoned_taken = self._abandoned_taken, now
        return now[0] - taken[0], now[1] - taken[1]

    @property
    def in_frame(self) -> bool:
        """Part of a frame has been read (and not its end)."""
        return self._decoder.in_frame

    @property
    def unfinished_bytes(self) -> int:
        """Payload bytes of the unfinished frame read so far."""
        return self._decoder.frame_bytes

    @property
    def ends_with_fs(self) -> bool:
        """See :attr:`FrameDecoder.ends_with_fs`."""
        return self._decoder.ends_with_fs

    async def read_item(
        self, *, idle_timeout: float | None = None, frame_timeout: float | None = None
    ) -> bytes | OversizedFrame | None:
        """The next frame's payload, an :class:`OversizedFrame` for a frame over
        ``max_frame_bytes``, or ``None`` at end of stream between frames.

        ``idle_timeout`` bounds each wait for bytes (a slow but active sender is not cut
        off); when no byte arrives in time, :class:`TimeoutError` is raised.
        ``frame_timeout`` bounds the time from a frame's start block to its end block
        (time spent by the caller between two calls not counted); past it,
        :class:`FrameTimeoutError` is raised; each byte of the frame received moves that
        deadline by ``1 / progress_rate`` s (up to ``max_frame_bytes`` bytes). With a
        :class:`FrameBudget`, a read that takes the unfinished frames of its readers over
        the budget raises :class:`FrameBudgetError`. A stream opening with a TLS
        handshake raises :class:`TlsOnPlainListenerError`. After any of these errors, the
        reader is unusable: close the connection (and :meth:`release` the budget).
        """
        if self._frame_started is not None and self._returned_at is not None:
            self._frame_started += time.monotonic() - self._returned_at
        try:
            while not self._frames:
                data = await self._read(idle_timeout, frame_timeout)
                if not data:
                    if self._decoder.in_frame:
                        raise IncompleteFrameError(
                            f"stream ended inside a frame after {self._decoder.frame_bytes} bytes"
                        )
                    return None
                self.bytes_read += len(data)
                if self.bytes_read == len(data) and data.startswith(_TLS_HANDSHAKE):
                    # Its bytes hold VTs now and then: read as MLLP, a ClientHello left a
                    # "frame" open until frame_timeout, and logs about dropped bytes and a
                    # "restarted" sender that never said TLS.
                    raise TlsOnPlainListenerError()
                items = self._decoder.feed(data)
                if not self._decoder.in_frame:
                    self._frame_started = None
                elif items or self._frame_started is None:
                    # A frame started in this chunk (after the ones it completed).
                    self._frame_started = time.monotonic()
                self._count()
                self._frames.extend(items)
            return self._frames.popleft()
        finally:
            self._returned_at = time.monotonic()

    async def _read(self, idle_timeout: float | None, frame_timeout: float | None) -> bytes:
        timeout = idle_timeout or None
        frame_deadline = False
        if frame_timeout and self._frame_started is not None:
            progress = min(self._decoder.frame_bytes, self._decoder.max_frame_bytes)
            deadline = self._frame_started + frame_timeout + progress / self._progress_rate
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout_error(frame_timeout)
            if timeout is None or left < timeout:
                timeout, frame_deadline = left, True
        if timeout is None:
            return await self._reader.read(self._chunk_size)
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(self._chunk_size)
        except TimeoutError:
            if frame_deadline and frame_timeout:
                raise self._timeout_error(frame_timeout) from None
            raise

    def _timeout_error(self, frame_timeout: float) -> FrameTimeoutError:
        return FrameTimeoutError(self._decoder.frame_bytes, frame_timeout, self._progress_rate)

    def _count(self) -> None:
        """Bring the budget up to date with the bytes the decoder holds."""
        if self._budget is None:
            return
        held = min(self._decoder.buffered, self._decoder.max_frame_bytes)
        grown = held - self._counted
        self._budget.used += grown
        self._counted = held
        if grown > 0 and self._budget.used > self._budget.limit:
            used = self._budget.used
            self.release()
            raise FrameBudgetError(self._decoder.frame_bytes, used, self._budget.limit)

    def release(self) -> None:
        """Give back this reader's share of the budget (its connection is closing)."""
        if self._budget is not None:
            self._budget.used -= self._counted
        self._counted = 0

    async def read_frame(self, *, idle_timeout: float | None = None) -> bytes | None:
        """Like :meth:`read_item`, for readers that only take frames within the limit
        (the client reading ACKs): an oversized frame raises :class:`FrameTooLargeError`.
        The stream stays in sync: the next call reads the next frame.
        """
        item = await self.read_item(idle_timeout=idle_timeout)
        if isinstance(item, OversizedFrame):
            raise FrameTooLargeError(item)
        return item
