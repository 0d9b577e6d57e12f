"""A sink that waits for its destination's gate: deliveries of ``passerelle worker``.

The partition worker delivers one message per partition at a time and retries it in place
(:mod:`listeners.amqp.handling`); wrapping its sinks puts each delivery behind the
destination's :class:`~listeners.delivery.gate.DestinationGate` — a paused destination
makes the delivery wait, unsent, and the outcome goes back to the gate.

**A bundle the server fails alone.** As with the service's workers
(:mod:`listeners.worker`), a message whose delivery fails again while its destination is
open — it failed before, the destination came back since (other bundles went through, or
the gate would not have opened) and *this* bundle fails again: a 500 on one payload, each
time — does not pause the destination: the handler's retry in place already backs it off
on its own (``backoff_initial`` doubling with its attempts), and the other partitions'
deliveries keep going. Before, each of its retries paused every delivery to the
destination with a WARNING "unavailable". A probe's failure is not counted: the
destination was down, and the gate counts those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from ..queue.base import Envelope
from .base import BundleInput, DeliveryReceipt, Sink
from .gate import DestinationGate, OpenFailures

__all__ = ["GatedSink"]

#: Messages whose failures on an open destination are remembered. A worker handles one
#: message per partition at a time, so a few hundred cover every partition it may hold;
#: the oldest are forgotten first (a message settled long ago).
_REMEMBERED = 1024

#: What identifies a message across its retries in place, without holding its payload.
_MessageKey = tuple[str, str | None, str | None, float]


def _key(envelope: Envelope) -> _MessageKey:
    return (envelope.ordering_key, envelope.control_id, envelope.message_id, envelope.received_at)


class GatedSink:
    """A :class:`~listeners.delivery.base.Sink` whose deliveries wait for the gate of their
    destination and report their outcome to it (``passerelle worker``, which delivers one
    message per partition at a time, in place). ``interrupt``: the event, if any, that makes
    the current task give up waiting (its partition is released)."""

    def __init__(
        self,
        sink: Sink,
        gate: DestinationGate,
        *,
        interrupt: Callable[[], asyncio.Event | None] | None = None,
    ) -> None:
        self._sink = sink
        self._gate = gate
        self._interrupt = interrupt
        self._open_failures: OpenFailures[_MessageKey] = OpenFailures(_REMEMBERED)

    @property
    def name(self) -> str:
        return self._sink.name

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        interrupt = self._interrupt() if self._interrupt is not None else None
        granted = await self._gate.wait_for_pass(self._sink.name, interrupt=interrupt)
        try:
            receipt = await self._sink.deliver(bundle, envelope)
        except RejectedDeliveryError:
            self._open_failures.forget(_key(envelope))  # settled: a dead letter
            self._gate.succeeded(granted)  # the server answered: the bundle was at fault
            raise
        except TransientDeliveryError as exc:
            if self._open_failures.count(_key(envelope), granted) >= 2:
                self._gate.abandoned(granted)  # the server is up: no verdict on it
            else:
                self._gate.failed(granted, exc)
            raise
        except DeliveryError as exc:  # retried like a transient failure
            self._gate.failed(granted, exc)
            raise
        except BaseException:
            self._gate.abandoned(granted)
            raise
        # Not forgotten here: a message of several bundles may fail on a later one.
        self._gate.succeeded(granted)
        return receipt

    async def check(self) -> None:
        await self._sink.check()

    async def close(self) -> None:
        await self._sink.close()
