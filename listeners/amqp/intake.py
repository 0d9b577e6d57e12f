"""From a consumed AMQP message to an :class:`AmqpEnvelope`, or a reason to refuse it.

``body`` is the message's body with its content encoding undone (:mod:`.body`). The
input type comes from the ``x-passerelle-input-type`` header, else the content type,
else the first bytes (:func:`converter.detect_input_type`). HL7 v2: MSH read like the MLLP
listener does (sender, control id, type, patient) and the route's support for the type
and version checked with the same :class:`~listeners.ingest.SupportChecker`; without
MSH-18, the content type's ``charset`` re-encodes it as the route's converter reads it
(:func:`.body.apply_content_charset`). CDA: the
document parsed (hardened parser) for its id, type, custodian and patient id.

Whatever cannot be read or is not supported raises :class:`converter.ConversionError`
(with its HL7 error code and location): the consumer dead-letters it. So is a message
no configured route matches with ``unmatched_senders = "reject"``
(:class:`~listeners.ingest_support.UnmatchedSenderError`, 103, as the MLLP listener's AR),
before it is stored; either way its sender is named in a WARNING once
(:class:`~listeners.ingest_support.UnmatchedSenders`).

:func:`read_envelope` does all of it (decompression included) in a worker thread for a
compressed or large body: on the event loop, a compressed body held every MLLP ACK,
``/ready`` answer and delivery for as long as it took to inflate and read.
:class:`IntakeOrder` keeps the consumer's promise all the same: messages take their place
in their ordering key's chain in the order they were delivered, whichever is read first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from converter import detect_input_type
from converter.cda import parse_clinical_document
from converter.cda.document import DOCUMENT_TYPES
from converter.cda.node import NAMESPACES
from converter.hl7v2 import peek_header

from ..config import ServiceConfig
from ..ingest import SupportChecker, message_lane
from .body import apply_content_charset, content_charset, decode_content
from .envelope import AmqpEnvelope, input_type_of

__all__ = ["READ_IN_THREAD", "IntakeOrder", "envelope_of", "read_envelope"]

#: Bodies larger than this (bytes), and every compressed one (a few KB may inflate to
#: ``amqp.max_message_bytes``), are read in a worker thread.
READ_IN_THREAD = 256 * 1024

#: The patient's first id with a root, not a nullFlavor: a sender lists a patient's ids in
#: one order, so its documents of one patient share an ordering key (the sender is part of
#: the key). Patient.j2 may key the Patient on a later id (a local number listed after the
#: INS): the ordering key only has to be the same for one sender's documents.
_PATIENT_ID = "h:recordTarget/h:patientRole/h:id[@root and not(@nullFlavor)][1]"
_CUSTODIAN = "h:custodian/h:assignedCustodian/h:representedCustodianOrganization"


class IntakeOrder:
    """Deliveries' turns to take their place in their ordering key's chain, in delivery order.

    A delivery takes a ticket (:meth:`take`) before its first await; once read, it waits
    for the previous delivery's place (:meth:`wait`), then :meth:`pass_on` and takes its
    own before any await: a small message read at once does not go before the large one
    delivered just before it, still being read in a thread.
    """

    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None

    def take(self) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """(the previous delivery's ticket or None, this one's)."""
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous, self._last = self._last, mine
        return previous, mine

    @staticmethod
    async def wait(previous: asyncio.Future[None] | None) -> None:
        """Until the previous delivery took its place (or gave up its turn)."""
        if previous is not None and not previous.done():
            # Shielded: a cancelled waiter must not cancel the ticket the next one awaits.
            await asyncio.shield(previous)

    @staticmethod
    def pass_on(previous: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        """Let the next delivery go once the previous one went (at once if it did): called
        when this one took its place, or will take none (refused, cancelled)."""
        if mine.done():
            return
        if previous is None or previous.done():
            mine.set_result(None)
        else:
            previous.add_done_callback(lambda _: None if mine.done() else mine.set_result(None))


async def read_envelope(
    message: AbstractIncomingMessage,
    *,
    limit: int,
    listener: str,
    config: ServiceConfig,
    support: SupportChecker,
) -> AmqpEnvelope:
    """The envelope of a consumed message whose body is at most ``limit`` bytes once
    decoded (``amqp.max_message_bytes``): :func:`~.body.decode_content`, then
    :func:`envelope_of`, in a worker thread for a compressed or large body. Raises what
    they raise."""

    def read() -> AmqpEnvelope:
        body = decode_content(message.body, message.content_encoding, limit)
        return envelope_of(message, body=body, listener=listener, config=config, support=support)

    encoding = (message.content_encoding or "").strip().lower()
    if encoding in ("", "identity") and len(message.body) <= READ_IN_THREAD:
        return read()
    return await asyncio.to_thread(read)


def envelope_of(
    message: AbstractIncomingMessage,
    *,
    body: bytes | None = None,
    listener: str,
    config: ServiceConfig,
    support: SupportChecker,
) -> AmqpEnvelope:
    """The envelope of a consumed message (``body``: its decoded body, by default the
    body as it came); ``ConversionError`` when it is poison."""
    if body is None:
        body = message.body
    kind = input_type_of(message.content_type, message.headers)
    if kind == "auto":
        kind = detect_input_type(body)
    ids: dict[str, Any] = {
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
    }
    if kind == "cda":
        return _cda(body, listener, config, support, ids)
    # Header values read in the message's charset, as the converter reads it (a UTF-8
    # control id was read as Latin-1 and stored double-encoded).
    header = peek_header(body, default_charset=config.converter.charset)
    route = config.route_for(
        application=header.sending_application, facility=header.sending_facility, listener=listener
    )
    support.unmatched.check(
        config,
        route,
        listener=listener,
        application=header.sending_application,
        facility=header.sending_facility,
        control_id=_control_id(header.control_id),
        message_type=header.message_type or None,
    )
    support.check(route.name, header)
    recoded = apply_content_charset(
        body, content_charset(message.content_type), header.charset, route.converter.charset
    )
    if recoded is not body or route.converter.charset != config.converter.charset:
        # What the route's converter will read: the body in the content type's charset,
        # or without MSH-18 in the route's own default.
        header = peek_header(recoded, default_charset=route.converter.charset)
    body = recoded
    sender = f"{listener}/{header.sender}"
    control_id = _control_id(header.control_id)
    patient = (
        header.patient_key or f"message:{message_lane(control_id or ids.get('message_id'), body)}"
    )
    return AmqpEnvelope(
        payload=body,
        sender=sender,
        listener=listener,
        received_at=time.time(),
        ordering_key=f"{sender}|{patient}",
        control_id=control_id,
        message_type=header.message_type or None,
        input_type="hl7v2",
        # Duplicates are told apart on the whole MSH-3/MSH-4 (routes use HD.1 only).
        sender_id=f"{listener}/{header.sender_identity}",
        route=route.name,
        **ids,
    )


def _control_id(value: str) -> str | None:
    """MSH-10 as the message is filed under, None when it holds no id: empty, HL7's
    explicit null (``""``), or only blanks and control characters once unescaped
    (``\\H\\``, ``\\X20\\``, ``\\.br\\``), as the MLLP listener judges it
    (:func:`..mllp.header.read_header`, which refuses such a message: AR 101). Here there
    is no ACK to name it in, so the message is taken, as one without MSH-10 is: ordered
    by its AMQP message id or a digest of its body (:func:`~listeners.ingest.message_lane`)
    and never a duplicate. Before, " " put every such message of a sender naming no
    patient in one lane, each waiting behind the one before, and made each new one a
    "control id reused" WARNING."""
    if value.strip() == '""' or all(char.isspace() or not char.isprintable() for char in value):
        return None
    return value


def _cda(
    body: bytes,
    listener: str,
    config: ServiceConfig,
    support: SupportChecker,
    ids: dict[str, Any],
) -> AmqpEnvelope:
    root = parse_clinical_document(body)
    custodian = _first(root, _CUSTODIAN)
    facility = _identifier(_first(custodian, "h:id[1]")) if custodian is not None else ""
    if not facility and custodian is not None:
        facility = " ".join(
            str(t) for t in custodian.xpath("h:name//text()", namespaces=NAMESPACES)
        ).strip()
    route = config.route_for(application="", facility=facility, listener=listener)
    control_id = _identifier(_first(root, "h:id")) or None
    templates = [str(t) for t in root.xpath("h:templateId/@root", namespaces=NAMESPACES)]
    document_type = next((DOCUMENT_TYPES[t] for t in templates if t in DOCUMENT_TYPES), "CDA")
    support.unmatched.check(
        config,
        route,
        listener=listener,
        application="",
        facility=facility,
        control_id=control_id,
        message_type=document_type,
        document=True,
    )
    sender = f"{listener}/^{facility}"
    patient = (
        _identifier(_first(root, _PATIENT_ID))
        or f"document:{message_lane(control_id or ids.get('message_id'), body)}"
    )
    return AmqpEnvelope(
        payload=body,
        sender=sender,
        listener=listener,
        received_at=time.time(),
        ordering_key=f"{sender}|{patient}",
        control_id=control_id,
        message_type=document_type,
        input_type="cda",
        route=route.name,
        **ids,
    )


def _first(element: Any, path: str) -> Any:
    found = element.xpath(path, namespaces=NAMESPACES)
    return found[0] if found else None


def _identifier(element: Any) -> str:
    """``root^extension`` of an II element (``root`` alone without extension)."""
    if element is None:
        return ""
    root, extension = element.get("root") or "", element.get("extension") or ""
    return f"{root}^{extension}" if extension else root
