"""A WARNING for senders that ask for application acknowledgements, which are never sent.

MSH-16 (application acknowledgment type) AL, ER or SU asks the receiver for a second
acknowledgement once the message has been processed (HL7 v2.5 §2.9.3, enhanced mode).
This service sends only the accept acknowledgement (CA/CE/CR): conversion and delivery
happen after the connection has moved on, and it has no channel back to the sender's
own receiver. Such a sender waits for an answer that never comes: some hold the message
as unconfirmed, some retry it, some stop their feed. Nothing in the exchange tells its
interface engineer why, hence one WARNING per connection, naming the sender (MSH-3 /
MSH-4, never message content) and what gives a delivery outcome instead: original mode
(MSH-15/16 empty) with ``mllp.ack_after = "delivery"``. At most one every 10 minutes per
sender and listener, though: an engine opening a connection per message would log one
per message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ..logs import log_fields
from .handler import Handler, LaterReply, PeerInfo
from .header import read_header

__all__ = ["APPLICATION_ACK_TYPES", "SENDER_INTERVAL", "ApplicationAckNotice"]

_K = TypeVar("_K")
_V = TypeVar("_V")

#: MSH-16 values that ask for an application acknowledgement (HL7 table 0155).
APPLICATION_ACK_TYPES = frozenset({"AL", "ER", "SU"})

#: Connections remembered as warned about (the oldest forgotten first).
_WARNED_MAX = 1024

#: Seconds between two WARNINGs about one sender (on its different connections).
SENDER_INTERVAL = 600.0

#: The longest MSH-3 or MSH-4 a WARNING quotes.
_SENDER_LIMIT = 100


class ApplicationAckNotice:
    """Wraps a handler: the first message of a connection whose MSH-16 asks for an
    application acknowledgement is logged (WARNING, unless its sender was warned about
    within :data:`SENDER_INTERVAL`), further ones at DEBUG."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        ack_after: str = "commit",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._ack_after = ack_after
        self._clock = clock
        # (listener, connection id): connection ids never repeat within a server.
        self._warned: dict[tuple[str, int], None] = {}
        # (listener, sender): when its last WARNING was logged.
        self._senders: dict[tuple[str, str], float] = {}

    def wrap(self, handler: Handler) -> Handler:
        async def noticing(payload: bytes, peer: PeerInfo) -> bytes | LaterReply | None:
            self.note(payload, peer)
            return await handler(payload, peer)

        return noticing

    def note(self, payload: bytes, peer: PeerInfo) -> None:
        """Log this message's request for an application ACK, if it makes one."""
        header = read_header(_first_segment(payload))
        wanted = header.application_ack_type
        if wanted not in APPLICATION_ACK_TYPES or header.message_code.strip() == "ACK":
            # An ACK is never answered at all (see listeners.ingest).
            return
        sender = "/".join(_short(_decoded(header.field(n), header.codec)) for n in (3, 4))
        if not self._first(peer, sender):
            self._log.debug(
                "mllp#%d: MSH-16 %s from %s again; no application ACK sent",
                peer.connection_id,
                wanted,
                sender,
            )
            return
        remedy = (
            "it is given to original-mode messages only: the sender should leave MSH-15 "
            "and MSH-16 empty"
            if self._ack_after == "delivery"
            else "send in original mode (MSH-15 and MSH-16 empty) and set "
            'mllp.ack_after = "delivery"'
        )
        self._log.warning(
            "mllp#%d %s from %s: sender %s asks for application acknowledgements "
            "(MSH-16 %s), which this service never sends (conversion and delivery are "
            "asynchronous; only the accept ACK, MSH-15, is sent): %s. For the delivery "
            "outcome in the ACK, %s. Further such messages are logged at DEBUG (on this "
            "connection; on others from this sender, for %g minutes)",
            peer.connection_id,
            peer.listener,
            peer.address,
            sender,
            wanted,
            # ER asks for one on errors only: nothing is awaited, errors go unreported.
            "its delivery errors are never reported to it"
            if wanted == "ER"
            else "a sender waiting for one waits for ever",
            remedy,
            SENDER_INTERVAL / 60,
            extra=log_fields(
                listener=peer.listener,
                peer=peer.address,
                connection=peer.connection_id,
                sender=sender,
                control_id=header.control_id or None,
                event="application_ack_requested",
            ),
        )

    def _first(self, peer: PeerInfo, sender: str) -> bool:
        """Whether to log a WARNING: the connection's first such message, and its sender
        not warned about within SENDER_INTERVAL."""
        key = (peer.listener, peer.connection_id)
        if key in self._warned:
            return False
        _remember(self._warned, key, None)
        now = self._clock()
        last = self._senders.get((peer.listener, sender))
        if last is not None and now - last < SENDER_INTERVAL:
            return False
        _remember(self._senders, (peer.listener, sender), now)
        return True


def _remember(seen: dict[_K, _V], key: _K, value: _V) -> None:
    """Record ``key`` (last), forgetting the oldest entry beyond _WARNED_MAX."""
    seen.pop(key, None)
    seen[key] = value
    if len(seen) > _WARNED_MAX:
        del seen[next(iter(seen))]


def _first_segment(payload: bytes) -> bytes:
    """The message up to the end of its MSH: the rest is not needed here, and reading
    the header of the whole block would scan it for a second message once more."""
    start = payload.find(b"MSH")
    if start < 0:
        return payload[:0]
    ends = [at for end in (b"\r", b"\n") if (at := payload.find(end, start)) >= 0]
    return payload[: min(ends)] if ends else payload


def _decoded(raw: str, codec: str | None) -> str:
    """A raw field (its bytes read as Latin-1) in the message's charset: "HÔPITAL" sent
    in UTF-8 must not be logged as "HÃ\x94PITAL"."""
    try:
        return raw.encode("latin-1").decode(codec or "latin-1", errors="replace")
    except LookupError:
        return raw


def _short(value: str) -> str:
    return value if len(value) <= _SENDER_LIMIT else value[:_SENDER_LIMIT] + "…"
