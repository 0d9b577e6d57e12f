"""The MLLP server's counters (:class:`MllpStats`), per listener or summed."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["MllpStats"]


@dataclass(slots=True)
class MllpStats:
    """Counters of one listener (or of all, summed); monotonic except ``connections_open``."""

    connections_total: int = 0
    connections_open: int = 0
    #: Complete frames received (handed to the handler).
    frames: int = 0
    #: Bytes read from sockets, framing included (after TLS decryption).
    bytes_received: int = 0
    #: Bytes written (framed ACKs, commit blocks).
    bytes_sent: int = 0
    acks_sent: int = 0
    #: Bytes outside any frame, dropped.
    dropped_bytes: int = 0
    #: Framing errors: frames over ``max_frame_bytes``, not held (handed to
    #: ``on_oversized``, or the connection closed when there is none; not counted in
    #: ``frames``).
    framing_errors: int = 0
    #: Connections that ended inside a frame.
    truncated_frames: int = 0
    idle_timeouts: int = 0
    handler_errors: int = 0
    #: Frames for which the handler returned ``None``.
    closed_without_reply: int = 0
    tls_handshake_failures: int = 0
    #: Connections closed at accept: the listener had ``max_connections`` open.
    connections_refused: int = 0
    #: Connections closed because a frame did not end within ``frame_timeout``.
    frame_timeouts: int = 0
    #: Connections closed because their unfinished frame went over
    #: ``max_unfinished_bytes`` (all connections together).
    unfinished_bytes_refusals: int = 0
    #: MLLP release 2 commit acknowledgements (ACK or NAK blocks) received, not answered.
    commit_acks: int = 0
    #: MLLP release 2 commit acknowledgements sent (listeners with ``release = 2``): an ACK
    #: block before each reply, a NAK block for a message not taken (then the close).
    commit_acks_sent: int = 0
    commit_naks_sent: int = 0
    #: Empty frames (``VT FS CR``, or only blanks, line ends and NULs): keep-alives, not
    #: answered, not counted in ``frames``.
    keepalives: int = 0
    #: Connections aborted because an ACK stayed unsent for ``write_timeout`` (the peer
    #: does not read).
    write_timeouts: int = 0

    def __add__(self, other: MllpStats) -> MllpStats:
        return MllpStats(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(MllpStats))
        )

    def copy(self) -> MllpStats:
        return self + MllpStats()
