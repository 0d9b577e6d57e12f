"""Delivery of converted bundles to their destination: a FHIR server, or else a folder.

A :class:`Sink` takes one bundle at a time (``deliver``), says whether it can take any
(``check``, for readiness) and releases its resources (``close``). Failures are
:class:`~listeners.errors.TransientDeliveryError` (retry later, after :func:`backoff_delay`) or
:class:`~listeners.errors.RejectedDeliveryError` (dead letter, with the server's
OperationOutcome). A transient failure also pauses the whole destination, which is then
probed by one delivery at a time (:class:`DestinationGate`, :class:`GatedSink`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from ..config import DestinationConfig
from ..conversion import ConversionResult
from ..errors import DeliveryError
from ..metrics import Metrics
from ..queue.base import Envelope
from .auth import (
    Authenticator,
    BasicAuth,
    BearerAuth,
    NoAuth,
    OAuth2ClientCredentials,
    build_authenticator,
)
from .backoff import RandomSource, backoff_cap, backoff_delay, retry_after_capped
from .base import BundleInput, DeliveryReceipt, EntryResult, Sink, bundle_bytes
from .failures import FailureReason, describe_failure, http_status_text, retry_detail
from .fhir import FhirServerSink, outcome_summary
from .folder import FolderSink, bundle_file_name
from .gate import DestinationGate, DestinationWaitInterrupted, OpenFailures, Pass
from .gated_sink import GatedSink
from .retry_after import parse_retry_after
from .urls import join_url, redact_url

__all__ = [
    "Authenticator",
    "BasicAuth",
    "BearerAuth",
    "BundleInput",
    "DeliveryReceipt",
    "DestinationGate",
    "DestinationWaitInterrupted",
    "EntryResult",
    "FailureReason",
    "FhirServerSink",
    "FolderSink",
    "GatedSink",
    "NoAuth",
    "OAuth2ClientCredentials",
    "OpenFailures",
    "Pass",
    "RandomSource",
    "Sink",
    "backoff_cap",
    "backoff_delay",
    "build_authenticator",
    "build_sink",
    "bundle_bytes",
    "bundle_file_name",
    "deliver_results",
    "describe_failure",
    "destination_location",
    "http_status_text",
    "join_url",
    "outcome_summary",
    "parse_retry_after",
    "record_conversion",
    "redact_url",
    "retry_after_capped",
    "retry_detail",
    "sink_readiness",
]


def build_sink(destination: DestinationConfig) -> Sink:
    """A :class:`FhirServerSink` when ``destination.url`` is set, an AMQP publisher when
    ``destination.amqp`` is, both (each must take the bundle) when both are, else a
    :class:`FolderSink`."""
    fhir: Sink | None = FhirServerSink(destination) if destination.url else None
    if destination.amqp is not None:
        from ..amqp.publisher import AmqpSink, CompositeSink  # aio-pika only when used

        amqp = AmqpSink(destination.name, destination.amqp)
        return amqp if fhir is None else CompositeSink(destination.name, [fhir, amqp])
    if fhir is not None:
        return fhir
    return FolderSink(destination.folder, name=destination.name)


def destination_location(destination: DestinationConfig) -> str:
    """Where a destination delivers, safe to log: URL without credentials, exchange, folder."""
    parts = []
    if destination.url:
        parts.append(redact_url(destination.url))
    if destination.amqp is not None:
        parts.append(f"exchange {destination.amqp.exchange}")
    return ", ".join(parts) or f"folder {destination.folder}"


async def sink_readiness(
    sinks: Mapping[str, Sink], gate: DestinationGate | None = None
) -> dict[str, str | None]:
    """``destination:<name>`` → None when it can take bundles, else why not (for /ready);
    never raises (an unexpected error of a probe is a reason, in safe words).
    With ``gate``, a destination paused after a transient failure is not ready either,
    though its ``/metadata`` may answer: a server that 503s every POST is not ready."""
    checks: dict[str, str | None] = {}
    for name, sink in sinks.items():
        try:
            await sink.check()
            checks[f"destination:{name}"] = None
        except DeliveryError as exc:
            checks[f"destination:{name}"] = str(exc)[:200]
        except Exception as exc:  # never a 500 from /ready: a bug of a probe says not ready
            failure = describe_failure(exc)
            checks[f"destination:{name}"] = (
                f"destination {name}: readiness check failed ({failure})"
            )
    if gate is not None:
        for name, reason in gate.readiness().items():
            checks[name] = "; ".join(filter(None, (checks.get(name), reason)))
    return checks


def record_conversion(metrics: Metrics, results: Iterable[ConversionResult]) -> None:
    """Count one message's conversion: bundles by type and the time each took."""
    for result in results:
        metrics.converted.labels(result.message_type).inc()
        metrics.conversion_seconds.labels(result.message_type).observe(result.seconds)


async def deliver_results(
    sink: Sink,
    results: Iterable[ConversionResult],
    envelope: Envelope,
    destination: str,
    metrics: Metrics,
) -> None:
    """Deliver one message's bundles to ``sink`` in order, timing and counting each (and
    the DELETE entries of absent targets its receipt reports); the first failure (a
    :class:`~listeners.errors.DeliveryError`) stops and propagates."""
    for result in results:
        started = time.perf_counter()
        receipt = await sink.deliver(result.bundle, envelope)
        metrics.delivery_seconds.labels(destination).observe(time.perf_counter() - started)
        metrics.delivered.labels(destination, result.message_type).inc()
        if receipt.absent_deletes:
            metrics.count_deletes_not_found(destination, receipt.absent_deletes)
