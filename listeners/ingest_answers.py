"""What a sender is told about a message once it is stored, with ``ack_after = "delivery"``.

:mod:`.ingest` decides what becomes of a frame (refused, a retransmission, a dead letter,
stored); this module turns the fate of a stored message into the acknowledgement's
outcome: the FHIR server's answer once a delivery worker has it, an AE 207 when it does
not come in time (the message stays queued), and for a retransmission the answer its
original gets — waited for while it is on its way, AE again when it became a dead letter.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .config import MllpConfig
from .errors import QueueError
from .mllp.ack import AckOutcome, ErrorLocation, MessageHeader
from .queue.base import DeadLetter
from .worker import DeliveryWorkers

__all__ = ["DeliveryAnswers", "StoredStates"]

# The ingestion's logger: these lines are part of a message's ingestion.
log = logging.getLogger("passerelle.ingest")


class StoredStates(Protocol):
    """What the answers read of the queue (synchronous: run off the event loop)."""

    def get_dead_letter(self, id: int) -> DeadLetter | None: ...

    def state(self, seq: int) -> str | None: ...


class DeliveryAnswers:
    """The outcomes of ``ack_after = "delivery"`` (see the module docstring)."""

    def __init__(
        self, mllp: MllpConfig, queue: StoredStates, workers: DeliveryWorkers | None
    ) -> None:
        self._mllp = mllp
        self._queue = queue
        self._workers = workers

    def waits_for_delivery(self, header: MessageHeader) -> bool:
        """Whether the ACK waits for the delivery (``ack_after = "delivery"``). Original
        mode only: an enhanced-mode ACK is an accept ACK, about the commit (table 0008: CA
        committed, CE not committed), so it is sent once the message is stored; a CE for a
        stored message would make the sender send it again, and each resend wait again."""
        return self._mllp.ack_after == "delivery" and not header.enhanced_mode

    async def delivered(self, seq: int, fields: dict[str, object]) -> AckOutcome:
        """The outcome of stored message ``seq``'s delivery, waited for up to
        ``mllp.delivery_ack_timeout``."""
        assert self._workers is not None, 'ack_after = "delivery" needs local workers'
        try:
            outcome = await asyncio.wait_for(
                self._workers.wait_for(seq), timeout=self._mllp.delivery_ack_timeout
            )
        except TimeoutError:
            log.warning("delivery not confirmed in time", extra=fields)
            return AckOutcome.error(
                "207", "delivery not confirmed in time; the message is stored and will be delivered"
            )
        if outcome.delivered:
            return AckOutcome.accept()
        return AckOutcome.error(
            outcome.hl7_error_code,
            outcome.diagnostics[:200],
            location=ErrorLocation.parse(outcome.location),
        )

    async def retransmitted(self, seq: int, fields: dict[str, object]) -> AckOutcome:
        """A retransmission of ``seq`` gets the answer the original will get — waited for
        while it is still on its way, AE again when it ended as a dead letter (an AA
        would tell the sender it was delivered), AA once it was delivered."""
        try:
            state = await asyncio.to_thread(self._queue.state, seq)
            if state in ("pending", "inflight"):
                return await self.delivered(seq, fields)
            letter = await asyncio.to_thread(self._queue.get_dead_letter, seq)
        except QueueError:
            letter = None
        if letter is None:
            return AckOutcome.accept()
        error = letter.error
        issues = (error.get("outcome") or {}).get("issue") or []
        texts = [str(i.get("diagnostics") or i.get("code")) for i in issues if isinstance(i, dict)]
        text = "; ".join(texts) or f"{error.get('kind', 'error')}: {error.get('reason', '')}"
        code = str(error.get("hl7_error_code") or "207")
        # The original's AE named the place (ERR-2 ``PID^1^5``): the retransmission's does too.
        location = error.get("location")
        return AckOutcome.error(
            code if code.isdigit() else "207",
            text[:200],
            location=ErrorLocation.parse(location if isinstance(location, str) else None),
        )
