"""The running service: MLLP listener, HTTP API and delivery workers in one process.

Start-up order: durable queue, destinations, conversion processes (templates loaded
before the first message), delivery workers, then the listeners. Shutdown reverses it
and drains like uvicorn's server: stop accepting, let frames being handled get their ACK,
let deliveries in flight finish (or leave them in the queue for the next start), close
the queue last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import Counter

from converter import (
    BundleValidationError,
    CharsetError,
    ConversionError,
    MappingError,
    ParseError,
    TemplateError,
    UnsupportedMessageError,
)

from .config import ConfigError, RouteConfig, ServiceConfig
from .conversion import INTERNAL_ERROR, ConversionFailure, ConversionPool
from .conversion_deaths import ConversionDeaths, payload_key
from .delivery import Sink, build_sink, destination_location, sink_readiness
from .errors import ConversionUnavailable, QueueError, ServiceError
from .file_modes import make_setting_dirs, template_cache_dir
from .http.api import create_app
from .http.server import EmbeddedHttpServer
from .ingest import Ingestor, SupportChecker
from .logs import log_fields
from .metrics import Metrics
from .mllp.server import MllpServer
from .queue.sqlite import SqliteQueue
from .stop_signals import install_stop_handlers, stop_step
from .worker import DeliveryWorkers

if TYPE_CHECKING:
    from .amqp.consumer import AmqpConsumer
    from .amqp.queue import AmqpQueue

__all__ = ["EXIT_RESTART", "Service"]

log = logging.getLogger("passerelle.service")

#: Seconds a stop (SIGTERM, SIGINT, SIGHUP) drains in all before closing what remains: a
#: container runtime must wait longer before its SIGKILL (``docker run --stop-timeout 40``).
SHUTDOWN_GRACE = 30.0
#: Of which, at most, for the ACKs of MLLP frames being handled (the listener's default).
_MLLP_GRACE = 10.0
#: Exit status of a service that stopped itself because a part it cannot work without
#: stopped for good (``Metrics.stopped``: the SQLite queue's writer thread ended). It is
#: sysexits' EX_TEMPFAIL ("try again"): not 0, so that every restart policy restarts it
#: (Docker ``on-failure``, systemd ``Restart=on-failure``), and none of the others (1: a
#: second signal, or a failed start; 2: the configuration).
EXIT_RESTART = 75
#: How often a running service checks those parts.
_VITALS_INTERVAL = 1.0
#: How long the metrics loop waits for each queue read (depth, backlog) per round.
_QUEUE_READ_WAIT = 0.5
#: The ``Retry-After`` (seconds) of an API conversion lost with a conversion process (the
#: new processes load the templates first) or for lack of memory.
_POOL_RESTART_RETRY_AFTER = 2

T = TypeVar("T")

#: The converter's error classes by name, as a conversion process reports them: the API
#: answers with the class the CLI and the ACK name (a template or validation failure is
#: not reported as a plain MappingError).
_ERROR_CLASSES: dict[str, type[ConversionError]] = {
    cls.__name__: cls
    for cls in (
        ParseError,
        CharsetError,
        UnsupportedMessageError,
        MappingError,
        TemplateError,
        BundleValidationError,
    )
}


class Service:
    """One Passerelle instance built from a :class:`ServiceConfig`."""

    def __init__(self, config: ServiceConfig, *, use_threads: bool = False) -> None:
        self.config = config
        self.metrics = Metrics()
        self.routes: dict[str, RouteConfig] = {
            "default": config.default_route(),
            **{route.name: route for route in config.routes},
        }
        self.queue: SqliteQueue | AmqpQueue
        if config.queue.backend == "amqp":
            # Messages go to RabbitMQ partition queues; `passerelle worker` delivers them.
            from .amqp.queue import AmqpQueue

            if config.amqp.url is None:
                raise ConfigError('queue.backend = "amqp" needs [amqp] url')
            queue = AmqpQueue(config.amqp)
            self.metrics.watch_connection("queue", queue)
            self.queue = queue
        else:
            self.queue = SqliteQueue(
                config.queue.path,
                commit_interval_ms=config.queue.commit_interval_ms,
                duplicate_window_hours=config.mllp.duplicate_window_hours,
                dead_letter_retention=config.queue.dead_letter_retention,
                on_expired=self.metrics.dead_letters_expired.inc,
            )
            # Its writer thread ended: only a restart mends it (/health red).
            self.metrics.watch_vital("queue", self.queue.failure)
        self.consumer: AmqpConsumer | None = None
        self.sinks: dict[str, Sink] = {}
        self.pool: ConversionPool | None = None
        self.workers: DeliveryWorkers | None = None
        self.mllp: MllpServer | None = None
        self._http: EmbeddedHttpServer | None = None
        self._depth_task: asyncio.Task[None] | None = None
        #: The MLLP listeners' cumulative stats already counted, by counter and labels.
        self._mllp_seen: dict[tuple[object, ...], int] = {}
        self._use_threads = use_threads
        #: Deaths of the conversion process converting each HTTP API request's body (by
        #: :func:`payload_key`): its client sends it again.
        self._request_deaths: ConversionDeaths[bytes] = ConversionDeaths()
        self.started = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        # 0700: the queue and the bundles are patient data.
        make_setting_dirs(config.data_dir, "data_dir", "PASSERELLE_DATA_DIR")
        make_setting_dirs(config.queue.path.parent, "queue.path", "PASSERELLE_QUEUE_PATH")
        await self.queue.start()
        self.sinks = {name: build_sink(dest) for name, dest in config.destinations.items()}
        for name, sink in self.sinks.items():
            if config.destinations[name].amqp is not None:
                self.metrics.watch_connection(f"destination:{name}", sink)
        self.pool = ConversionPool(
            {name: route.converter.converter_config() for name, route in self.routes.items()},
            processes=config.delivery.convert_processes,
            use_threads=self._use_threads,
            timeout=config.delivery.conversion_timeout,
            template_cache_dir=template_cache_dir(config.data_dir),
        )
        await asyncio.get_running_loop().run_in_executor(None, self.pool.warm_up)
        if isinstance(self.queue, SqliteQueue):
            moved = await self.queue.bring_forward(config.delivery.backoff_max)
            if moved:
                log.warning(
                    "retries scheduled beyond delivery.backoff_max brought forward",
                    extra=log_fields(count=moved),
                )
            self.workers = DeliveryWorkers(
                self.queue,
                self.pool,
                self.sinks,
                self._destination_of,
                config.delivery,
                self.metrics,
                locations={
                    name: destination_location(destination)
                    for name, destination in config.destinations.items()
                },
            )
            self.workers.start()
        support = SupportChecker(self.routes, metrics=self.metrics)
        self.metrics.keep_types(support.event_types())
        if config.amqp.consumer.enabled:
            from .amqp.consumer import AmqpConsumer

            self.consumer = AmqpConsumer(
                config,
                support=support,
                metrics=self.metrics,
                store=self.queue,
                notify=self.workers.notify if self.workers is not None else None,
                pool=self.pool,
                sinks=self.sinks,
                destination_of=self._destination_of,
            )
            await self.consumer.start()
        ingestor = Ingestor(config, self.queue, self.workers, support, self.metrics)
        self.mllp = MllpServer.from_config(
            config.mllp,
            ingestor.handle,
            on_oversized=ingestor.handle_oversized,
            logger=logging.getLogger("passerelle.mllp"),
        )
        await self.mllp.start()
        self._http = EmbeddedHttpServer(
            # The API converts with the default route: its charset reads an empty MSH-18.
            create_app(self, config.http, default_charset=config.default_route().converter.charset),
            config.http.host,
            config.http.port,
        )
        await self._http.start()
        self._depth_task = asyncio.create_task(self._watch_depth(), name="queue-depth")
        for name, (host, port) in self.mllp.addresses.items():
            log.info("MLLP listener ready", extra=log_fields(listener=name, port=port))
            del host
        log.info("HTTP API ready", extra=log_fields(port=self.http_port))
        self.started.set()

    @property
    def http_port(self) -> int:
        """The bound HTTP port (useful with port 0)."""
        assert self._http is not None
        return self._http.port

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Drain within ``grace`` seconds in all: each step gets what the previous ones
        left (the delivery workers keep working meanwhile), then closes what remains.

        A step that fails is logged (ERROR ``event=stop_step_failed``) and the stop goes
        on: an HTTP server or a sink whose close raised skipped the steps after it, the
        queue's close among them (its last commits and lock file left behind, and no
        ``stopped`` line)."""
        log.info("stopping")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace

        def remaining() -> float:
            return max(0.0, deadline - loop.time())

        # Each step's awaitable is made at its turn: its grace is what is left then.
        failed = 0
        if self.consumer is not None:
            failed += await stop_step(log, "the AMQP consumer", self.consumer.stop(remaining()))
        if self.mllp is not None:
            failed += await stop_step(
                log, "the MLLP listeners", self.mllp.stop(min(remaining(), _MLLP_GRACE))
            )
        if self._http is not None:
            # Without a bound, a client that never reads its response kept the service
            # from ever reaching the workers' and the queue's close.
            failed += await stop_step(log, "the HTTP API", self._http.stop(remaining()))
        if self._depth_task is not None:
            self._depth_task.cancel()
            await asyncio.gather(self._depth_task, return_exceptions=True)
        if self.workers is not None:
            failed += await stop_step(log, "the delivery workers", self.workers.stop(remaining()))
        if self.pool is not None:
            # A conversion still running (a delivery cancelled above) is ended when the
            # grace is up: converted again after the restart.
            failed += await stop_step(
                log,
                "the conversion processes",
                loop.run_in_executor(None, partial(self.pool.close, remaining())),
            )
        for name, sink in self.sinks.items():
            failed += await stop_step(log, f"destination {name!r}", sink.close())
        failed += await stop_step(log, "the queue", self.queue.close())
        if failed:
            log.warning(
                "stopped, %d step(s) of the stop failed (logged above)",
                failed,
                extra=log_fields(count=failed, event="stopped_with_failures"),
            )
        else:
            log.info("stopped")

    async def run(self) -> int:
        """Start, serve until SIGTERM, SIGINT or SIGHUP, stop gracefully; a second signal
        while stopping exits at once (status 1).

        A part the service cannot work without that stopped for good (its queue's writer
        thread) stops it the same way, then returns :data:`EXIT_RESTART` (else 0): /health
        turned red, but plain Docker and systemd restart no unhealthy process, and one
        that can store nothing refused every sender until someone noticed."""
        stop = asyncio.Event()
        install_stop_handlers(stop, log)
        broken: dict[str, str] = {}
        watch: asyncio.Task[None] | None = None
        try:
            if not stop.is_set():  # else a signal came during the imports: nothing to start
                await self.start()
                watch = asyncio.create_task(self._watch_vitals(stop, broken), name="vitals")
            await stop.wait()
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            await self.stop(SHUTDOWN_GRACE)
        return EXIT_RESTART if broken else 0

    async def _watch_vitals(self, stop: asyncio.Event, broken: dict[str, str]) -> None:
        """Set ``stop`` once a vital part stopped for good, naming it in ``broken``."""
        while not stop.is_set():
            found = self.metrics.stopped()
            if found:
                broken.update(found)
                for component, reason in found.items():
                    # The reason names the error's kind and place only (what /health says).
                    log.critical(
                        "%s stopped for good (%s): stopping the service, exit status %d"
                        " for its restart",
                        component,
                        reason,
                        EXIT_RESTART,
                        extra=log_fields(event="component_stopped"),
                    )
                stop.set()
                return
            await asyncio.sleep(_VITALS_INTERVAL)

    # -- helpers used by the API and workers -------------------------------------------------
    def _destination_of(self, route: str) -> str:
        found = self.routes.get(route)
        return found.destination if found is not None else "default"

    async def convert(
        self, data: bytes, *, input_type: str, root_template: str | None
    ) -> list[bytes]:
        """Synchronous conversion for the HTTP API (default route settings): each bundle's
        JSON text, as the conversion process wrote it."""
        assert self.pool is not None
        # A body whose conversion process died converts alone when sent again, beside the
        # pool: a client re-sending a poison message (Retry-After: 2) killed the pool each
        # time, failing every delivery in progress. The third death is a 422.
        deaths = self._request_deaths
        key = payload_key(f"{input_type}\0{root_template or ''}", data)
        try:
            outcome = await self.pool.convert(
                "default",
                data,
                input_type=input_type,
                root_template=root_template,
                alone=deaths.deaths(key) > 0,
            )
        except BrokenProcessPool:
            # A conversion process died (the OOM killer, a kill -9): the pool is already
            # replaced. The service's passing state, not a bug: the client retries (it got
            # a 500). Never converted again here: the client decides.
            died = deaths.died(key, keep=True)
            if died is None:
                raise ConversionUnavailable(
                    "a conversion process died; the conversion processes were restarted",
                    retry_after=_POOL_RESTART_RETRY_AFTER,
                ) from None
            outcome = died
        except MemoryError:
            # Let through by the converter on purpose (memory may come back: a delivery
            # retries it); it was a 500 "internal error", as for a bug.
            log.warning(
                "an HTTP API conversion ran out of memory",
                extra=log_fields(event="api_conversion_out_of_memory"),
            )
            died = deaths.died(key, out_of_memory=True, keep=True)
            if died is None:
                raise ConversionUnavailable(
                    "the conversion ran out of memory", retry_after=_POOL_RESTART_RETRY_AFTER
                ) from None
            outcome = died
        else:
            deaths.converted(key)
        if isinstance(outcome, ConversionFailure):
            if outcome.kind == INTERNAL_ERROR:  # a converter bug: the API answers 500
                raise ServiceError(f"{outcome.reason} at {outcome.location}")
            error_class = _ERROR_CLASSES.get(outcome.kind, MappingError)
            raise error_class(
                outcome.reason,
                location=outcome.location,
                template=outcome.template,
                control_id=outcome.control_id,
                message_type=outcome.message_type,
            )
        return [result.bundle for result in outcome]

    async def readiness(self) -> dict[str, str | None]:
        checks: dict[str, str | None] = {}
        # Each check on its own: the depth is read in the writer's next transaction, whose
        # commit fails on a full disk with the outcome it carries, and that failure hid
        # what the workers and the queue know ("queue unavailable: QueueError").
        problems: list[str | None] = []
        try:
            await self.queue.depth()
        except QueueError as exc:  # our text (SQLite's): no message content
            problems.append(f"queue unavailable: {exc}")
        except Exception as exc:
            problems.append(f"queue unavailable: {type(exc).__name__}")
        # A read succeeds on a full disk: the workers know whether outcomes commit, the
        # queue whether received messages do.
        if self.workers is not None:
            problems.append(self.workers.write_problem())
        if isinstance(self.queue, SqliteQueue):
            try:
                problems.append(await self.queue.store_problem())
            except Exception as exc:
                problems.append(f"queue unavailable: {type(exc).__name__}")
        checks["queue"] = "; ".join(dict.fromkeys(p for p in problems if p)) or None
        if self.consumer is not None:
            try:
                await self.consumer.check()
                checks["amqp-consumer"] = None
            except Exception as exc:
                checks["amqp-consumer"] = str(exc)[:200]
        gate = self.workers.gate if self.workers is not None else None
        checks.update(await sink_readiness(self.sinks, gate))
        return checks

    async def _watch_depth(self) -> None:
        """Every second: queue depth, oldest waiting message and dead letters kept, and
        the MLLP listeners' connection, framing, refusal and commit-acknowledgement
        stats. A queue read waits :data:`_QUEUE_READ_WAIT` at most: a writer held by a
        disk that does not answer froze every metric of this loop, the MLLP ones too
        (the queue's gauges keep their last values meanwhile, and no second read piles up
        behind the first)."""
        depth = _BoundedRead(self.queue.depth, "queue-depth-read")
        backlog = (
            _BoundedRead(partial(asyncio.to_thread, self.queue.backlog), "queue-backlog-read")
            if isinstance(self.queue, SqliteQueue)
            else None
        )
        try:
            while True:
                self._show_mllp_stats()
                with contextlib.suppress(Exception):  # unreadable: the last value stays
                    count = await depth.result(_QUEUE_READ_WAIT)
                    if count is not None:
                        self.metrics.queue_depth.set(count)
                if backlog is not None:
                    with contextlib.suppress(Exception):
                        kept = await backlog.result(_QUEUE_READ_WAIT)
                        if kept is not None:
                            self.metrics.show_oldest(kept.oldest_stored_at)
                            self.metrics.dead_letters.set(kept.dead_letters)
                await asyncio.sleep(1.0)
        finally:
            await depth.cancel()
            if backlog is not None:
                await backlog.cancel()

    def _show_mllp_stats(self) -> None:
        if self.mllp is None:
            return
        # The listeners' stats are cumulative: each counter is moved on by what is new.
        seen = self._mllp_seen

        def follow(counter: Counter, labels: tuple[str, ...], count: int) -> None:
            series = counter.labels(*labels)
            key = (id(counter), *labels)
            if count > seen.get(key, 0):
                series.inc(count - seen.get(key, 0))
            seen[key] = count

        for listener in self.config.mllp.listeners:
            stats = self.mllp.stats(listener.name)
            self.metrics.connections.labels(listener.name).set(stats.connections_open)
            follow(self.metrics.framing_errors, (listener.name,), stats.framing_errors)
            follow(self.metrics.commit_acks, (listener.name,), stats.commit_acks)
            follow(self.metrics.keepalives, (listener.name,), stats.keepalives)
            follow(self.metrics.commit_blocks_sent, (listener.name, "ack"), stats.commit_acks_sent)
            follow(self.metrics.commit_blocks_sent, (listener.name, "nak"), stats.commit_naks_sent)
            for reason, count in (
                ("max_connections", stats.connections_refused),
                ("frame_timeout", stats.frame_timeouts),
                ("max_unfinished_bytes", stats.unfinished_bytes_refusals),
                ("tls_handshake", stats.tls_handshake_failures),
                ("write_timeout", stats.write_timeouts),
            ):
                follow(self.metrics.connections_refused, (listener.name, reason), count)


class _BoundedRead(Generic[T]):
    """A read that may not answer (the queue's, behind a held writer), waited for a
    bounded time: left running when it does not answer, and waited for again by the next
    call instead of a second read being started behind it."""

    def __init__(self, read: Callable[[], Awaitable[T]], name: str) -> None:
        self._read = read
        self._name = name
        self._task: asyncio.Task[T] | None = None

    async def result(self, wait: float) -> T | None:
        """The read's value if it answers within ``wait`` seconds, else None; raises the
        read's error."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._read())
            self._task.set_name(self._name)
        done, _ = await asyncio.wait({self._task}, timeout=wait)
        if not done:
            return None
        task, self._task = self._task, None
        return task.result()

    async def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
