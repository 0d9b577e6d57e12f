"""What every destination implements (:class:`Sink`) and what it hands back (receipts)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from converter import json_dumps, json_loads

from ..queue.base import Envelope
from .json_steps import loads_json

__all__ = [
    "BundleInput",
    "DeliveryReceipt",
    "EntryResult",
    "Sink",
    "as_batch",
    "bundle_bytes",
    "entry_count",
]

#: A bundle as the converter hands it over: serialized JSON or the parsed object.
BundleInput = bytes | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What the server reported for one entry of a transaction: status and location only."""

    status: int | None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """Proof that a destination took a bundle; carries no message content."""

    destination: str
    #: HTTP status of the answer (``None`` for a folder).
    status: int | None
    #: A folder: the file written. A FHIR server: its ``Location`` header, if any.
    location: str | None = None
    #: Per-entry outcome from a transaction-response, in bundle order.
    entries: tuple[EntryResult, ...] = ()
    #: Seconds the delivery took.
    elapsed: float = 0.0
    #: Resource types of the DELETE entries left out because their targets were not on
    #: the server (one per entry, in bundle order; see :mod:`listeners.delivery.deletes`).
    absent_deletes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """A log-friendly digest: status and entry counts by status code."""
        by_status = Counter(
            str(entry.status) if entry.status is not None else "?" for entry in self.entries
        )
        return {
            "destination": self.destination,
            "status": self.status,
            "location": self.location,
            "entries": len(self.entries),
            "entry_statuses": dict(sorted(by_status.items())),
            "elapsed_ms": round(self.elapsed * 1000, 1),
        } | ({"absent_deletes": len(self.absent_deletes)} if self.absent_deletes else {})


class Sink(Protocol):
    """A destination for bundles: a FHIR server or a folder."""

    @property
    def name(self) -> str:
        """The destination's configured name (for logs and metrics)."""
        ...

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        """Hand over one bundle; raise :class:`~listeners.errors.DeliveryError` if not taken.

        ``TransientDeliveryError`` means try again later (``retry_after`` says when, if the
        destination said so); ``RejectedDeliveryError`` means never (dead letter).
        Delivering the same bundle again must be harmless.
        """
        ...

    async def check(self) -> None:
        """Readiness: return if the destination can take bundles, else raise DeliveryError."""
        ...

    async def close(self) -> None:
        """Release connections and files (idempotent)."""
        ...


def bundle_bytes(bundle: BundleInput) -> bytes:
    """The bundle as UTF-8 JSON (bytes are passed through unchanged)."""
    if isinstance(bundle, bytes | bytearray | memoryview):
        return bytes(bundle)
    return json_dumps(bundle).encode("utf-8")


async def entry_count(bundle: BundleInput) -> int | None:
    """How many entries ``bundle`` holds, to check the answer has as many (None: not a
    readable Bundle, the server will say). A large one is parsed off the event loop, in
    steps (:mod:`listeners.delivery.json_steps`), its entries not kept."""
    if isinstance(bundle, Mapping):
        entries = bundle.get("entry")
        return len(entries) if isinstance(entries, list) else 0
    try:
        data = await loads_json(bundle_bytes(bundle), entry=_dropped)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    entries = data.get("entry")
    return len(entries) if isinstance(entries, list) else 0


def _dropped(entry: Any) -> None:
    """What is kept of a bundle's entry to count them: nothing."""
    return None


def as_batch(bundle: BundleInput) -> bytes:
    """The bundle with ``type`` batch: its PUT Type/id entries and literal references
    stand alone, so a server may apply them one by one. A dict is copied, not changed,
    and written once."""
    data = dict(bundle) if isinstance(bundle, Mapping) else json_loads(bundle_bytes(bundle))
    data["type"] = "batch"
    return json_dumps(data).encode("utf-8")
