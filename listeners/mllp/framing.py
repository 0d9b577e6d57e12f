"""MLLP framing: ``VT payload FS CR``, read incrementally with bounded memory.

:class:`FrameDecoder` is the sans-I/O core (bytes in, frames out); :class:`FrameReader`
drives it from an :class:`asyncio.StreamReader`, one chunk at a time. At most
``max_frame_bytes`` (+1) of an unfinished frame and one chunk of complete frames are ever
held, so a peer that never sends the end block, or sends a huge frame, cannot exhaust
memory.

Rules:

* bytes outside a frame (before ``VT``, or between ``FS CR`` and the next ``VT``) are
  dropped and counted, as Google's MLLP adapter does;
* a ``VT`` inside a frame starts a new frame: the unfinished one is dropped (its memory
  released) and counted (``abandoned_frames``, ``abandoned_bytes``). HL7 text never
  holds a raw VT (it would be written ``\\X0B\\``), so a VT means the sender gave up on a
  frame and started again, typically re-sending the same message on the same
  connection. Kept as payload (as Mirth does), the remains of the first attempt and the
  whole second one would make one frame, acknowledged under the first attempt's MSH-10
  and then failing to parse;
* ``FS`` not followed by ``CR`` is payload (only ``FS CR`` ends a frame);
* a frame longer than ``max_frame_bytes`` is not held: its head (the first
  ``head_bytes``, 64 KiB or ``max_frame_bytes`` if smaller, enough for MSH) is kept, the
  rest is counted and discarded up to its end block, and the decoder emits an
  :class:`OversizedFrame` in its place. The stream stays in sync, so the receiver can
  answer (an AR naming MSH-10) and go on with the next frame: a sender whose message is
  met with a closed connection and no ACK re-sends it forever, and its whole feed stalls
  behind it. A ``VT`` inside an oversized frame abandons it like any unfinished frame
  (the sender restarted: no answer is owed for it);
* end of stream inside a frame raises :class:`IncompleteFrameError`.

:class:`FrameReader` adds two limits a server needs against peers that hold memory or
connections: ``frame_timeout`` (a frame must be complete within it, counted from its
first byte: a peer trickling a byte now and then defeats an idle timeout, not this) and
a :class:`FrameBudget` shared by every connection, bounding the bytes of unfinished
frames held at once (each connection may hold up to ``max_frame_bytes``).

MLLP release 2 commit acknowledgements (``VT ACK FS CR`` / ``VT NAK FS CR``) are ordinary
frames holding one byte; :func:`commit_ack` recognises them.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from dataclasses import dataclass

from ..errors import FramingError

__all__ = [
    "CR",
    "DEFAULT_HEAD_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "END_BLOCK",
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

VT = 0x0B
FS = 0x1C
CR = 0x0D
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_FRAME_BYTES = 10 * 1024 * 1024
#: Bytes of an oversized frame kept to answer it (MSH is far shorter).
DEFAULT_HEAD_BYTES = 64 * 1024
_CHUNK = 64 * 1024
#: What may pad a message in its frame: blanks, line ends (VT and FF too, as in
#: ``bytes.strip``) and NULs, which some engines send around and between messages (a
#: fixed-size buffer; Mirth issue #249). No message is made of them.
PADDING = b"\0 \t\r\n\x0b\x0c"
#: How a TLS connection starts: a handshake record (0x16) of TLS 1.x / SSL 3 (0x03).
_TLS_HANDSHAKE = b"\x16\x03"


class FrameTooLargeError(FramingError):
    """A frame exceeded the configured maximum size (raised by
    :meth:`FrameReader.read_frame`, for readers that have no use for the head)."""

    def __init__(self, oversized: OversizedFrame) -> None:
        super().__init__(
            f"frame of {oversized.size} bytes exceeds the maximum of {oversized.limit} bytes"
        )
        self.oversized = oversized


class IncompleteFrameError(FramingError):
    """The stream ended inside a frame (no ``FS CR``)."""


class FrameTimeoutError(FramingError):
    """A frame was not complete within ``frame_timeout`` of its first byte."""

    def __init__(self, size: int, limit: float) -> None:
        super().__init__(
            f"frame not complete {limit:g}s after its start block ({size} bytes received)"
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


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """Stands for a complete frame over ``max_frame_bytes``, which was not kept."""

    #: The first bytes of the payload (at most the decoder's ``head_bytes``).
    head: bytes
    #: Payload bytes of the whole frame (start and end blocks not counted).
    size: int
    #: The ``max_frame_bytes`` it exceeded.
    limit: int


class CommitAck(enum.Enum):
    """MLLP release 2 commit acknowledgement block."""

    ACK = b"\x06"
    NAK = b"\x15"


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an MLLP block."""
    return START_BLOCK + payload + END_BLOCK


