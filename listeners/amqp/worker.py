"""``passerelle worker``: consumes the partition queues of ``queue.backend = "amqp"``.

Any number of worker processes, on any machines, share the N partition queues. Each
partition is consumed by exactly one worker at a time (an **exclusive consumer**: the
broker refuses a second one) with prefetch 1, and its messages are handled one after the
other: convert, deliver, ack. So a patient's messages (same ordering key → same
partition) are delivered in the order they were stored.

**Fair share** (:mod:`.partitions`). Every worker also consumes the presence queue; its
consumer count is the number of live workers W. Every ``rebalance_interval`` a worker
computes its share, ``ceil(N / W)``: holding more, it releases the extra partitions (idle
ones first; a busy one after its message is finished); holding fewer, it claims free
partitions (no consumer), trying them from a random offset. Exclusivity comes from the
broker, not from the count: a stale count only delays the balance, it never lets two
workers consume one partition. Each message is handled by :mod:`.handling`.

**Retries in place.** A transient delivery failure is retried by the same worker, with
exponential backoff and jitter, without acking: later messages of the partition wait
(per-patient order; the price is that other patients sharing the partition wait too).
After ``delivery.max_attempts`` (0 = forever) the message goes to the dead-letter
exchange, like conversion errors, rejections and messages that are not envelopes.
Attempts are counted by the handling worker, in memory, not on the message (no header,
no broker delivery limit): a message given back unacked (partition released, stop,
crash, lost connection) starts again at attempt 1 with its next owner. So a stop during
an outage never counts an attempt it did not make; conversely ``max_attempts`` bounds
the attempts of one handling, not those made across restarts.

**Paused destinations** (:mod:`listeners.delivery.gate`). The handler's sinks are
:class:`~listeners.delivery.GatedSink`: after a transient failure of a destination, a
partition whose message goes there waits before sending (unacked, its later messages
behind it, like a retry in place) until the pause is over, and then only one of them
probes; its success lets the others go at once. The wait is no attempt: the handler counts
one per loop, and a loop sends once it is let through. A partition released while its
message waits gives it back unacked (:class:`~listeners.delivery.DestinationWaitInterrupted`
ends the wait without counting an attempt). Partitions whose messages go elsewhere carry on.

**Crashes and losses.** A message is acked only after its outcome: when a worker dies (or
its connection drops) the broker puts its unacked message back at the head of the
partition, and the next owner delivers it first — at least once; PUT with stable ids
makes the repeat harmless. After losing the connection a worker reconnects and claims
partitions again. A consumer the broker cancels (queue deleted, its cluster node down)
gives its partition up, to be claimed again once the queue is back.

**Signals.** SIGTERM, SIGINT and SIGHUP (unless ignored, ``nohup``) stop it gracefully:
every partition is released after its message in flight (within the grace), then the
worker disconnects and exits 0; a second signal during that drain exits at once (1), the
unacked messages going back to their partitions' heads.

**Probes.** A worker serves ``GET /health``, ``GET /ready`` (connected to RabbitMQ,
destinations reachable, no dead letter held for want of a queue bound to the dead-letter
exchange) and ``GET /metrics`` (``passerelle_amqp_connected{connection="worker"}``…) on
``[http]`` host and port, like the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from functools import partial

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from ..config import RouteConfig, ServiceConfig
from ..conversion import ConversionPool
from ..delivery import (
    DestinationGate,
    GatedSink,
    Sink,
    build_sink,
    destination_location,
    sink_readiness,
)
from ..file_modes import template_cache_dir
from ..http import EmbeddedHttpServer, create_probe_app
from ..logs import log_fields
from ..metrics import Metrics
from ..stop_signals import install_stop_handlers, stop_step
from .broker import ConfirmedPublisher, connect_plain, describe, safe_error
from .handling import MessageHandler
from .partitions import PartitionShare
from .topology import declare_dead_letters, declare_partitions

__all__ = ["AmqpWorker"]

log = logging.getLogger("passerelle.amqp.worker")


class AmqpWorker:
    """One ``passerelle worker`` (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        use_threads: bool = False,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if config.amqp.url is None:
            raise ValueError("passerelle worker needs [amqp] url")
        self.config = config
        self.metrics = metrics or Metrics()
        self._amqp = config.amqp
        self._url = config.amqp.url
        self._rng = rng or random.Random()
        self._use_threads = use_threads
        self.routes: dict[str, RouteConfig] = {
            "default": config.default_route(),
            **{route.name: route for route in config.routes},
        }
        self.pool: ConversionPool | None = None
        self.sinks: dict[str, Sink] = {}
        self._connection: AbstractConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._grace = 30.0
        self._http: EmbeddedHttpServer | None = None
        self._handler: MessageHandler | None = None
        self._share = PartitionShare(
            self._amqp,
            rng=self._rng,
            stopping=self._stopping,
            connection=lambda: self._connection,
            handler=lambda: self._handler,
        )
        self.metrics.partitions.set_function(lambda: len(self.owned))
        self.metrics.amqp_connected.labels("worker").set_function(
            lambda: float(self._connection is not None and not self._connection.is_closed)
        )
        self.gate = DestinationGate.for_delivery(
            {name: destination_location(d) for name, d in config.destinations.items()},
            config.delivery,
            metrics=self.metrics,
            rng=self._rng,
        )

    @property
    def processed(self) -> int:
        """Messages this worker settled (delivered or dead-lettered), for tests and logs."""
        return self._handler.processed if self._handler is not None else 0

    @property
    def http_port(self) -> int:
        """The bound port of the probes (useful with port 0)."""
        assert self._http is not None, "the worker is not started"
        return self._http.port

    @property
    def owned(self) -> list[int]:
        """Partitions consumed now (not being released)."""
        return self._share.owned

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (``ConnectionError`` if the broker is unreachable now), load templates,
        then claim partitions in the background."""
        config = self.config
        connection = await connect_plain(
            self._url, role="worker", timeout=self._amqp.confirm_timeout
        )
        try:
            self.pool = ConversionPool(
                {name: route.converter.converter_config() for name, route in self.routes.items()},
                processes=config.delivery.convert_processes,
                use_threads=self._use_threads,
                timeout=config.delivery.conversion_timeout,
                template_cache_dir=template_cache_dir(config.data_dir),
            )
            await asyncio.get_running_loop().run_in_executor(None, self.pool.warm_up)
            self.sinks = {name: build_sink(dest) for name, dest in config.destinations.items()}
            for name, sink in self.sinks.items():
                if config.destinations[name].amqp is not None:
                    self.metrics.watch_connection(
                        f"destination:{name}",
                        lambda sink=sink: bool(getattr(sink, "connected", False)),
                    )
            self._handler = MessageHandler(
                routes=self.routes,
                pool=self.pool,
                sinks={
                    name: GatedSink(sink, self.gate, interrupt=self._share.released_event)
                    for name, sink in self.sinks.items()
                },
                delivery=config.delivery,
                dead_letter_exchange=self._amqp.dead_letter_exchange,
                metrics=self.metrics,
                publisher=lambda: self._publisher,
                release=self._share.release,
                rng=self._rng,
            )
            http = EmbeddedHttpServer(
                create_probe_app(self, config.http), config.http.host, config.http.port
            )
            await http.start()
            self._http = http
        except BaseException:
            await connection.close()
            if self.pool is not None:
                self.pool.close()
            raise
        self._supervisor = asyncio.create_task(self._supervise(connection), name="amqp-worker")
        log.info(
            "worker started",
            extra=log_fields(
                peer=describe(self._url), count=self._amqp.partitions, port=self.http_port
            ),
        )

    async def stop(self, grace: float = 30.0) -> None:
        """Release every partition after its message in flight (within ``grace``), then
        disconnect; what is not acked by then is redelivered to another worker."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self._grace = grace
        self._stopping.set()
        if self._supervisor is not None:
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for name, sink in self.sinks.items():
            await stop_step(log, f"destination {name!r}", sink.close())
        if self.pool is not None:
            # A conversion of a partition cancelled at the grace's end is ended with it
            # (its message, never acknowledged, is redelivered): waiting for it held the
            # stop up to delivery.conversion_timeout, past the runtime's SIGKILL.
            remaining = max(0.0, deadline - loop.time())
            await loop.run_in_executor(None, partial(self.pool.close, remaining))
        # Last, so that /health answers while the partitions drain; only /health, /ready
        # and /metrics are served here: a few seconds bound a client that does not read.
        if self._http is not None:
            await self._http.stop(5.0)
        log.info("worker stopped", extra=log_fields(count=self.processed))

    async def readiness(self) -> dict[str, str | None]:
        """For ``GET /ready``: the broker connection and the destinations."""
        connection = self._connection
        connected = connection is not None and not connection.is_closed
        checks: dict[str, str | None] = {
            "amqp": None if connected else "not connected to RabbitMQ (reconnecting)"
        }
        held = self._handler.holds.problem() if self._handler is not None else None
        if held is not None:
            checks["dead-letters"] = held
        checks.update(await sink_readiness(self.sinks, self.gate))
        return checks

    async def run(self) -> None:
        """Start, work until SIGTERM, SIGINT or SIGHUP, stop gracefully; a second signal
        while stopping exits at once (status 1)."""
        stop = asyncio.Event()
        install_stop_handlers(stop, log)
        try:
            if not stop.is_set():  # else a signal came during the imports: nothing to start
                await self.start()
            await stop.wait()
        finally:
            await self.stop()

    # -- connection supervision ------------------------------------------------------------------
    async def _supervise(self, connection: AbstractConnection | None) -> None:
        while connection is not None:
            try:
                await self._session(connection)
            except Exception as exc:
                log.warning(
                    "RabbitMQ session ended",
                    extra=log_fields(error_kind=safe_error(exc, self._url)[:120]),
                )
            if self._stopping.is_set():
                return
            log.warning(
                "connection to RabbitMQ lost; reconnecting",
                extra=log_fields(peer=describe(self._url)),
            )
            connection = await self._reconnect()

    async def _reconnect(self) -> AbstractConnection | None:
        while not await self._stopped_within(self._amqp.reconnect_interval):
            try:
                connection = await connect_plain(
                    self._url, role="worker", timeout=self._amqp.confirm_timeout
                )
            except ConnectionError:
                continue
            log.info("reconnected to RabbitMQ", extra=log_fields(peer=describe(self._url)))
            return connection
        return None

    async def _session(self, connection: AbstractConnection) -> None:
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        self._connection = connection
        try:
            setup = await connection.channel(publisher_confirms=False)
            await declare_dead_letters(connection, setup, self._amqp)
            await declare_partitions(connection, setup, self._amqp)
            self._share.probe = setup
            self._publisher = ConfirmedPublisher(
                connection, timeout=self._amqp.confirm_timeout, url=self._url
            )
            presence = await connection.channel(publisher_confirms=False)
            queue = await presence.get_queue(self._amqp.presence_queue, ensure=False)
            await queue.consume(_ignore, no_ack=True)
            while not self._stopping.is_set() and not lost.is_set():
                await self._share.rebalance()
                await _first_of((self._stopping, lost), self._amqp.rebalance_interval)
        finally:
            await self._share.release_all(graceful=not lost.is_set(), grace=self._grace)
            if self._publisher is not None:
                await self._publisher.close()
            with contextlib.suppress(Exception):
                await connection.close()
            self._connection = self._share.probe = self._publisher = None

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()


async def _ignore(message: AbstractIncomingMessage) -> None:
    """Presence consumer: nothing is ever published to the presence queue."""
    del message


async def _first_of(events: tuple[asyncio.Event, ...], timeout: float) -> None:
    """Return when any of ``events`` is set or after ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
