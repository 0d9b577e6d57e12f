"""What travels in AMQP messages: envelopes in headers, error headers, input types.

An :class:`~listeners.queue.base.Envelope` becomes one persistent message: the payload is
the body, untouched; every other field is an ``x-passerelle-…`` header (``received_at`` as
text: pamqp would encode a Python float as a 32-bit float; the ordering key as its digest,
:func:`ordering_token`, since it names the patient). ``message_id`` and
``correlation_id`` are the AMQP properties of the same names.

Error headers describe why a message was dead-lettered — kind, reason, location, HL7 error
code, template, stage, HTTP status — and never carry message content (no ``detail``, no
server OperationOutcome).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, HeadersType

from ..queue.base import Envelope

__all__ = [
    "CDA_CONTENT_TYPE",
    "ERROR_HEADERS",
    "FHIR_JSON",
    "FORWARDED_HEADERS_BUDGET",
    "HL7V2_CONTENT_TYPE",
    "H_DROPPED_HEADERS",
    "AmqpEnvelope",
    "EnvelopeError",
    "decode_envelope",
    "encode_envelope",
    "error_headers",
    "forwardable_headers",
    "header_text",
    "input_type_of",
    "ordering_token",
    "partition_of",
    "persistent_copy",
    "short_property",
]

HL7V2_CONTENT_TYPE = "x-application/hl7-v2+er7"
CDA_CONTENT_TYPE = "application/hl7-cda+xml"
FHIR_JSON = "application/fhir+json"

#: AMQP content type (without parameters) → input type of the converter.
_CONTENT_TYPES: Mapping[str, Literal["hl7v2", "cda"]] = MappingProxyType(
    {
        HL7V2_CONTENT_TYPE: "hl7v2",
        "application/hl7-v2": "hl7v2",
        "application/x-hl7": "hl7v2",
        "x-application/hl7-v2": "hl7v2",
        "text/plain": "hl7v2",
        "text/hl7v2": "hl7v2",
        CDA_CONTENT_TYPE: "cda",
        "application/xml": "cda",
        "text/xml": "cda",
        "application/cda+xml": "cda",
    }
)
_OUT_CONTENT_TYPES = MappingProxyType({"hl7v2": HL7V2_CONTENT_TYPE, "cda": CDA_CONTENT_TYPE})

PREFIX = "x-passerelle-"
H_VERSION = PREFIX + "envelope"
H_SENDER = PREFIX + "sender"
H_LISTENER = PREFIX + "listener"
H_RECEIVED_AT = PREFIX + "received-at"
H_ORDERING_KEY = PREFIX + "ordering-key"
H_CONTROL_ID = PREFIX + "control-id"
H_MESSAGE_TYPE = PREFIX + "message-type"
H_INPUT_TYPE = PREFIX + "input-type"
H_ROUTE = PREFIX + "route"
H_PARTITION = PREFIX + "partition"
H_ATTEMPTS = PREFIX + "attempts"
H_MESSAGE_ID = PREFIX + "message-id"
H_ORIGINAL_EXCHANGE = PREFIX + "original-exchange"
H_ORIGINAL_ROUTING_KEY = PREFIX + "original-routing-key"
#: When the message was dead-lettered (epoch seconds, as text like ``received-at``).
H_FAILED_AT = PREFIX + "failed-at"
H_DROPPED_HEADERS = PREFIX + "dropped-headers"
#: Bytes the headers forwarded with a retry or a dead letter may take (the broker's frame
#: is 128 KiB by default; the error headers and properties need room beside them).
FORWARDED_HEADERS_BUDGET = 32 * 1024

#: Error record key → header. Nothing else of an error record becomes a header.
ERROR_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "kind": PREFIX + "error-kind",
        "reason": PREFIX + "error-reason",
        "location": PREFIX + "error-location",
        "hl7_error_code": PREFIX + "hl7-error-code",
        "template": PREFIX + "template",
        "stage": PREFIX + "error-stage",
        "status": PREFIX + "error-status",
        "destination": PREFIX + "error-destination",
        "attempts": H_ATTEMPTS,
    }
)
_MAX_HEADER_TEXT = 1000
#: Headers the broker adds when dead-lettering (they grow at each round trip).
_BROKER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


class EnvelopeError(Exception):
    """A partition message lacks the headers of an envelope (not written by Passerelle)."""


#: An envelope that came over AMQP (its message and correlation ids are fields of every
#: Envelope, so that they survive the SQLite queue too).
AmqpEnvelope = Envelope


def input_type_of(
    content_type: str | None,
    headers: Mapping[str, Any] | None = None,
) -> Literal["hl7v2", "cda", "auto"]:
    """The ``x-passerelle-input-type`` header, else the content type, else ``auto``."""
    explicit = header_text(headers or {}, H_INPUT_TYPE)
    if explicit:
        lowered = explicit.strip().lower()
        if lowered in ("hl7v2", "cda"):
            return "hl7v2" if lowered == "hl7v2" else "cda"
        if lowered in ("ccda", "c-cda"):
            return "cda"
    if content_type:
        found = _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if found is not None:
            return found
    return "auto"


def header_text(headers: Mapping[str, Any], name: str) -> str | None:
    """A header as text (brokers may hand back long strings as bytes)."""
    value = headers.get(name)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


#: ``message_id`` and ``correlation_id`` are AMQP short strings: 255 bytes at most.
_SHORTSTR_BYTES = 255


def short_property(value: str | None) -> str | None:
    """``value`` when it fits an AMQP short-string property, else None.

    A control id (MSH-10) is a sender's text of any length: one over 255 bytes as the
    ``correlation_id`` made the message unencodable (pamqp's TypeError), so the MLLP
    listener with ``queue.backend = "amqp"`` closed the connection without an ACK at every
    retransmission, and the consumer's ``put`` was retried in place for ever — the
    sender's whole interface blocked. It still travels whole in its header."""
    if value is None or len(value.encode("utf-8")) > _SHORTSTR_BYTES:
        return None
    return value


#: How an ordering key travels in ``x-passerelle-ordering-key``: its digest, never the key
#: itself — the key names the patient (``sender|PID-3``), and headers are shown by the
#: management UI, the firehose tracer, ``rabbitmqadmin``, ``passerelle dead-letters``.
_TOKEN_PREFIX = "blake2b-64:"


def _key_digest(ordering_key: str) -> bytes:
    if ordering_key.startswith(_TOKEN_PREFIX):
        with contextlib.suppress(ValueError):
            digest = bytes.fromhex(ordering_key.removeprefix(_TOKEN_PREFIX))
            if len(digest) == 8:
                return digest
    return hashlib.blake2b(ordering_key.encode("utf-8"), digest_size=8).digest()


def ordering_token(ordering_key: str) -> str:
    """The digest of an ordering key as it travels in headers (a token stays itself): it
    tells two keys apart and falls in the same partition as the key (:func:`partition_of`)."""
    return _TOKEN_PREFIX + _key_digest(ordering_key).hex()


def partition_of(ordering_key: str, partitions: int) -> int:
    """The partition of an ordering key, or of its token: a stable hash (not Python's
    salted ``hash``)."""
    return int.from_bytes(_key_digest(ordering_key), "big") % partitions


def encode_envelope(envelope: Envelope, *, partition: int | None = None) -> aio_pika.Message:
    """The persistent AMQP message carrying ``envelope`` (payload as the body)."""
    headers: HeadersType = {
        H_VERSION: 1,
        H_SENDER: envelope.sender,
        H_LISTENER: envelope.listener,
        H_RECEIVED_AT: repr(envelope.received_at),
        H_ORDERING_KEY: ordering_token(envelope.ordering_key),
        H_INPUT_TYPE: envelope.input_type,
        H_ROUTE: envelope.route,
    }
    if envelope.control_id is not None:
        headers[H_CONTROL_ID] = envelope.control_id
    if envelope.message_type is not None:
        headers[H_MESSAGE_TYPE] = envelope.message_type
    if partition is not None:
        headers[H_PARTITION] = partition
    message_id = short_property(envelope.message_id) or uuid.uuid4().hex
    correlation_id = short_property(envelope.correlation_id or envelope.control_id)
    return aio_pika.Message(
        envelope.payload,
        headers=headers,
        content_type=_OUT_CONTENT_TYPES.get(envelope.input_type, "application/octet-stream"),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        timestamp=datetime.fromtimestamp(envelope.received_at, UTC),
        app_id="passerelle",
    )


def decode_envelope(message: AbstractIncomingMessage) -> AmqpEnvelope:
    """The envelope of a partition message; :class:`EnvelopeError` if it is not one."""
    headers = message.headers or {}
    missing = [
        name
        for name in (H_SENDER, H_LISTENER, H_RECEIVED_AT, H_ORDERING_KEY)
        if header_text(headers, name) is None
    ]
    if missing:
        raise EnvelopeError(f"not a Passerelle envelope: missing header(s) {', '.join(missing)}")
    try:
        received_at = float(header_text(headers, H_RECEIVED_AT) or "")
    except ValueError:
        raise EnvelopeError(f"invalid {H_RECEIVED_AT} header") from None
    input_type = header_text(headers, H_INPUT_TYPE) or "hl7v2"
    if input_type not in ("hl7v2", "cda", "auto"):
        raise EnvelopeError(f"invalid {H_INPUT_TYPE} header")
    return AmqpEnvelope(
        payload=message.body,
        sender=header_text(headers, H_SENDER) or "",
        listener=header_text(headers, H_LISTENER) or "",
        received_at=received_at,
        ordering_key=header_text(headers, H_ORDERING_KEY) or "",
        control_id=header_text(headers, H_CONTROL_ID),
        message_type=header_text(headers, H_MESSAGE_TYPE),
        input_type=input_type,
        route=header_text(headers, H_ROUTE) or "default",
        message_id=message.message_id,
        correlation_id=message.correlation_id,
    )


def error_headers(record: Mapping[str, Any], *, failed_at: float | None = None) -> HeadersType:
    """``x-passerelle-error-…`` headers of an error record (whitelisted keys, bounded),
    and the time of the failure (now unless given)."""
    headers: HeadersType = {H_FAILED_AT: repr(time.time() if failed_at is None else failed_at)}
    for key, header in ERROR_HEADERS.items():
        value = record.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            value = str(value)[:_MAX_HEADER_TEXT]
        headers[header] = value
    return headers


def forwardable_headers(headers: Mapping[str, Any] | None) -> HeadersType:
    """A message's headers minus those the broker adds when dead-lettering and minus
    earlier error headers (a message is re-published with fresh ones), within
    :data:`FORWARDED_HEADERS_BUDGET`: the largest are left out, a sender's own before
    Passerelle's, and ``x-passerelle-dropped-headers`` names them.

    A producer may send headers just under the broker's frame limit (128 KiB); with the
    error headers added, the copy no longer fits, the broker closes the whole connection
    (FRAME_ERROR), and the message, delivered again, failed the same way for ever."""
    dropped = set(_BROKER_HEADERS) | set(ERROR_HEADERS.values()) | {H_FAILED_AT}
    kept = {name: value for name, value in (headers or {}).items() if name not in dropped}
    kept.pop(H_DROPPED_HEADERS, None)
    sizes = {name: _encoded_size(name) + _encoded_size(value) for name, value in kept.items()}
    total = sum(sizes.values())
    if total <= FORWARDED_HEADERS_BUDGET:
        return kept
    left_out = []
    for name in sorted(kept, key=lambda n: (n.startswith(PREFIX), -sizes[n])):
        if total <= FORWARDED_HEADERS_BUDGET:
            break
        total -= sizes[name]
        left_out.append(name)
        del kept[name]
    kept[H_DROPPED_HEADERS] = ",".join(sorted(left_out))[:_MAX_HEADER_TEXT]
    return kept


def _encoded_size(value: Any) -> int:
    """Bytes ``value`` takes in an AMQP field table, near enough (type tag and length
    prefixes included)."""
    if isinstance(value, str):
        return 5 + len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray | memoryview):
        return 5 + len(value)
    if isinstance(value, Mapping):
        return 5 + sum(_encoded_size(str(k)) + _encoded_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 5 + sum(_encoded_size(v) for v in value)
    return 9


def persistent_copy(message: AbstractIncomingMessage, headers: HeadersType) -> aio_pika.Message:
    """A persistent copy of ``message`` with ``headers`` (``user_id`` and ``expiration``
    dropped: the broker checks the first, the second would expire the copy)."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