def commit_ack(payload: bytes) -> CommitAck | None:
    """The commit acknowledgement a frame payload is, or ``None`` for an HL7 message."""
    if payload == CommitAck.ACK.value:
        return CommitAck.ACK
    if payload == CommitAck.NAK.value:
        return CommitAck.NAK
    return None


def is_keepalive(payload: bytes) -> bool:
    """Whether a frame's payload is a keep-alive: empty, or nothing but :data:`PADDING`."""
    return not payload.strip(PADDING)


def unpad(payload: bytes) -> bytes:
    """``payload`` without the NULs of its :data:`PADDING` (before its first and after its
    last other byte); every other byte kept (``payload`` itself when it has none)."""
    body = payload.strip(PADDING)
    if not body:
        return b""
    start = len(payload) - len(payload.lstrip(PADDING))
    lead, tail = payload[:start], payload[start + len(body) :]
    if b"\0" not in lead and b"\0" not in tail:
        return payload
    return lead.replace(b"\0", b"") + body + tail.replace(b"\0", b"")


class FrameDecoder:
    """Incremental MLLP decoder: :meth:`feed` bytes, get the completed frames."""

    __slots__ = (
        "_buf",
        "_fs_pending",
        "_in_frame",
        "_oversized",
        "_size",
        "abandoned_bytes",
        "abandoned_frames",
        "dropped_bytes",
        "head_bytes",
        "max_frame_bytes",
        "oversized_frames",
    )

    def __init__(
        self,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        *,
        head_bytes: int = DEFAULT_HEAD_BYTES,
    ) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        if head_bytes < 1:
            raise ValueError("head_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        #: Bytes of an oversized frame's payload kept in its :class:`OversizedFrame`.
        self.head_bytes = min(head_bytes, max_frame_bytes)
        #: Bytes seen outside any frame, since creation.
        self.dropped_bytes = 0
        #: Unfinished frames dropped because a new start block arrived, since creation.
        self.abandoned_frames = 0
        #: Payload bytes of those frames (start blocks not counted).
        self.abandoned_bytes = 0
        #: Complete frames over ``max_frame_bytes`` (emitted as :class:`OversizedFrame`).
        self.oversized_frames = 0
        # The frame being read: its payload (only its head once it is oversized), its
        # size so far, whether it went over the limit, whether its last byte was an FS
        # (maybe the first half of an end block split across two reads).
        self._buf = bytearray()
        self._size = 0
        self._oversized = False
        self._fs_pending = False
        self._in_frame = False

    @property
    def in_frame(self) -> bool:
        """A start block was seen and its end block was not (yet)."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished frame held in memory (at most ``max_frame_bytes`` + 1)."""
        return len(self._buf)

    @property
    def frame_bytes(self) -> int:
        """Payload bytes of the unfinished frame read so far, held or discarded."""
        return self._size

    @property
    def ends_with_fs(self) -> bool:
        """The unfinished frame's last byte is an FS (no CR after it yet): a sender ending
        its frames with FS alone, whose frames never end, looks like this."""
        return self._in_frame and self._fs_pending

    def feed(self, data: bytes) -> list[bytes | OversizedFrame]:
        """Consume ``data``; return the frames it completed, in order: each frame's
        payload, or an :class:`OversizedFrame` for one over ``max_frame_bytes``."""
        frames: list[bytes | OversizedFrame] = []
        pos = 0
        size = len(data)
        while pos < size:
            if not self._in_frame:
                start = data.find(START_BLOCK, pos)
                if start < 0:
                    self.dropped_bytes += size - pos
                    break
                self.dropped_bytes += start - pos
                self._in_frame = True
                pos = start + 1
                continue
            # The end block may straddle two reads: FS last in the previous one, CR first here.
            if self._fs_pending and data[pos] == CR:
                frames.append(self._finish(fs_pending=True))
                pos += 1
                continue
            end = data.find(END_BLOCK, pos)
            # A VT before the end block (or the end of this chunk) restarts the frame; the
            # last such VT is where the frame that counts begins. find/count run in C, so
            # a stream of VTs costs no more than any other bytes.
            limit = size if end < 0 else end
            restart = data.rfind(START_BLOCK, pos, limit)
            if restart >= 0:
                starts = data.count(START_BLOCK, pos, restart) + 1
                self.abandoned_frames += starts
                self.abandoned_bytes += self._size + restart - pos - (starts - 1)
                self._reset()
                self._in_frame = True
                pos = restart + 1
            if end < 0:
                # A final FS may be the first half of the end block: not counted yet.
                self._fs_pending = data[-1] == FS
                self._take(data, pos, size, pending=int(self._fs_pending))
                break
            self._take(data, pos, end)
            frames.append(self._finish(fs_pending=False))
            pos = end + 2
        return frames

    def _take(self, data: bytes, start: int, stop: int, *, pending: int = 0) -> None:
        """Add ``data[start:stop]`` to the frame, keeping only the head once oversized;
        ``pending`` bytes at the end (an FS) do not count against the limit yet."""
        count = stop - start
        if not self._oversized and self._size + count - pending > self.max_frame_bytes:
            self._oversized = True
            # Release what is held beyond the head at once (up to max_frame_bytes).
            del self._buf[self.head_bytes :]
        if self._oversized:
            room = self.head_bytes - len(self._buf)
            if room > 0:
                self._buf += data[start : start + min(room, count)]
        else:
            self._buf += data[start:stop]
        self._size += count

    def _finish(self, *, fs_pending: bool) -> bytes | OversizedFrame:
        """The frame just completed; ``fs_pending``: its last byte read is the end block's FS."""
        size = self._size - fs_pending
        item: bytes | OversizedFrame
        if self._oversized:
            # The head is full here (size > max_frame_bytes ≥ head_bytes), so the FS
            # of the end block, past it, is never in it.
            item = OversizedFrame(bytes(self._buf[:size]), size, self.max_frame_bytes)
            self.oversized_frames += 1
        else:
            item = bytes(self._buf[:size])
        self._reset()
        return item

    def _reset(self) -> None:
        self._buf.clear()
        self._size = 0
        self._oversized = False
        self._fs_pending = False
        self._in_frame = False


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
    ) -> None:
        self._reader = reader
        self._decoder = FrameDecoder(max_frame_bytes, head_bytes=head_bytes)
        self._frames: deque[bytes | OversizedFrame] = deque()
        self._chunk_size = chunk_size
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
        :class:`FrameTimeoutError` is raised. With a :class:`FrameBudget`, a read that
        takes the unfinished frames of its readers over the budget raises
        :class:`FrameBudgetError`. A stream opening with a TLS handshake raises
        :class:`TlsOnPlainListenerError`. After any of these errors, the reader is unusable:
        close the connection (and :meth:`release` the budget).
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
            left = self._frame_started + frame_timeout - time.monotonic()
            if left <= 0:
                raise FrameTimeoutError(self._decoder.frame_bytes, frame_timeout)
            if timeout is None or left < timeout:
                timeout, frame_deadline = left, True
        if timeout is None:
            return await self._reader.read(self._chunk_size)
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(self._chunk_size)
        except TimeoutError:
            if frame_deadline and frame_timeout:
                raise FrameTimeoutError(self._decoder.frame_bytes, frame_timeout) from None
            raise

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
