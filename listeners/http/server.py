"""uvicorn serving an ASGI app on the running event loop, for the service and the workers.

The process that embeds it owns SIGTERM/SIGINT and decides when the server stops; the
listening socket is bound here, so a busy port is a ``ServiceError`` naming ``http.port``
at start-up ("cannot start", exit 1) instead of uvicorn's ``sys.exit(3)`` from inside the
loop.

Bounds against slow or idle clients (uvicorn's h11 protocol has none before the first
request: its keep-alive timer starts only after a response):

- a connection that has not sent a complete request head within ``http.header_timeout``
  seconds of its opening (or of the end of its previous response) is closed;
- a request answered before its body was received whole (a 401, a 413, a 408, a 503) is
  answered with ``Connection: close``, the connection is not reused, and its closing
  lingers: the response sent, the connection is half-closed (FIN) and the rest of the
  body is read and dropped until the client closes its side, for at most
  ``http.header_timeout`` seconds. Closed at once, with the body's bytes still arriving,
  the socket would answer them with a reset, which can destroy the response before the
  client reads it; kept open without the header (as before), a client could send its
  next request on it, read as the end of the previous body. (uvicorn alone dropped those
  bytes as they came and restarted its keep-alive timer on each, so a trickle held the
  connection for ever.)
- with more than ``http.max_connections`` connections open (or requests running), a
  request is answered 503 at once, except ``GET /health``: the liveness probe must not
  restart a service that is only busy;
- beyond twice ``http.max_connections``, a new connection is closed unread, so that the
  process's file descriptors (shared with MLLP) stay bounded;
- a connection whose response stops draining (the client does not read: the transport's
  buffer stays above its high-water mark) for :data:`WRITE_STALL_TIMEOUT` seconds is
  aborted, and so, at shutdown, is every connection still open after the grace period
  given to :meth:`EmbeddedHttpServer.stop` (uvicorn's own shutdown waits for them with no
  limit: a client that never read a large ``/convert`` answer kept the service from
  stopping).

Responses carry no ``server`` header, and uvicorn's own 400 (a malformed request head)
is an OperationOutcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..binding import bind_error
from ..config import HttpConfig

__all__ = ["EmbeddedHttpServer"]

log = logging.getLogger("passerelle.http")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _outcome(status: int, code: str, diagnostics: str) -> bytes:
    issue = {"severity": "error", "code": code, "diagnostics": diagnostics}
    return json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()


_BUSY = _outcome(503, "transient", "too many connections; retry later")
_CLOSE = (b"connection", b"close")
#: Seconds an idle kept-alive connection stays open after a response.
KEEP_ALIVE_TIMEOUT = 5
#: Seconds a response may stay stalled (its client reads nothing: the write buffer stays
#: above the high-water mark) before the connection is aborted. A client reading at least
#: ~2 KB/s never reaches it.
WRITE_STALL_TIMEOUT = 30.0
#: Seconds :meth:`EmbeddedHttpServer.stop` waits for the server's task once the remaining
#: connections are aborted.
_ABORT_WAIT = 5.0


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/fhir+json"),
                (b"content-length", str(len(_BUSY)).encode()),
                (b"connection", b"close"),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY})


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head timeout and a connection limit."""

    max_connections = 100
    header_timeout = 10.0
    write_timeout = WRITE_STALL_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._served = self.app
        self.app = self._guarded
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self.aborted = False

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Here the request's own connection and task are counted.
        busy = (
            len(self.connections) > self.max_connections or len(self.tasks) > self.max_connections
        )

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start" and self.conn.their_state is h11.SEND_BODY:
                # Answered before the whole body came: say the connection ends with this
                # response (RFC 9112 §9.6), which makes h11 and uvicorn close it after.
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        try:
            if busy and scope.get("path") != "/health":
                await _busy(scope, receive, answer)
            else:
                await self._served(scope, receive, answer)
        except asyncio.CancelledError:
            if self.aborted:  # cut off by the end of the shutdown's grace: nothing to log
                return
            raise

    def abort(self) -> None:
        """Drop the connection now (unsent response data included)."""
        self.aborted = True
        self.transport.abort()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        self._lingering = False
        # uvicorn closes the connection through this proxy (after a response saying
        # Connection: close), which turns that close into a lingering one when needed.
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        if len(self.connections) > 2 * self.max_connections:
            transport.close()
            return
        self._arm_head_timer()

    def close_transport(self) -> None:
        """uvicorn's close: a lingering one while the client is still sending the body of
        a request already answered (see the module's docstring), else a plain one."""
        if self._lingering or self._raw.is_closing():
            self._raw.close()
            return
        if self.conn.their_state is not h11.SEND_BODY or not self._raw.can_write_eof():
            self._raw.close()
            return
        self._lingering = True
        self._raw.write_eof()  # after what is buffered: the response goes out whole
        self._raw.resume_reading()
        self._arm_head_timer(self._linger_ended)

    def _linger_ended(self) -> None:
        self._head_timer = None
        self._raw.close()

    @property
    def lingering(self) -> bool:
        return self._lingering

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a body answered already: dropped
        super().data_received(data)

    def _arm_head_timer(self, expired: Callable[[], None] | None = None) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(
            self.header_timeout, expired or self._head_timed_out
        )

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # IDLE: no complete request head since the connection opened or the last response
        # (h11 leaves IDLE once the whole head is parsed).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        # (A response sent before the whole body came said Connection: close: the
        # connection is closing, lingering, by now.)
        self._arm_head_timer()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        self._disarm_write_timer()
        super().resume_writing()

    def _disarm_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        # Also after the response was handed over whole: transport.close() waits for the
        # buffer to drain, so only an abort frees the connection from a client not reading.
        self._write_timer = None
        log.warning(
            "HTTP connection aborted: its client read nothing of the response for %.0fs",
            self.write_timeout,
        )
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._disarm_write_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        body = _outcome(400, "structure", msg)
        head = h11.Response(
            status_code=400,
            headers=[
                (b"content-type", b"application/fhir+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
            reason=b"Bad Request",
        )
        for event in (head, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


class _LingeringTransport:
    """The transport as uvicorn sees it: everything passes through, except ``close``, which
    the protocol may turn into a lingering close."""

    def __init__(self, transport: asyncio.Transport, protocol: _GuardedH11Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_transport()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()


class EmbeddedHttpServer:
    """One ASGI app on ``host:port`` (port 0: an ephemeral port, see :attr:`port`).

    ``limits`` (max_connections, header_timeout) default to the ``HttpConfig`` that
    :func:`~listeners.http.api.create_app` stored on the app, else to the defaults.
    """

    def __init__(
        self, app: ASGIApp, host: str, port: int, limits: HttpConfig | None = None
    ) -> None:
        self._host = host
        self._port = port
        if limits is None:
            stored = getattr(getattr(app, "state", None), "http_config", None)
            limits = stored if isinstance(stored, HttpConfig) else HttpConfig()
        chosen: HttpConfig = limits

        class Protocol(_GuardedH11Protocol):
            max_connections = chosen.max_connections
            header_timeout = chosen.header_timeout

        self._server = _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                http=Protocol,
                log_config=None,
                access_log=False,
                lifespan="off",
                loop="none",
                server_header=False,
                timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
                # Connections waiting to be accepted; also how many accept() errors asyncio
                # logs per attempt when file descriptors run out (2048 by default).
                backlog=128,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; returns once requests are answered (ServiceError: cannot bind,
        naming ``http.port`` or ``http.host`` and the remedy)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            listening = socket.create_server((self._host, self._port), family=family)
        except OSError as exc:
            raise bind_error(
                "the HTTP API",
                self._host,
                self._port,
                exc,
                port_setting="http.port",
                host_setting="http.host",
                variable="PASSERELLE_HTTP_PORT",
            ) from exc
        self._task = asyncio.create_task(self._server.serve(sockets=[listening]), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.02)

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server.servers, "the HTTP server is not started"
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, finish the requests in progress, close.

        After ``grace`` seconds (None: no limit), the connections still open (a response
        being computed, or unread by its client) are aborted and their requests cancelled.
        """
        self._server.should_exit = True
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            state = self._server.server_state
            connections = list(state.connections)
            log.warning(
                "HTTP shutdown: %d connection(s) still open after %.1fs, aborted "
                "(%d request(s) in progress cancelled)",
                len(connections),
                grace,
                len(state.tasks),
            )
            self._server.force_exit = True  # uvicorn stops waiting for them
            for connection in connections:
                if isinstance(connection, _GuardedH11Protocol):
                    connection.abort()
                else:  # pragma: no cover - every connection uses the guarded protocol
                    connection.transport.abort()
            for request in list(state.tasks):
                request.cancel()
            await asyncio.wait({task}, timeout=_ABORT_WAIT)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure of the server's task is not logged twice
