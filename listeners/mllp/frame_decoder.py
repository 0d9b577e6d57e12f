"""MLLP framing, sans I/O: ``VT payload FS CR`` blocks, and :class:`FrameDecoder`, which
takes bytes and gives the completed frames, holding at most ``max_frame_bytes`` (+1) of an
unfinished frame. :mod:`listeners.mllp.framing` reads them from a stream (and re-exports
every name here: import them from there).

Rules:

* bytes outside a frame (before ``VT``, or between ``FS CR`` and the next ``VT``) are
  dropped and counted, as Google's MLLP adapter does; those that are not
  :data:`PADDING` (not a line end or blanks a sender puts after each frame) are also
  counted in ``dropped_content_bytes``;
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

MLLP release 2 commit acknowledgements (``VT ACK FS CR`` / ``VT NAK FS CR``) are ordinary
frames holding one byte; :func:`commit_ack` recognises them.
"""

from __future__ import annotations

import enum
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
    "FrameDecoder",
    "FrameTooLargeError",
    "IncompleteFrameError",
    "OversizedFrame",
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
#: What may pad a message in its frame: blanks, line ends (VT and FF too, as in
#: ``bytes.strip``) and NULs, which some engines send around and between messages (a
#: fixed-size buffer; Mirth issue #249). No message is made of them.
PADDING = b"\0 \t\r\n\x0b\x0c"


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
        "dropped_content_bytes",
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
        #: Those of them that are not :data:`PADDING` (the line ends, blanks and NULs
        #: some senders put between frames): text sent outside the framing.
        self.dropped_content_bytes = 0
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
                self._drop(data, pos, size if start < 0 else start)
                if start < 0:
                    break
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

    def _drop(self, data: bytes, start: int, stop: int) -> None:
        """Count ``data[start:stop]``, bytes outside any frame."""
        if stop > start:
            self.dropped_bytes += stop - start
            # translate runs in C: a sender not framing at all costs no more than a copy.
            self.dropped_content_bytes += len(data[start:stop].translate(None, PADDING))

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
