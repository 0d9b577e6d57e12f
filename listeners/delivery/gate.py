"""Per-destination pause: after a transient failure of a destination, one probe at a time.

Without it every queued message retries on its own schedule while a FHIR server is down
(60 queued messages made 228 failed POSTs in 5 s, a log line each). Like integration
engines, :class:`DestinationGate` pauses the destination instead:

* **Open** (the usual state): every delivery may go.
* A delivery let through while open fails with a
  :class:`~listeners.errors.TransientDeliveryError` (connection refused or reset, timeout,
  TLS failure, HTTP 401, 3xx, 408, 429, 5xx: the destination's trouble, not the bundle's)
  → **paused**, for a delay growing like the retries' (``delivery.backoff_initial``
  doubling up to ``backoff_max``, jittered within ``[cap/2, cap]``: a step stays about a
  step) and at least the server's Retry-After capped at ``backoff_max``. One WARNING.
* Paused: nothing goes before the delay is over; then **one** delivery, the probe. Its
  success — or a rejection: the server answered — opens the destination again (one INFO,
  with how long it was down) and every waiting delivery may go at once; a transient
  failure pauses it again, for the next step; no verdict (conversion error, crash,
  cancellation) hands the probe to the next delivery at once.
* Outcomes of deliveries let through before the current state are ignored: the requests in
  flight when the destination went down fail too, and one outage is counted once.

Conversion errors and rejections (4xx other than 408/429) never pause a destination; nor
does a message failing again once its destination came back (the server fails that bundle:
it waits for its own backoff, see :mod:`listeners.worker` and, for ``passerelle worker``,
:mod:`listeners.delivery.gated_sink`). The
gate holds no message: callers keep theirs while they wait (the SQLite workers their
claimed jobs, see :mod:`listeners.worker`; ``passerelle worker`` waits in
:class:`~listeners.delivery.gated_sink.GatedSink`), so a skipped delivery is no attempt —
nor is a wait cut short by a stop: the SQLite workers give their waiting jobs back to the
queue with the attempt their claim counted taken back, and ``passerelle worker`` gives its
messages back unacked, counting nothing (its attempts are counted per handling).
The state lives in the process (each ``passerelle worker`` probes on its own) and starts
open: a restart forgets a pause.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..config import DeliveryConfig
from ..errors import DeliveryError, TransientDeliveryError
from ..logs import log_fields
from ..metrics import Metrics
from .backoff import RandomSource, backoff_cap
from .failures import describe_failure

__all__ = ["DestinationGate", "DestinationWaitInterrupted", "OpenFailures", "Pass"]

_Key = TypeVar("_Key")

log = logging.getLogger("passerelle.delivery")


class DestinationWaitInterrupted(Exception):
    """A wait for a paused destination was given up: the caller hands its work back.

    Not a failed attempt: the message handler lets it through (as it does
    ``asyncio.CancelledError``) instead of counting a retry, which at ``max_attempts``
    would be a dead letter.
    """


@dataclass(frozen=True, slots=True, eq=False)
class Pass:
    """Leave to deliver to ``destination`` once, its outcome to be reported to the gate
    (compared by identity: the gate recognises *its* probe, not an older one alike)."""

    destination: str
    #: The one delivery let through to a paused destination.
    probe: bool
    #: The destination's state when the pass was given (see :class:`DestinationGate`).
    epoch: int


class OpenFailures(Generic[_Key]):
    """Each message's transient failures while its destination was open. From the
    second (:meth:`count` ≥ 2) the server is up and fails *that* bundle: it backs off on
    its own without pausing the destination. A probe's failure is not counted: the
    destination was down, and the gate counts those. ``limit``: messages remembered at
    most, the oldest forgotten first (None: until :meth:`forget`)."""

    def __init__(self, limit: int | None = None) -> None:
        self._counts: OrderedDict[_Key, int] = OrderedDict()
        self._limit = limit

    def count(self, key: _Key, granted: Pass) -> int:
        """Count this failure of message ``key``: its rank (1, 2…), 0 for a probe's."""
        if granted.probe:
            return 0
        rank = self._counts.pop(key, 0) + 1
        self._counts[key] = rank
        if self._limit is not None:
            while len(self._counts) > self._limit:
                self._counts.popitem(last=False)
        return rank

    def forget(self, key: _Key) -> None:
        """Message ``key`` is settled (delivered, dead-lettered, given back)."""
        self._counts.pop(key, None)


