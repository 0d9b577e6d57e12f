"""A sink that waits for its destination's gate: deliveries of ``passerelle worker``.

The partition worker delivers one message per partition at a time and retries it in place
(:mod:`listeners.amqp.handling`); wrapping its sinks puts each delivery behind the
destination's :class:`~listeners.delivery.gate.DestinationGate` — a paused destination
makes the delivery wait, unsent, and the outcome goes back to the gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..errors import DeliveryError, RejectedDeliveryError
from ..queue.base import Envelope
from .base import BundleInput, DeliveryReceipt, Sink
from .gate import DestinationGate

__all__ = ["GatedSink"]


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

    @property
    def name(self) -> str:
        return self._sink.name

    async def deliver(self, bundle: BundleInput, envelope: Envelope) -> DeliveryReceipt:
        interrupt = self._interrupt() if self._interrupt is not None else None
        granted = await self._gate.wait_for_pass(self._sink.name, interrupt=interrupt)
        try:
            receipt = await self._sink.deliver(bundle, envelope)
        except RejectedDeliveryError:
            self._gate.succeeded(granted)  # the server answered: the bundle was at fault
            raise
        except DeliveryError as exc:  # transient, or retried like one
            self._gate.failed(granted, exc)
            raise
        except BaseException:
            self._gate.abandoned(granted)
            raise
        self._gate.succeeded(granted)
        return receipt

    async def check(self) -> None:
        await self._sink.check()

    async def close(self) -> None:
        await self._sink.close()
