"""Dead letters the dead-letter exchange routes to no queue, held instead of looping.

With ``amqp.dead_letter_queue = ""`` and nothing bound (or the binding removed), a dead
letter's publication comes back unroutable. Given back to its queue, the message came
straight back, every second, for ever, with a WARNING only. The consumer
(:mod:`.settling`) and the worker (:mod:`.handling`) hold it unacknowledged instead and
publish it again after :data:`UNROUTABLE_PAUSE` (doubling up to
:data:`UNROUTABLE_PAUSE_MAX`); :class:`HeldDeadLetters` is what the operator sees of
it: one ERROR per held message, ``passerelle_dead_letters_unroutable_total`` and
``passerelle_dead_letters_held``, and a ``/ready`` problem while any is held.
"""

from __future__ import annotations

import logging
from typing import Any

from ..logs import log_fields
from ..metrics import Metrics

__all__ = ["UNROUTABLE_PAUSE", "UNROUTABLE_PAUSE_MAX", "HeldDeadLetters"]

#: Pauses between the publications of a dead letter that no queue receives (doubling).
UNROUTABLE_PAUSE = 1.0
UNROUTABLE_PAUSE_MAX = 60.0


class HeldDeadLetters:
    """The messages one component (``consumer``, ``worker``) holds now because their
    dead letter was unroutable: the count, its metrics, the ERROR when one is held."""

    def __init__(
        self, metrics: Metrics, component: str, exchange: str, log: logging.Logger
    ) -> None:
        self._metrics = metrics
        self._component = component
        self._exchange = exchange
        self._log = log
        #: Messages held now.
        self.count = 0

    def hold(self, consequence: str, fields: dict[str, Any]) -> None:
        """One more message held; ``consequence``: what holding it means for the
        component (said in the ERROR line)."""
        self.count += 1
        self._metrics.dead_letters_held.labels(self._component).inc()
        self._metrics.dead_letters_unroutable.labels(self._component).inc()
        self._log.error(
            'dead-letter exchange %s routes to no queue (amqp.dead_letter_queue = "" and'
            " nothing bound?): message held unacknowledged, %s; bind a queue to the exchange",
            self._exchange,
            consequence,
            extra=fields | log_fields(event="dead_letter_unroutable"),
        )

    def release(self) -> None:
        """A held message published at last, or given back to its queue."""
        self.count -= 1
        self._metrics.dead_letters_held.labels(self._component).dec()

    def problem(self) -> str | None:
        """For readiness: why the component is not ready, while it holds any."""
        if not self.count:
            return None
        return (
            f"{self.count} message(s) held: dead-letter exchange {self._exchange} routes to"
            " no queue (bind one)"
        )
