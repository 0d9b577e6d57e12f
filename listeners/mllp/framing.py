"""MLLP framing: ``VT payload FS CR``, read incrementally with bounded memory.

:class:`FrameDecoder` is the sans-I/O core (bytes in, frames out); :class:`FrameReader`
drives it from an :class:`asyncio.StreamReader`, one chunk at a time. At most
``max_frame_bytes`` (+1) of an unfinished frame and one chunk of complete frames are ever
held, so a peer that never sends the end block cannot exhaust memory.

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
* a frame longer than ``max_frame_bytes`` raises :class:`FramingError`, the connection
  cannot be resynchronised safely afterwards and is closed by the caller;
* end of stream inside a frame raises :class:`IncompleteFrameError`.

MLLP release 2 commit acknowledgements (``VT ACK FS CR`` / ``VT NAK FS CR``) are ordinary
frames holding one byte; :func:`commit_ack` recognises them.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque

from ..errors import FramingError

__all__ = [
    "CR",
    "DEFAULT_MAX_FRAME_BYTES",
    "END_BLOCK",
    "FS",
    "START_BLOCK",
    "VT",
    "CommitAck",
    "FrameDecoder",
    "FrameReader",
    "FrameTooLargeError",
    "IncompleteFrameError",
    "commit_ack",
    "frame",
]

VT = 0x0B
FS = 0x1C
CR = 0x0D
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_FRAME_BYTES = 10 * 1024 * 1024
_CHUNK = 64 * 1024


class FrameTooLargeError(FramingError):
    """A frame exceeded the configured maximum size."""


class IncompleteFrameError(FramingError):
    """The stream ended inside a frame (no ``FS CR``)."""


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


class FrameDecoder:
    """Incremental MLLP decoder: :meth:`feed` bytes, get the completed frames."""

    __slots__ = (
        "_broken",
        "_buf",
        "_in_frame",
        "abandoned_bytes",
        "abandoned_frames",
        "dropped_bytes",
        "max_frame_bytes",
    )

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        #: Bytes seen outside any frame, since creation.
        self.dropped_bytes = 0
        #: Unfinished frames dropped because a new start block arrived, since creation.
        self.abandoned_frames = 0
        #: Payload bytes of those frames (start blocks not counted).
        self.abandoned_bytes = 0
        self._buf = bytearray()
        self._in_frame = False
        self._broken = False

    @property
    def in_frame(self) -> bool:
        """A start block was seen and its end block was not (yet)."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished frame held in memory."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return the frames it completed, in order.

        Raises :class:`FrameTooLargeError` (and refuses further input) when the frame
        being read exceeds ``max_frame_bytes``.
        """
        if self._broken:
            raise FramingError("decoder already failed; the stream cannot be resynchronised")
        frames: list[bytes] = []
        pos = 0
        size = len(data)
        buf = self._buf
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
            # The end block may straddle two reads: FS last in the buffer, CR first here.
            if buf and buf[-1] == FS and data[pos] == CR:
                frames.append(self._finish(len(buf) - 1))
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
                self.abandoned_bytes += len(buf) + restart - pos - (starts - 1)
                buf.clear()
                pos = restart + 1
            if end < 0:
                length = len(buf) + size - pos
                if data[-1] == FS:
                    length -= 1  # may be the first half of the end block
                self._check_size(length)
                buf += data[pos:]
                break
            self._check_size(len(buf) + end - pos)
            buf += data[pos:end]
            frames.append(self._finish(len(buf)))
            pos = end + 2
        return frames

    def _check_size(self, length: int) -> None:
        if length > self.max_frame_bytes:
            self._broken = True
            self._buf = bytearray()
            raise FrameTooLargeError(f"frame exceeds the maximum of {self.max_frame_bytes} bytes")

    def _finish(self, length: int) -> bytes:
        payload = bytes(self._buf[:length])
        self._buf.clear()
        self._in_frame = False
        return payload


class FrameReader:
    """Reads MLLP frames from a stream, one chunk at a time."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        chunk_size: int = _CHUNK,
    ) -> None:
        self._reader = reader
        self._decoder = FrameDecoder(max_frame_bytes)
        self._frames: deque[bytes] = deque()
        self._chunk_size = chunk_size
        #: Bytes read from the stream, framing included.
        self.bytes_read = 0
        self._abandoned_taken = (0, 0)

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

    async def read_frame(self, *, idle_timeout: float | None = None) -> bytes | None:
        """The next frame's payload, or ``None`` at end of stream between frames.

        ``idle_timeout`` bounds each wait for bytes (a slow but active sender is not cut
        off); when no byte arrives in time, :class:`TimeoutError` is raised.
        """
        while not self._frames:
            if idle_timeout:
                async with asyncio.timeout(idle_timeout):
                    data = await self._reader.read(self._chunk_size)
            else:
                data = await self._reader.read(self._chunk_size)
            if not data:
                if self._decoder.in_frame:
                    raise IncompleteFrameError(
                        f"stream ended inside a frame after {self._decoder.buffered} bytes"
                    )
                return None
            self.bytes_read += len(data)
            self._frames.extend(self._decoder.feed(data))
        return self._frames.popleft()
