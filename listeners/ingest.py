"""Ingestion: from a received MLLP frame to a stored message and its acknowledgement.

For each frame: read MSH (tolerantly), find the route (sender, listener), check that the
message type and version are supported, store it durably, then acknowledge:

- AA (CA in enhanced mode) only once the message is committed to the queue (fsync'd);
  with ``ack_after = "delivery"``, only once the FHIR server accepted the bundle, AE with
  the server's diagnostics otherwise. In enhanced mode (MSH-15/16 valued) the reply is
  an accept acknowledgement, which reports the commit (table 0008: CA committed, CE not):
  CA once delivered, and CA too for a message that failed for good — it is committed, a
  dead letter, and a CE would make the sender resend it forever; CE only when delivery
  is not confirmed in time (the sender resends, the retransmission waits again);
- AR with an ERR segment when MSH cannot be read, MSH-10 is empty (101: required) or the
  type/version is not supported (or, with ``on_unsupported = "dead-letter"``, AA and a
  dead letter to inspect); AR 103 at MSH-3, nothing stored, for a sender no route
  matches with ``unmatched_senders = "reject"`` (:mod:`.ingest_support`);
- no reply at all when storage fails: the connection is closed and the sender, having no
  ACK, sends again — an AE would make many senders give up on the message (each refusal
  counted in ``passerelle_queue_write_failures_total{operation="put"}``);
- a frame over ``mllp.max_frame_bytes`` (:meth:`Ingestor.handle_oversized`, given only
  its head): AR 207 naming the MSH-10 found in the head, nothing stored, the connection
  kept. Without an answer the sender would re-send it for ever, stalling its feed. Table
  0357 has no "message too large": 104 (v2.6+, "value too long") is about one field at
  an ERR-2 location, so 207 with the size and the limit in the text;
- an acknowledgement (MSH-9.1 ``ACK``): never acknowledged (ACKing an ACK starts a
  ping-pong between engines), nor stored; a WARNING once per connection;
- an original-mode MFN with its MFI is answered with an MFK instead of an ACK (same code
  and ERR, then MFI and an MFA per record as MFI-6 asks; :mod:`.mllp.mfk`);
- a retransmission (same sender, same MSH-10, same content) is acknowledged again, not
  stored again; the same MSH-10 on *different* content (a sender's counter reset) is a new
  message, stored and delivered, with a WARNING. The sender here is every HD component of
  MSH-3/MSH-4 (``Header.sender_identity``), while routes and ordering keep HD.1.

This module decides what becomes of a frame and keeps its counts and log lines; whether a
route converts the message is :mod:`.ingest_support`'s (shared with the AMQP intake), and
what a sender is told of a stored message with ``ack_after = "delivery"`` is
:mod:`.ingest_answers`'.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from converter import ConversionError, ParseError
from converter.hl7v2 import peek_header

from .config import MllpConfig, ServiceConfig
from .errors import QueueError
from .ingest_answers import DeliveryAnswers
from .ingest_support import SupportChecker, UnmatchedSenderError
from .logs import describe_exception, log_fields
from .metrics import Metrics
from .mllp.ack import (
    AckBuilder,
    AckOutcome,
    ErrorLocation,
    MessageHeader,
    read_header,
    wants_accept_ack,
)
from .mllp.framing import OversizedFrame
from .mllp.handler import NO_REPLY, LaterReply, PeerInfo
from .mllp.mfk import build_reply
from .queue.base import DeadLetter, Envelope, PutResult
from .worker import DeliveryWorkers

__all__ = ["IngestQueue", "Ingestor", "SupportChecker", "message_lane"]

log = logging.getLogger("passerelle.ingest")

#: Connections remembered as having sent an ACK (a WARNING for the first one only).
_ACK_WARNED_MAX = 256


class IngestQueue(Protocol):
    """What ingestion stores into: the SQLite queue, or RabbitMQ (``queue.backend``)."""

    async def put(self, envelope: Envelope) -> PutResult: ...

    async def put_dead_letter(self, envelope: Envelope, error: dict[str, Any]) -> PutResult: ...

    def get_dead_letter(self, id: int) -> DeadLetter | None: ...

    def state(self, seq: int) -> str | None: ...


class Ingestor:
    """The MLLP handler of the service (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        queue: IngestQueue,
        workers: DeliveryWorkers | None,
        support: SupportChecker,
        metrics: Metrics,
        acks: AckBuilder | None = None,
    ) -> None:
        self._config = config
        self._mllp: MllpConfig = config.mllp
        self._queue = queue
        self._workers = workers
        self._support = support
        self._metrics = metrics
        self._acks = acks or AckBuilder(default_charset=config.converter.charset)
        self._answers = DeliveryAnswers(config.mllp, queue, workers)
        # (listener, connection id) of the connections that sent an ACK, oldest first.
        self._ack_warned: dict[tuple[str, int], None] = {}

    async def handle(self, payload: bytes, peer: PeerInfo) -> bytes | LaterReply | None:
        """The server's handler: one frame, its ACK (see the module docstring)."""
        started = time.perf_counter()
        ack = await self._handle(payload, peer, started)
        if isinstance(ack, LaterReply):
            later = ack.reply

            async def observed() -> bytes:
                reply = await later()
                self._observe(peer.listener, reply, started)
                return reply

            return LaterReply(observed)
        self._observe(peer.listener, ack, started)
        return ack

    async def handle_oversized(self, oversized: OversizedFrame, peer: PeerInfo) -> bytes | None:
        """The server's ``on_oversized``: AR (CR) 207 built from the MSH in the frame's
        head, or the AR of an unreadable message when the head has no readable MSH.
        Nothing is stored."""
        started = time.perf_counter()
        listener = peer.listener
        header = read_header(
            _complete_fields(oversized.head), default_charset=self._config.converter.charset
        )
        self._metrics.labelled(self._metrics.received, listener, "oversized").inc()
        outcome = header.rejection() or AckOutcome.reject(
            "207",
            f"message of {oversized.size} bytes exceeds the maximum of {oversized.limit} "
            "bytes (mllp.max_frame_bytes)",
        )
        log.warning(
            "oversized message rejected, not stored (mllp.max_frame_bytes = %d)",
            oversized.limit,
            extra=log_fields(
                listener=listener,
                peer=peer.address,
                connection=peer.connection_id,
                size=oversized.size,
                control_id=header.control_id or None,
                error_code=outcome.error_code,
                event="oversized_frame",
            ),
        )
        ack = self._ack(listener, header, outcome)
        self._observe(listener, ack, started)
        return ack

    def _observe(self, listener: str, ack: bytes | None, started: float) -> None:
        if ack:  # not None (closed without reply) nor NO_REPLY (MSH-15 asked for none)
            self._metrics.labelled(self._metrics.ack_seconds, listener).observe(
                time.perf_counter() - started
            )

    async def _handle(
        self, payload: bytes, peer: PeerInfo, started: float
    ) -> bytes | LaterReply | None:
        raw_header = read_header(payload, default_charset=self._config.converter.charset)
        listener = peer.listener
        if raw_header.message_code.strip() == "ACK":
            # Before any check: even a malformed ACK must not be answered.
            return self._ignore_ack(raw_header, peer)
        # An MSH-10 blank only in the service's default charset waits for the route: its
        # own charset may read an id there (0x80: a C1 control in Latin-1, € in cp1252).
        rejection = raw_header.rejection_before_routing()
        if rejection is not None:
            return self._unreadable(peer, len(payload), raw_header, rejection)
        try:
            # Header values read in the message's charset: with MSH-18 empty, the default
            # one, as the converter reads it (not Latin-1: a UTF-8 control id was stored
            # double-encoded and an ERR-8 quoting MSH-9 garbled).
            header = peek_header(payload, default_charset=self._config.converter.charset)
            route = self._config.route_for(
                application=header.sending_application,
                facility=header.sending_facility,
                listener=listener,
            )
            if route.converter.charset != self._config.converter.charset:
                # The route's converter reads a message without MSH-18 in its own default
                # charset: its stored control id and patient key are read so too.
                header = peek_header(payload, default_charset=route.converter.charset)
                # Answered in that charset too: ERR-8 of ours in the set the sender reads.
                raw_header = raw_header.with_default_charset(route.converter.charset)
        except ParseError as exc:
            outcome = AckOutcome.from_error(exc)
            self._metrics.received.labels(listener, "unreadable").inc()
            return self._ack(listener, raw_header, outcome)
        except Exception as exc:
            # A converter bug on this header: an AR, not a closed connection (the sender
            # would resend the same message for ever and its feed stall). Only the kind
            # and place are logged: the exception's text may quote the message.
            log.error(
                "reading the message header failed: %s; rejected",
                describe_exception(exc),
                extra=log_fields(listener=listener, peer=peer.address, size=len(payload)),
            )
            self._metrics.received.labels(listener, "unreadable").inc()
            return self._ack(
                listener,
                raw_header,
                AckOutcome.reject("207", "the message header could not be read"),
            )
        rejection = raw_header.rejection()
        if rejection is not None:
            # MSH-10 blank as the route's charset reads it (the id it would be stored under).
            return self._unreadable(peer, len(payload), raw_header, rejection)
        fields = log_fields(
            listener=listener,
            control_id=header.control_id,
            sender=header.sender,
            message_type=header.message_type,
            size=len(payload),
            route=route.name,
        )
        envelope = Envelope(
            payload=payload,
            sender=f"{listener}/{header.sender}",
            listener=listener,
            received_at=time.time(),
            ordering_key=f"{listener}/{header.sender}|"
            + (header.patient_key or f"message:{message_lane(header.control_id, payload)}"),
            control_id=header.control_id or None,
            message_type=header.message_type,
            input_type="hl7v2",
            route=route.name,
            sender_id=f"{listener}/{header.sender_identity}",
        )
        self._metrics.labelled(
            self._metrics.received, listener, header.event if header.message_code else "unknown"
        ).inc()
        try:
            # Before the type's support and whatever on_unsupported says: a sender nobody
            # configured is refused unstored (a dead letter would store its messages).
            self._support.unmatched.check(
                self._config,
                route,
                listener=listener,
                application=header.sending_application,
                facility=header.sending_facility,
                control_id=header.control_id or None,
                message_type=header.message_type or None,
            )
        except UnmatchedSenderError as exc:
            return self._ack(listener, raw_header, AckOutcome.from_error(exc), payload)
        try:
            self._support.check(route.name, header)
        except ConversionError as exc:
            outcome = AckOutcome.from_error(exc)
            if self._mllp.on_unsupported == "reject":
                log.warning(
                    "unsupported message rejected",
                    extra=fields | log_fields(error_code=exc.hl7_error_code),
                )
                return self._ack(listener, raw_header, outcome, payload)
            return await self._store_dead_letter(envelope, exc, raw_header, fields)
        try:
            stored = await self._queue.put(envelope)
        except QueueError:
            self._refused(fields)
            return None
        if stored.duplicate:
            self._metrics.duplicates.labels(listener).inc()
            log.info(
                "retransmission acknowledged again, not stored",
                extra=fields | log_fields(seq=stored.seq),
            )
            if self._answers.waits_for_delivery(raw_header):
                return self._ack_later(
                    listener,
                    raw_header,
                    payload,
                    functools.partial(self._answers.retransmitted, stored.seq, fields),
                )
            return self._ack(listener, raw_header, AckOutcome.accept(), payload)
        if stored.control_id_reused:
            _warn_reused(envelope, stored.seq, fields)
        if self._workers is not None:  # None: workers elsewhere (queue.backend = "amqp")
            self._workers.notify()
        # DEBUG: each message gets its INFO line when it is settled ("delivered", a dead
        # letter, a retry); one more per message on the ACK path costs ~15% of the ingest
        # rate (measured: 1,790 → 2,110 messages/s).
        log.debug(
            "stored",
            extra=fields
            | log_fields(
                seq=stored.seq, duration_ms=round((time.perf_counter() - started) * 1000, 2)
            ),
        )
        if self._answers.waits_for_delivery(raw_header):
            # Stored: committed now (a release 2 listener says so at once); the ACK waits.
            return self._ack_later(
                listener,
                raw_header,
                payload,
                functools.partial(self._answers.delivered, stored.seq, fields),
            )
        return self._ack(listener, raw_header, AckOutcome.accept(), payload)

    def _unreadable(
        self, peer: PeerInfo, size: int, header: MessageHeader, rejection: AckOutcome
    ) -> bytes | None:
        """The AR of a header :meth:`MessageHeader.rejection` refuses; nothing stored."""
        self._metrics.received.labels(peer.listener, "unreadable").inc()
        log.warning(
            "unreadable message rejected",
            extra=log_fields(
                listener=peer.listener,
                peer=peer.address,
                size=size,
                error_code=rejection.error_code,
                location=header.problem_location,
            ),
        )
        return self._ack(peer.listener, header, rejection)

    def _refused(self, fields: dict[str, object]) -> None:
        """The queue refused a received message (full disk, read-only volume): counted
        with the AMQP consumer's refused puts, so one alert covers every intake."""
        self._metrics.queue_write_failures.labels("put").inc()
        log.exception("storing the message failed; closing without ACK", extra=fields)

    async def _store_dead_letter(
        self,
        envelope: Envelope,
        exc: ConversionError,
        raw_header: MessageHeader,
        fields: dict[str, object],
    ) -> bytes | None:
        try:
            stored = await self._queue.put_dead_letter(
                envelope,
                {
                    "stage": "ingest",
                    "kind": type(exc).__name__,
                    "reason": exc.reason,
                    "hl7_error_code": exc.hl7_error_code,
                    "location": exc.location,
                },
            )
            if stored.control_id_reused:
                _warn_reused(envelope, stored.seq, fields)
            if not stored.duplicate:
                self._metrics.dead_lettered.labels(
                    "unsupported", envelope.message_type or "unknown"
                ).inc()
        except QueueError:
            self._refused(fields)
            return None
        log.warning("unsupported message accepted as a dead letter", extra=fields)
        if self._answers.waits_for_delivery(raw_header):
            # Stored, but never to be delivered: an AA would say the server has it.
            return self._ack(
                envelope.listener,
                raw_header,
                AckOutcome.error(
                    exc.hl7_error_code,
                    f"{exc.reason}; kept as a dead letter"[:200],
                    location=ErrorLocation.parse(exc.location),
                ),
                envelope.payload,
            )
        return self._ack(envelope.listener, raw_header, AckOutcome.accept(), envelope.payload)

    def _ignore_ack(self, header: MessageHeader, peer: PeerInfo) -> bytes:
        """An acknowledgement sent to the listener: no reply (acknowledging it would start
        an ACK ping-pong between engines), nothing stored. A WARNING for the first one on
        a connection (a bidirectional peer may send one per message), DEBUG after."""
        self._metrics.labelled(self._metrics.received, peer.listener, "ACK").inc()
        key = (peer.listener, peer.connection_id)
        first = key not in self._ack_warned
        if first:
            self._ack_warned[key] = None
            if len(self._ack_warned) > _ACK_WARNED_MAX:
                del self._ack_warned[next(iter(self._ack_warned))]
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "acknowledgement received on the listener: not acknowledged (an ACK is never "
            "acknowledged), not stored%s",
            "; further ones on this connection are logged at DEBUG" if first else "",
            extra=log_fields(
                listener=peer.listener,
                peer=peer.address,
                connection=peer.connection_id,
                control_id=header.control_id or None,
                message_type="ACK",
                event="ack_received",
            ),
        )
        return NO_REPLY

    def _ack_later(
        self,
        listener: str,
        header: MessageHeader,
        payload: bytes,
        outcome: Callable[[], Awaitable[AckOutcome]],
    ) -> LaterReply:
        """The ACK of a stored message, once ``outcome()`` (its delivery's) is known."""

        async def reply() -> bytes:
            return self._ack(listener, header, await outcome(), payload)

        return LaterReply(reply)

    def _ack(
        self,
        listener: str,
        header: MessageHeader,
        outcome: AckOutcome,
        payload: bytes | None = None,
    ) -> bytes:
        """The ACK; with ``payload`` (the message, well-formed), an original-mode MFN's
        MFK (:mod:`.mllp.mfk`)."""
        if not wants_accept_ack(header, success=outcome.success):
            return NO_REPLY
        self._metrics.labelled(
            self._metrics.acknowledged, listener, outcome.code.for_mode(header.enhanced_mode).value
        ).inc()
        return build_reply(self._acks, header, outcome, payload)


