"""Passerelle's service: MLLP and AMQP listeners, a durable queue, delivery to FHIR servers.

Depends on :mod:`converter`; the converter never depends on this package.

Errors raised across this package's boundaries derive from :class:`ServiceError`::

    ServiceError
    ├── FramingError               MLLP framing violated (oversized, garbage)  → close
    ├── QueueError                 the durable queue cannot store             → AE, no AA
    └── DeliveryError              the destination did not take a bundle
        ├── TransientDeliveryError 408/429/5xx, timeout, connection error     → retry
        └── RejectedDeliveryError  other 4xx with the server's OperationOutcome → dead letter
"""

from .errors import (
    DeliveryError,
    FramingError,
    QueueError,
    RejectedDeliveryError,
    ServiceError,
    TransientDeliveryError,
)

__all__ = [
    "DeliveryError",
    "FramingError",
    "QueueError",
    "RejectedDeliveryError",
    "ServiceError",
    "TransientDeliveryError",
]