@dataclass(slots=True)
class _Destination:
    location: str
    #: Bumped when the destination pauses and when it opens again.
    epoch: int = 0
    paused: bool = False
    #: Failures of this outage: the first one, then each failed probe.
    failures: int = 0
    #: ``clock()`` times: the probe is allowed from ``until``; the outage began at ``since``.
    until: float = 0.0
    since: float = 0.0
    #: Safe words for the last failure (never the server's diagnostics), its HTTP status.
    reason: str = ""
    status: int | None = None
    probe: Pass | None = None
    #: Set (and replaced) at each change, for the deliveries waiting in ``wait_for_pass``.
    changed: asyncio.Event | None = None
    #: Those deliveries, first come first: the probe goes to the head of the line, so a
    #: failed probe's message (back at the tail) does not probe again before the others.
    line: deque[object] = field(default_factory=deque)


class DestinationGate:
    """The pause state of every destination of one process (see the module docstring)."""

    def __init__(
        self,
        locations: Mapping[str, str],
        *,
        initial: float,
        maximum: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: RandomSource | None = None,
    ) -> None:
        self._initial = max(0.0, initial)
        self._maximum = max(0.0, maximum)
        self._metrics = metrics
        self._clock = clock
        self._rng: RandomSource = rng or random.Random()
        self._states: dict[str, _Destination] = {}
        for name, location in locations.items():
            self._state(name, location)

    @classmethod
    def for_delivery(
        cls,
        locations: Mapping[str, str],
        delivery: DeliveryConfig,
        *,
        metrics: Metrics | None = None,
        rng: RandomSource | None = None,
    ) -> DestinationGate:
        """The gate of a process's destinations (name → where it delivers, safe to log:
        :func:`~listeners.delivery.destination_location`), pausing them like the retries
        of ``delivery`` back off (``backoff_initial`` doubling up to ``backoff_max``)."""
        return cls(
            locations,
            initial=delivery.backoff_initial,
            maximum=delivery.backoff_max,
            metrics=metrics,
            rng=rng,
        )

    # -- asking -----------------------------------------------------------------------------
    def try_pass(self, destination: str) -> Pass | None:
        """A pass if ``destination`` may be delivered to now, else None (it is paused)."""
        state = self._state(destination)
        if not state.paused:
            return Pass(destination, False, state.epoch)
        if state.probe is not None or self._clock() < state.until:
            return None
        state.probe = Pass(destination, True, state.epoch)
        return state.probe

    async def wait_for_pass(
        self, destination: str, *, interrupt: asyncio.Event | None = None
    ) -> Pass:
        """A pass, once ``destination`` may be delivered to (probes in arrival order);
        raises :class:`DestinationWaitInterrupted` if ``interrupt`` is set while it waits."""
        state = self._state(destination)
        if not state.paused:
            return Pass(destination, False, state.epoch)
        place = object()
        state.line.append(place)
        try:
            while True:
                first = state.line[0] is place
                if not state.paused or first:
                    granted = self.try_pass(destination)
                    if granted is not None:
                        return granted
                if interrupt is not None and interrupt.is_set():
                    raise DestinationWaitInterrupted(destination)
                if state.changed is None:
                    state.changed = asyncio.Event()
                events = [state.changed] if interrupt is None else [state.changed, interrupt]
                # The head of the line waits for the pause's end; the others for a change.
                timeout = state.until - self._clock() if first and state.probe is None else None
                await _first_of(events, timeout)
        finally:
            was_first = state.line[0] is place
            state.line.remove(place)
            if was_first:
                self._notify(state)  # the next in line now waits for the pause's end

    def retry_in(self, destination: str) -> float | None:
        """Seconds until ``destination`` may be tried again (0: being probed); None: open."""
        state = self._state(destination)
        if not state.paused:
            return None
        return 0.0 if state.probe is not None else max(0.0, state.until - self._clock())

    def readiness(self) -> dict[str, str]:
        """``destination:<name>`` → why it is not ready, for the destinations paused now
        after an HTTP answer (408, 429, 5xx…), which a ``/metadata`` probe may not see; a
        transport failure is the probe's to report (and it sees the server back at once).
        A pause over and not probed yet is left out: with no message to probe the
        destination, a red ``/ready`` could keep senders away and never clear."""
        now = self._clock()
        checks: dict[str, str] = {}
        for name, state in self._states.items():
            if state.status is None or (state.probe is None and now >= state.until):
                continue
            next_try = (
                "a delivery is probing it"
                if state.probe is not None
                else f"next attempt in {state.until - now:.1f}s"
            )
            checks[f"destination:{name}"] = (
                f"destination {self._shown(name, state)}: deliveries paused for "
                f"{now - state.since:.0f}s after {state.reason}; {next_try}"
            )
        return checks

    # -- outcomes ---------------------------------------------------------------------------
    def succeeded(self, granted: Pass) -> None:
        """The destination took the delivery (or rejected the bundle: it answered)."""
        state = self._state(granted.destination)
        if state.probe is not granted:
            return  # open already, or news from before the pause
        down = self._clock() - state.since
        state.paused, state.probe, state.failures, state.status = False, None, 0, None
        state.epoch += 1
        self._gauge(granted.destination, 1)
        log.info(
            "destination %s available again after %.1fs; deliveries resume",
            self._shown(granted.destination, state),
            down,
            extra=log_fields(destination=granted.destination, duration_ms=round(down * 1000)),
        )
        self._notify(state)

    def failed(
        self, granted: Pass, error: DeliveryError, *, cause: BaseException | None = None
    ) -> None:
        """The delivery failed for a reason of the destination (a transient failure);
        ``cause``: the exception ``error`` wraps, which the log line describes."""
        state = self._state(granted.destination)
        if state.paused and state.probe is granted:
            state.probe = None
            state.failures += 1
        elif not state.paused and granted.epoch == state.epoch:
            state.paused = True
            state.epoch += 1
            state.failures = 1
            state.since = self._clock()
        else:
            return  # a delivery let through before this pause: the same outage
        retry_after = error.retry_after if isinstance(error, TransientDeliveryError) else None
        delay = self._delay(state.failures, retry_after)
        state.until = self._clock() + delay
        failure = describe_failure(cause if cause is not None else error)
        state.reason, state.status = failure.reason, error.status
        facts = log_fields(
            destination=granted.destination,
            status=error.status,
            error_kind=failure.kind,
            delay_s=round(delay, 3),
            attempt=state.failures,
        )
        went = state.failures == 1  # one WARNING per outage; failed probes at DEBUG
        if went:
            self._gauge(granted.destination, 0)
        log.log(
            logging.WARNING if went else logging.DEBUG,
            "destination %s unavailable (%s); deliveries to it paused, next attempt in %.1fs"
            if went
            else "destination %s still unavailable (%s); next attempt in %.1fs",
            self._shown(granted.destination, state),
            failure.reason,
            delay,
            extra=facts,
        )
        self._notify(state)

    def abandoned(self, granted: Pass) -> None:
        """The delivery ended without a verdict on the destination: a probe passes on to
        the next delivery at once. Harmless after :meth:`succeeded` or :meth:`failed`."""
        state = self._states.get(granted.destination)
        if state is not None and state.probe is granted:
            state.probe = None
            self._notify(state)

    # -- internals --------------------------------------------------------------------------
    def _state(self, name: str, location: str = "") -> _Destination:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = _Destination(location)
            self._gauge(name, 1)
        return state

    def _delay(self, failures: int, retry_after: float | None) -> float:
        cap = backoff_cap(failures, initial=self._initial, maximum=self._maximum)
        # Not full jitter (down to 0) as for messages: one probe per step is the point; the
        # spread still keeps several worker processes from probing in step.
        delay = min(cap, max(cap / 2, self._rng.uniform(cap / 2, cap)))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._maximum))
        return delay

    def _gauge(self, name: str, value: int) -> None:
        if self._metrics is not None:
            self._metrics.destination_available.labels(name).set(value)

    @staticmethod
    def _shown(name: str, state: _Destination) -> str:
        return f"{name} ({state.location})" if state.location else name

    @staticmethod
    def _notify(state: _Destination) -> None:
        if state.changed is not None:
            state.changed.set()
            state.changed = None


async def _first_of(events: list[asyncio.Event], timeout: float | None) -> None:
    """Return when one of ``events`` is set or after ``timeout`` seconds (None: no limit)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(
            waiters,
            timeout=None if timeout is None else max(0.0, timeout),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