def _complete_fields(head: bytes) -> bytes:
    """The head of an oversized frame, without the last field of an MSH that runs past
    it: that field may be cut short, and a truncated MSH-10 would name another message."""
    start = head.find(b"MSH")
    if start < 0 or len(head) < start + 4:
        return head
    if head.find(b"\r", start) >= 0 or head.find(b"\n", start) >= 0:
        return head  # MSH is whole
    cut = head.rfind(head[start + 3 : start + 4])
    return head[:cut] if cut > start + 3 else head


def message_lane(control_id: str | None, payload: bytes) -> str:
    """The ordering lane of a message naming no patient: its control id, else a digest of
    its body (the MLLP listener, which refuses an MSH-10 that unescapes to nothing, and
    the AMQP intake, which passes the AMQP message id when there is no control id; such
    messages of a sender once shared the lane ``…|message:``, each waiting behind the one
    before). The digest, unlike the body, names no patient."""
    return control_id or "sha256:" + hashlib.sha256(payload).hexdigest()[:16]


def _warn_reused(envelope: Envelope, seq: int, fields: dict[str, object]) -> None:
    """The sender used this MSH-10 for another message within the duplicate window: the
    message was stored as new (dropping it would lose what was acknowledged), but the
    sender's counter is likely reset, which its owner should hear of. Names the sender (in
    full) and the control id, never content."""
    log.warning(
        "control id reused by the sender for a different message; stored as a new message",
        extra=fields | log_fields(sender=envelope.sender_id, seq=seq, event="control_id_reused"),
    )
