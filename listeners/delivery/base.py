"""What every destination implements (:class:`Sink`) and what it hands back (receipts)."""

from __future__ import annotations

import asyncio
import codecs
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from converter import json_dumps

from ..queue.base import Envelope
from .json_steps import PARSE_IN_THREAD, loads_json, member_value_span

__all__ = [
    "BundleInput",
    "DeliveryReceipt",
    "EntryResult",
    "Sink",
    "bundle_bytes",
    "entry_count",
    "request_body",
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


async def request_body(bundle: BundleInput, *, batch: bool) -> bytes:
    """What is POSTed for ``bundle``; with ``batch``, the bundle with ``type`` batch (its PUT
    Type/id entries and literal references stand alone, so a server may apply them one by
    one: a dict is copied, not changed; JSON text keeps every byte but the ``type``
    value's, added last when it has none). Made without stalling the event loop (MLLP
    ACKs, ``/ready``, the other deliveries) when the bundle is large.

    Parsing a 30 MB bundle to change its ``type`` and writing it back held the loop for
    3.8 s; ``asyncio.to_thread`` alone would not do, since the JSON parser and encoder are
    C code holding the GIL for the whole document. So JSON text is not parsed: the
    top-level ``type`` value is found (it comes before ``entry`` in the converter's
    bundles, within the text's first 64 KiB; else the text is read one entry at a time,
    in a thread) and replaced, in one copy of the text (a 30 MB bundle: 10-90 ms). A
    parsed bundle with many entries is written one entry at a time, in a thread. Between
    two steps the thread is back in the interpreter, which hands the GIL to the loop at
    each switch interval (5 ms)."""
    if isinstance(bundle, Mapping):
        fields = {**bundle, "type": "batch"} if batch else bundle
        if not _many_entries(bundle):
            return json_dumps(fields).encode("utf-8")
        return await asyncio.to_thread(_dumps_in_steps, fields)
    data = bundle_bytes(bundle)
    if not batch:
        return data
    if len(data) <= PARSE_IN_THREAD:
        return _retyped(data)
    return await asyncio.to_thread(_retyped, data)


#: Entries from which a parsed bundle is written in steps, in a thread (a typical
#: message gives tens of entries; a laboratory report with thousands of results, MBs).
_STEPPED_ENTRIES = 200
#: The start of a bundle's text searched for its ``type`` before reading all of it.
_PREFIX_BYTES = 64 * 1024
_BATCH = b'"batch"'


def _many_entries(bundle: Mapping[str, Any]) -> bool:
    entries = bundle.get("entry")
    return isinstance(entries, list) and len(entries) > _STEPPED_ENTRIES


def _dumps_in_steps(bundle: Mapping[str, Any]) -> bytes:
    """``json_dumps(bundle)``, written one top-level member and one array element at a
    time: the compact text of a container is its members' texts joined, the same bytes."""
    members = []
    for key, value in bundle.items():
        if isinstance(value, list):
            text = "[" + ",".join(json_dumps(item) for item in value) + "]"
        else:
            text = json_dumps(value)
        members.append(json_dumps(key) + ":" + text)
    return ("{" + ",".join(members) + "}").encode("utf-8")


def _retyped(data: bytes) -> bytes:
    """``data`` (a Bundle's JSON text) with its top-level ``type`` value replaced by
    ``"batch"`` (added last when it has none), every other byte kept. Raises
    ``ValueError`` for a text that is no JSON object."""
    prefix = codecs.getincrementaldecoder("utf-8")().decode(data[:_PREFIX_BYTES])
    found = member_value_span(prefix, "type", complete=len(data) <= _PREFIX_BYTES)
    text = prefix
    if found is None:  # beyond the first 64 KiB: read the whole text, an array in steps
        text = data.decode("utf-8")
        found = member_value_span(text, "type", complete=True)
        assert found is not None
    if isinstance(found, tuple):
        start, end = (len(text[:position].encode("utf-8", "surrogatepass")) for position in found)
        return _spliced(data, start, end, _BATCH)
    closing = len(text[:found].encode("utf-8", "surrogatepass"))
    before = data[:closing].rstrip(b" \t\r\n")
    member = b'"type":' + _BATCH if before.endswith(b"{") else b',"type":' + _BATCH
    return _spliced(data, closing, closing, member)


def _spliced(data: bytes, start: int, end: int, replacement: bytes) -> bytes:
    """``data[:start] + replacement + data[end:]``, in one copy (slices of a memoryview
    are not copied first)."""
    view = memoryview(data)
    return b"".join((view[:start], replacement, view[end:]))
