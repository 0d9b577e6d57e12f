"""The contract between the MLLP server and its handlers: who sent a frame
(:class:`PeerInfo`), the handler signatures and :data:`NO_REPLY`.

What a handler's result means (ACK, no reply, close): see :mod:`.server`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from .framing import OversizedFrame

__all__ = ["NO_REPLY", "Handler", "LaterReply", "OversizedHandler", "PeerInfo"]

#: Handler result: write nothing, keep the connection open.
NO_REPLY: Final = b""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who sent a frame: listener, remote address, verified TLS client subject."""

    listener: str
    host: str
    port: int
    connection_id: int
    #: Subject of the verified client certificate (mutual TLS), e.g. ``CN=lab,O=Hosp``.
    tls_subject: str | None = None
    tls: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LaterReply:
    """A handler's answer for a message it has durably stored but whose reply waits for
    something else (``ack_after = "delivery"``: the FHIR server's answer).

    The message is committed when the handler returns this: a release 2 listener writes
    its commit acknowledgement at once, not after the wait (a sender's commit timeout is
    often shorter than a delivery). The server then awaits ``reply()`` and writes what it
    returns (bytes, or :data:`NO_REPLY`) as the handler's own reply."""

    reply: Callable[[], Awaitable[bytes]]


Handler = Callable[[bytes, PeerInfo], Awaitable[bytes | LaterReply | None]]
#: Answers a frame over ``max_frame_bytes``; its result means the same as a Handler's.
OversizedHandler = Callable[[OversizedFrame, PeerInfo], Awaitable[bytes | LaterReply | None]]
