"""Whether a route converts a message, decided from its header alone; and what becomes
of a message no configured route matches (:class:`UnmatchedSenders`).

Shared by the MLLP ingestion (:mod:`.ingest`) and the AMQP intake
(:mod:`.amqp.intake`), so both refuse the same messages, with the same HL7 error codes,
as the converter itself would.

A message no route matches while routes are configured comes from a sender nobody
configured (a mistyped MSH-3, a new training system, an unknown facility). With
``unmatched_senders = "default"`` it goes to the default destination, as it always did;
with ``"reject"`` it is refused before it is stored: :class:`UnmatchedSenderError`, HL7
error 103 "Table value not found" at MSH-3 (or MSH-4). Table 0357 has no "unknown
sender"; MSH-3.1 and MSH-4.1 are values of the user-defined tables 0361 (application)
and 0362 (facility), which the routes are for this receiver: a sender not in them is a
table value not found. 204 "Unknown key identifier" is about a record's key (an update
of a record the receiver does not hold), 207 "Application internal error" says the
receiver failed, which it did not. Either way the operator hears of the sender: a
WARNING naming the listener and the sender's MSH-3/MSH-4 (never patient data), once per
sender, and ``passerelle_messages_unmatched``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from converter import UnsupportedMessageError
from converter.hl7v2 import Header
from converter.hl7v2.structure import StructureCatalog
from converter.templates.routes import RouteTable

from .config import RouteConfig, ServiceConfig
from .logs import log_fields

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["SupportChecker", "UnmatchedSenderError", "UnmatchedSenders"]

log = logging.getLogger("passerelle.ingest")

#: Senders remembered as warned about (the oldest forgotten first, then warned again):
#: a peer inventing a new MSH-3 per message must not grow the memory without bound.
_SENDERS_REMEMBERED = 1024
#: New senders' WARNINGs at most per window; beyond, DEBUG, counted in the next WARNING
#: (a peer inventing names must not flood the log).
_WARNINGS_PER_WINDOW = 10
_WINDOW_SECONDS = 60.0
#: Characters of MSH-3/MSH-4 quoted in an ACK's ERR-8 or a log line.
_QUOTED = 40


class UnmatchedSenderError(UnsupportedMessageError):
    """No configured route takes this sender's messages and ``unmatched_senders =
    "reject"``: refused before storage (MLLP AR, AMQP dead letter)."""

    hl7_error_code = "103"


class SupportChecker:
    """Whether a route's converter has a root template for a message, without converting.

    Uses the same route tables and version catalogs as the converter, so the listener's
    AR and the converter's UnsupportedMessageError always agree.
    """

    def __init__(
        self, routes: Mapping[str, RouteConfig], *, metrics: Metrics | None = None
    ) -> None:
        #: Shared, like the checker, by every intake of the service: one WARNING per sender.
        self.unmatched = UnmatchedSenders(metrics)
        self._catalog = StructureCatalog()
        self._tables: dict[str, RouteTable] = {}
        self._processing_ids = {name: route.processing_ids for name, route in routes.items()}
        for name, route in routes.items():
            config = route.converter.converter_config()
            self._tables[name] = RouteTable.load(
                "hl7v2", (*config.template_dirs, config.mappings_dir)
            )

    def event_types(self) -> set[str]:
        """The events some route converts (``ADT^A01``…), for the metrics' labels."""
        return {key for table in self._tables.values() for key in table.events}

    def check(self, route: str, header: Header) -> None:
        """Raise UnsupportedMessageError (HL7 error 200/201/203) when not convertible, or
        (202) when the route does not take the message's processing id (MSH-11)."""
        accepted = self._processing_ids.get(route, ())
        if accepted and header.processing_id not in accepted:
            # A training or debugging message reaching a production route would land in
            # the production FHIR server as real patient data.
            raise UnsupportedMessageError(
                f"processing id {header.processing_id or '(empty)'!r} not accepted by route "
                f"{route!r} (accepts {', '.join(accepted)})",
                location="MSH-11",
                control_id=header.control_id or None,
                message_type=header.message_type or None,
                hl7_error_code="202",
            )
        catalog = self._catalog.version(header.version)
        structure = catalog.structure_for(header.structure, header.event) or header.event.replace(
            "^", "_"
        )
        self._tables[route].resolve(header.event, structure)


