"""The MLLP server: listeners, connections, one frame at a time, graceful shutdown.

Each accepted connection is served by one task that reads a frame, awaits the handler,
writes the returned ACK (framed) and only then reads the next frame, so ACKs go out in
order. The handler decides everything about the message::

    async def handler(payload: bytes, peer: PeerInfo) -> bytes | LaterReply | None

* bytes: the ACK payload, framed and written by the server;
* a :class:`~.handler.LaterReply`: the message is stored, its reply comes later (the
  FHIR server's answer, ``ack_after = "delivery"``); the server awaits it and writes it
  as it would have written bytes (a release 2 listener writes its commit block first,
  at once: see below);
* :data:`NO_REPLY` (``b""``): nothing is written and the connection stays open (an
  enhanced-mode sender that asked for no accept ack, MSH-15 NE/ER/SU);
* ``None``: the connection is closed without a reply. Use it when the message could not
  be stored: like Google's MLLP adapter, the sender sees no ACK and sends the message
  again, whereas many senders treat an AE/AR as final and move on (the message would be
  lost).

A frame over ``max_frame_bytes`` is not held: the server reads past it (keeping only its
head, see :mod:`.framing`) and hands it to a second, optional handler::

    async def on_oversized(oversized: OversizedFrame, peer: PeerInfo) -> bytes | None

whose result means the same as the handler's. The server knows nothing of HL7: building
the refusal (an AR naming MSH-10) is the caller's business. An oversized frame met with
a closed connection and no ACK would be re-sent for ever, stalling the sender's feed,
which is why the connection stays usable. Without ``on_oversized`` the connection is
closed without a reply. Either way it is counted in ``framing_errors``.

Limits against peers that would hold the service's memory or file descriptors:

* ``max_connections`` per listener (:class:`~listeners.config.ListenerConfig`): a
  further connection is closed as soon as it is accepted, with a WARNING naming the
  listener and the peer (at most one every 10 s per listener, giving the number refused
  meanwhile) and counted in ``connections_refused``. Another listener, and the HTTP API,
  keep their file descriptors;
* ``frame_timeout``: a frame must end within it, counted from its start block (a start
  block that restarts an unfinished frame does not restart the count; the time the
  handler spends on earlier frames is not counted), plus one second per 16 KiB of it
  received, up to ``max_frame_bytes`` (:data:`.framing.FRAME_PROGRESS_RATE`: a large
  message arriving steadily over a slow link is not cut off). ``idle_timeout`` bounds
  each wait for bytes, so a peer trickling a byte now and then would otherwise hold its
  connection and its unfinished frame for ever. The connection is closed without an ACK (the
  sender re-sends);
* ``max_unfinished_bytes``: the bytes of unfinished frames held by every connection of
  every listener together (each may hold up to ``max_frame_bytes``). A read that takes
  them over it closes its connection without an ACK (the sender re-sends later, once
  other frames ended or timed out);
* ``write_timeout`` (60 s; never more than ``idle_timeout`` when that is set): an ACK the
  peer does not take within it (a peer that sends but never reads: its socket buffers
  fill up) aborts the connection, counted in ``write_timeouts``. With ``idle_timeout``
  0 such a peer kept its connection, task and slot until shutdown; and a plain close
  would wait for it to read the unsent ACK, for ever, so the connection is aborted
  with a reset (the kernel drops what it still held for that peer).

An empty frame (``VT FS CR``, or only blanks, line ends and NUL bytes: a keep-alive some
engines send) is not handed to the handler: no reply, connection kept, counted in
``keepalives``. NUL bytes padding a message (before its first or after its last printable
byte, some engines fill a fixed-size buffer with them) are removed before the handler
sees it; the rest of the frame is handed over byte for byte.

A listener with ``release = 2`` (MLLP release 2, as interface engines such as Mirth
Connect offer it) writes a commit acknowledgement block (``VT 0x06 FS CR``) before each
reply, and before nothing when there is no reply (:data:`NO_REPLY`): the handler returned,
so the message is taken care of. A reply that comes later (:class:`~.handler.LaterReply`)
has its commit block written as soon as the handler returns, before the wait: the
message is already stored, and a sender's commit timeout is often shorter than a
delivery. A failure while waiting for that reply closes the connection without a reply
and without a NAK (the block was committed: the message will be delivered). Where the
connection closes without a reply (``None``, a handler exception, an oversized frame
without ``on_oversized``) it first writes a commit NAK (``VT 0x15 FS CR``): not
committed, send it again. Commit blocks received from the peer are never answered, on
any listener.

A handler exception is logged (its type and where it was raised, never the payload) and
the connection is closed without a reply, which has the same effect as ``None``.

Logs name connections (``mllp#12``), listeners, peers, TLS subjects, sizes and
durations; never message content.

This module accepts connections (TLS, ``max_connections``), tracks them and stops;
each connection's frame loop is in :mod:`.connection`, the handler contract in
:mod:`.handler`, the counters in :mod:`.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from types import TracebackType

from ..binding import bind_error
from ..config import ListenerConfig, MllpConfig
from ..logs import describe_exception
from .app_ack import ApplicationAckNotice
from .connection import CLOSE_TIMEOUT, Connection, FrameLoop, close_connection
from .framing import DEFAULT_MAX_FRAME_BYTES, FrameBudget
from .handler import Handler, OversizedHandler, PeerInfo
from .stats import MllpStats
from .tls import server_ssl_context, subject_text

__all__ = ["MllpServer"]

_STREAM_LIMIT = 256 * 1024
#: Defaults of the limits (as in :class:`~listeners.config.MllpConfig`).
DEFAULT_FRAME_TIMEOUT = 60.0
DEFAULT_MAX_UNFINISHED_BYTES = 128 * 1024 * 1024
#: Seconds an ACK may wait for the peer to take it (see ``write_timeout``).
DEFAULT_WRITE_TIMEOUT = 60.0
#: Seconds between two WARNINGs about refused connections on one listener.
_REFUSAL_LOG_INTERVAL = 10.0


class MllpServer:
    """MLLP over TCP (optionally TLS / mutual TLS) on one or more listeners."""

    def __init__(
        self,
        listeners: Sequence[ListenerConfig],
        handler: Handler,
        *,
        on_oversized: OversizedHandler | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        idle_timeout: float | None = 300.0,
        frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
        max_unfinished_bytes: int | None = DEFAULT_MAX_UNFINISHED_BYTES,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        grace_period: float = 10.0,
        tls_handshake_timeout: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        names = [listener.name for listener in listeners]
        if not names or len(set(names)) != len(names):
            raise ValueError("MllpServer needs at least one listener, with unique names")
        self._listeners = tuple(listeners)
        # Never below one frame of the maximum size: it could never be received.
        self._budget = (
            FrameBudget(max(max_unfinished_bytes, max_frame_bytes))
            if max_unfinished_bytes
            else None
        )
        # Per listener: when the last refusal WARNING was logged, refusals since.
        self._refusals_logged: dict[str, tuple[float, int]] = {}
        self._grace_period = grace_period
        self._tls_handshake_timeout = tls_handshake_timeout
        self._log = logger or logging.getLogger(__name__)
        self._servers: list[tuple[ListenerConfig, asyncio.Server]] = []
        self._connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._stats = {name: MllpStats() for name in names}
        self._stopping = False
        self._stopped = asyncio.Event()
        self._frames = FrameLoop(
            handler,
            on_oversized,
            max_frame_bytes=max_frame_bytes,
            idle_timeout=idle_timeout or None,
            frame_timeout=frame_timeout or None,
            write_timeout=write_timeout or None,
            budget=self._budget,
            stopping=lambda: self._stopping,
            logger=self._log,
            commit_listeners=frozenset(lst.name for lst in listeners if lst.release == 2),
        )

    @classmethod
    def from_config(
        cls,
        config: MllpConfig,
        handler: Handler,
        *,
        on_oversized: OversizedHandler | None = None,
        logger: logging.Logger | None = None,
    ) -> MllpServer:
        """The listener as the service runs it. Unlike the constructor's, its handler
        sees HL7: a sender asking for application ACKs (MSH-16 AL/ER/SU), which are never
        sent, gets a WARNING per connection, at most one every 10 minutes per sender
        (:mod:`.app_ack`)."""
        notice = ApplicationAckNotice(
            logger or logging.getLogger(__name__), ack_after=config.ack_after
        )
        return cls(
            config.listeners,
            notice.wrap(handler),
            on_oversized=on_oversized,
            max_frame_bytes=config.max_frame_bytes,
            idle_timeout=config.idle_timeout,
            frame_timeout=config.frame_timeout,
            max_unfinished_bytes=config.max_unfinished_bytes,
            write_timeout=config.write_timeout,
            logger=logger,
        )

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener; raises (and binds nothing) if one cannot be bound."""
        if self._servers:
            raise RuntimeError("MllpServer already started")
        try:
            for index, listener in enumerate(self._listeners):
                # The one listener of an [mllp] table without [[mllp.listeners]] is named
                # "mllp": its settings are mllp.port, mllp.tls (errors name them so).
                implicit = len(self._listeners) == 1 and listener.name == "mllp"
                where = "mllp" if implicit else f"mllp.listeners[{index}]"
                context = server_ssl_context(listener.tls, f"{where}.tls") if listener.tls else None

                async def on_connect(
                    reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter,
                    listener: ListenerConfig = listener,
                    context: ssl.SSLContext | None = context,
                ) -> None:
                    await self._on_connect(listener, context, reader, writer)

                try:
                    server = await asyncio.start_server(
                        on_connect, listener.host, listener.port, limit=_STREAM_LIMIT
                    )
                except OSError as exc:
                    # Name the listener, its settings and the remedy (asyncio's text
                    # named only the address).
                    raise bind_error(
                        f"MLLP listener {listener.name}",
                        listener.host,
                        listener.port,
                        exc,
                        port_setting=f"{where}.port",
                        host_setting=f"{where}.host",
                        variable="PASSERELLE_MLLP_PORT" if index == 0 else None,
                    ) from exc
                self._servers.append((listener, server))
                self._log.info(
                    "MLLP listener %s on %s%s",
                    listener.name,
                    ", ".join(_sockname(s) for s in server.sockets),
                    _tls_label(listener),
                )
        except BaseException:
            for _, server in self._servers:
                server.close()
            self._servers.clear()
            raise

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Bound (host, port) of each listener, by name (useful with port 0)."""
        out: dict[str, tuple[str, int]] = {}
        for listener, server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.setdefault(listener.name, (str(host), int(port)))
        return out

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def unfinished_bytes(self) -> int:
        """Bytes of unfinished frames held by all connections (0 without a budget)."""
        return self._budget.used if self._budget is not None else 0

    def stats(self, listener: str | None = None) -> MllpStats:
        """A snapshot of the counters of ``listener``, or of all listeners summed."""
        if listener is not None:
            return self._stats[listener].copy()
        total = MllpStats()
        for stats in self._stats.values():
            total = total + stats
        return total

    async def stop(self, grace_period: float | None = None) -> None:
        """Stop accepting; close idle connections; let frames being handled finish and
        their ACKs be written within the grace period; then close everything."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self._grace_period if grace_period is None else grace_period
        for _, server in self._servers:
            server.close()
        busy: list[asyncio.Task[None]] = []
        for conn in list(self._connections.values()):
            if conn.busy:
                busy.append(conn.task)
            else:
                conn.task.cancel()
        if busy:
            self._log.info(
                "MLLP shutdown: waiting up to %.1fs for %d frame(s) in flight", grace, len(busy)
            )
            _, pending = await asyncio.wait(busy, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                self._log.warning(
                    "MLLP shutdown: %d connection(s) closed with a frame "
                    "still in flight (no ACK sent)",
                    len(pending),
                )
        remaining = [conn.task for conn in self._connections.values()]
        if remaining:
            await asyncio.wait(remaining, timeout=CLOSE_TIMEOUT * 2)
        for _, server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
        self._log.info("MLLP listeners stopped")
        self._stopped.set()

    # -- connections ------------------------------------------------------------------
    async def _on_connect(
        self,
        listener: ListenerConfig,
        context: ssl.SSLContext | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = asyncio.current_task()
        if self._stopping or task is None:
            writer.transport.abort()
            return
        peername = writer.get_extra_info("peername")
        host, port = (str(peername[0]), int(peername[1])) if peername else ("?", 0)
        stats = self._stats[listener.name]
        if stats.connections_open >= listener.max_connections:
            # Closed before anything is read or a TLS handshake is spent on it: its file
            # descriptor goes back at once (abort: nothing to flush).
            writer.transport.abort()
            stats.connections_refused += 1
            self._log_refusal(listener, PeerInfo(listener.name, host, port, 0).address)
            return
        conn = Connection(next(self._ids), listener.name, "", task, writer, time.monotonic())
        stats.connections_total += 1
        stats.connections_open += 1
        self._connections[conn.id] = conn
        peer = PeerInfo(listener.name, host, port, conn.id)
        conn.peer = peer.address
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        reason = "closed by peer"
        try:
            if context is not None:
                try:
                    await writer.start_tls(
                        context, ssl_handshake_timeout=self._tls_handshake_timeout
                    )
                except (OSError, TimeoutError, ConnectionError) as exc:
                    stats.tls_handshake_failures += 1
                    reason = "TLS handshake failed"
                    self._log.warning(
                        "mllp#%d %s from %s: TLS handshake failed: %s",
                        conn.id,
                        listener.name,
                        conn.peer,
                        _tls_reason(exc),
                    )
                    return
                peer = PeerInfo(
                    listener.name,
                    host,
                    port,
                    conn.id,
                    subject_text(writer.get_extra_info("peercert")),
                    tls=True,
                )
            self._log.info(
                "mllp#%d %s: connection from %s%s",
                conn.id,
                listener.name,
                conn.peer,
                f" ({peer.tls_subject})" if peer.tls_subject else "",
            )
            reason = await self._frames.serve(conn, peer, reader, writer, stats)
        except asyncio.CancelledError:
            reason = "server shutdown"
            if not self._stopping:
                raise
            # Cancelled by stop(): end normally, since asyncio (3.11) logs a spurious
            # error for a cancelled client_connected_cb task.
            task.uncancel()
        except Exception as exc:  # never let a connection take the server down
            reason = f"internal error ({describe_exception(exc)})"
            self._log.error("mllp#%d: unexpected %s", conn.id, reason)
        finally:
            del self._connections[conn.id]
            stats.connections_open -= 1
            if conn.stalled and sock is not None:
                # A reset: closed with unsent data, the socket would stay in the kernel,
                # its buffers full, for as long as the peer's zero window lasts.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await close_connection(
                writer, abort=conn.stalled or (reason == "server shutdown" and conn.busy)
            )
            self._log.info(
                "mllp#%d %s: closed (%s) after %d frame(s), %d bytes in, %d bytes out, "
                "%d dropped, %.1fs",
                conn.id,
                listener.name,
                reason,
                conn.frames,
                conn.bytes_in,
                conn.bytes_out,
                conn.dropped,
                time.monotonic() - conn.opened,
            )

    def _log_refusal(self, listener: ListenerConfig, peer: str) -> None:
        """A WARNING for a refusal, at most one per listener every 10 s (a flood of
        connections must not flood the log; the others at DEBUG); the next WARNING
        counts those left out."""
        now = time.monotonic()
        last, unlogged = self._refusals_logged.get(listener.name, (-math.inf, 0))
        if now - last < _REFUSAL_LOG_INTERVAL:
            self._refusals_logged[listener.name] = (last, unlogged + 1)
            self._log.debug(
                "MLLP listener %s: connection from %s refused (max_connections)",
                listener.name,
                peer,
            )
            return
        self._refusals_logged[listener.name] = (now, 0)
        self._log.warning(
            "MLLP listener %s: connection from %s refused: %d connections open, the "
            "listener's max_connections%s",
            listener.name,
            peer,
            listener.max_connections,
            f" ({unlogged} more refused since the last such warning)" if unlogged else "",
        )


def _sockname(sock: object) -> str:
    getsockname = getattr(sock, "getsockname", None)
    if getsockname is None:
        return "?"
    name = getsockname()
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)


