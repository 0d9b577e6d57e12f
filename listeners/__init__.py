"""Passerelle's service: MLLP and AMQP listeners, a durable queue, delivery to FHIR servers.

Depends on :mod:`converter`; the converter never depends on this package.

Errors raised across this package's boundaries derive from :class:`ServiceError`::

    ServiceError
    ├── FramingError               MLLP framing violated (oversized, garbage)  → close
    ├── QueueError                 the durable queue cannot store             → AE, no AA
    ├── ConversionUnavailable      conversion processes replaced, memory short → HTTP 503
    └── DeliveryError              the destination did not take a bundle
        ├── TransientDeliveryError 408/429/5xx, timeout, connection error     → retry
        └── RejectedDeliveryError  other 4xx with the server's OperationOutcome → dead letter
"""

# Not ``typing.TYPE_CHECKING``: importing typing alone takes milliseconds (see __getattr__).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .errors import (
        ConversionUnavailable,
        DeliveryError,
        FramingError,
        QueueError,
        RejectedDeliveryError,
        ServiceError,
        TransientDeliveryError,
    )

__all__ = [
    "ConversionUnavailable",
    "DeliveryError",
    "FramingError",
    "QueueError",
    "RejectedDeliveryError",
    "ServiceError",
    "TransientDeliveryError",
]


def __getattr__(name: str) -> object:
    # Loaded on first use: the ``passerelle`` script's entry (:mod:`.entry`) installs its
    # Ctrl-C handler after this package is imported, so importing it must cost nothing.
    if name in __all__:
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