class UnmatchedSenders:
    """Messages that fall to the default route while routes are configured: counted,
    a WARNING once per sender (listener and HD.1 of MSH-3/MSH-4), and with
    ``unmatched_senders = "reject"`` refused (see the module docstring).

    Called from the event loop and from the AMQP intake's reading threads: locked."""

    def __init__(
        self, metrics: Metrics | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._counter: Any = metrics.unmatched if metrics is not None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._warned: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._window_start = -_WINDOW_SECONDS
        self._window_warnings = 0
        self._not_warned = 0

    def check(
        self,
        config: ServiceConfig,
        route: RouteConfig,
        *,
        listener: str,
        application: str,
        facility: str,
        control_id: str | None = None,
        message_type: str | None = None,
        document: bool = False,
    ) -> None:
        """Nothing when ``route`` is a configured one (or no route is configured); else
        count and maybe warn, and raise :class:`UnmatchedSenderError` when refused.
        ``document``: a CDA document, whose sender is its custodian (``facility``)."""
        if not config.unmatched(route):
            return
        refused = config.unmatched_senders == "reject"
        if self._counter is not None:
            self._counter.labels(listener, "refused" if refused else "default").inc()
        sender = f"{application[:_QUOTED]}^{facility[:_QUOTED]}"
        self._log(listener, sender, refused, control_id, message_type)
        if refused:
            named = (
                f"custodian {facility[:_QUOTED]!r}"
                if document
                else f"MSH-3 {application[:_QUOTED]!r}, MSH-4 {facility[:_QUOTED]!r}"
            )
            raise UnmatchedSenderError(
                f"no route takes the messages of sender {named} on listener "
                f"{listener[:_QUOTED]!r} (unmatched_senders = reject)",
                location=None if document else _sender_field(config),
                control_id=control_id,
                message_type=message_type,
            )

    def _log(
        self,
        listener: str,
        sender: str,
        refused: bool,
        control_id: str | None,
        message_type: str | None,
    ) -> None:
        with self._lock:
            level, others = self._level(listener, sender)
        what = (
            "refused, not stored (unmatched_senders = reject)"
            if refused
            else "delivered to the default destination (route default)"
        )
        log.log(
            level,
            "message from a sender no route matches: %s; add a route for it or correct the "
            "sender%s%s",
            what,
            "; further ones from this sender are logged at DEBUG" if level > logging.DEBUG else "",
            f"; {others} message(s) of other new senders were logged at DEBUG" if others else "",
            extra=log_fields(
                listener=listener,
                sender=sender,
                control_id=control_id,
                message_type=message_type,
                route="default",
                event="unmatched_sender",
            ),
        )

    def _level(self, listener: str, sender: str) -> tuple[int, int]:
        """(WARNING for a sender not warned about yet, within the window's budget, else
        DEBUG; the new senders logged at DEBUG since the last WARNING). Under the lock."""
        key = (listener, sender)
        if key in self._warned:
            self._warned.move_to_end(key)
            return logging.DEBUG, 0
        now = self._clock()
        if now - self._window_start >= _WINDOW_SECONDS:
            self._window_start, self._window_warnings = now, 0
        if self._window_warnings >= _WARNINGS_PER_WINDOW:
            # Not remembered: the sender is warned about once the flood is over.
            self._not_warned += 1
            return logging.DEBUG, 0
        self._window_warnings += 1
        self._warned[key] = None
        if len(self._warned) > _SENDERS_REMEMBERED:
            self._warned.popitem(last=False)
        others, self._not_warned = self._not_warned, 0
        return logging.WARNING, others


def _sender_field(config: ServiceConfig) -> str | None:
    """The ERR-2 of a refused sender: MSH-3 when some route names an application, MSH-4
    when routes name facilities only, none when they only name listeners."""
    if any(route.sending_application is not None for route in config.routes):
        return "MSH-3"
    if any(route.sending_facility is not None for route in config.routes):
        return "MSH-4"
    return None