def _tls_label(listener: ListenerConfig) -> str:
    if listener.tls is None:
        return ""
    return " (TLS, client certificate required)" if listener.tls.client_ca else " (TLS)"


#: What an OpenSSL reason means for the sender's setup: the bare code sent an interface
#: engineer to search engines (a plain MLLP sender on a TLS port read as
#: ``WRONG_VERSION_NUMBER``).
_TLS_HINTS = {
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (plain MLLP?): enable TLS on the "
    "sender, or send to a listener without TLS",
    "HTTP_REQUEST": "the peer sent an HTTP request, not a TLS handshake",
    "UNSUPPORTED_PROTOCOL": "the peer offers only TLS versions below 1.2, which this "
    "listener refuses",
    "NO_SHARED_CIPHER": "the peer offers no cipher this listener accepts",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no client certificate; this "
    "listener requires one (tls.client_ca)",
    "CERTIFICATE_VERIFY_FAILED": "the peer's client certificate was refused",
    # Seen for a bare TCP connect and close too (a load balancer's health check).
    "ConnectionResetError": "the peer closed the connection during the handshake (a TCP "
    "health check, or a sender that does not trust this listener's certificate)",
    "TimeoutError": "no handshake completed in time",
}


def _tls_reason(exc: BaseException) -> str:
    """The handshake failure for the WARNING: OpenSSL's reason, the certificate check's
    own message (``certificate has expired``) and what it means for the setup."""
    reason = (exc.reason if isinstance(exc, ssl.SSLError) else None) or type(exc).__name__
    text = reason
    verify = getattr(exc, "verify_message", None)
    if isinstance(exc, ssl.SSLCertVerificationError) and verify:
        text += f" ({verify})"
    hint = _TLS_HINTS.get(reason)
    return f"{text}; {hint}" if hint else text
