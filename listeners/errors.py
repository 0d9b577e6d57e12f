"""Errors of the service package (see the package docstring for the tree)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConversionUnavailable",
    "DeliveryError",
    "FramingError",
    "QueueError",
    "RejectedDeliveryError",
    "ServiceError",
    "TransientDeliveryError",
]


class ServiceError(Exception):
    """Root of the errors raised by the service."""


class FramingError(ServiceError):
    """The peer broke MLLP framing (frame too large, bytes outside a frame)."""


class QueueError(ServiceError):
    """The durable queue could not store or update a message."""


class ConversionUnavailable(ServiceError):
    """The service cannot convert now, for a while (its conversion processes are being
    replaced, or memory ran short): the HTTP API's 503 with ``Retry-After``, which a
    client retries, not the 500 of a bug."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        #: Whole seconds for the ``Retry-After`` header.
        self.retry_after = retry_after


class DeliveryError(ServiceError):
    """A destination did not accept a bundle."""

    def __init__(
        self, message: str, *, status: int | None = None, outcome: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        #: The server's OperationOutcome, when it sent one.
        self.outcome = outcome

    def as_record(self) -> dict[str, Any]:
        """The error as stored with a retry or a dead letter."""
        record: dict[str, Any] = {"kind": type(self).__name__, "reason": str(self)}
        if self.status is not None:
            record["status"] = self.status
        if self.outcome is not None:
            record["outcome"] = self.outcome
        return record

    def dead_letter_record(self, destination: str, attempts: int | None = None) -> dict[str, Any]:
        """The record of a message dead-lettered at delivery to ``destination``."""
        record = self.as_record() | {"stage": "delivery", "destination": destination}
        if attempts is not None:
            record["attempts"] = attempts
        return record


class TransientDeliveryError(DeliveryError):
    """Worth retrying: 408, 429, 5xx, timeouts, connection errors."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, outcome=outcome)
        #: Seconds the server asked us to wait (Retry-After), if any.
        self.retry_after = retry_after


class RejectedDeliveryError(DeliveryError):
    """The destination refused the bundle for good (4xx other than 408/429)."""
