"""Real HTTP proxies for the delivery tests.

:class:`ForwardProxy` is an outbound proxy (CONNECT tunnels and absolute-form requests),
for ``destinations.NAME.proxy``.

:class:`FailingProxy` answers 500 (with an OperationOutcome) to every POST whose body holds
``failing`` and forwards everything else to the server: a server that is up and takes
every bundle but one (a 500 on that payload, each time). Shared by the service's test
(``test_bundle_failing_alone.py``) and ``passerelle worker``'s
(``tests/listeners/amqp/test_worker_bundle_failing_alone.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

__all__ = ["FailingProxy", "ForwardProxy", "RelayProxy", "failing_proxy", "serving"]

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding", "host"}
_OUTCOME = (
    b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception",'
    b'"diagnostics":"NullPointerException"}]}'
)


class RelayProxy(ThreadingHTTPServer):
    """Relays every request to the url :meth:`target` gives its path (hop-by-hop headers
    left out), unless :meth:`intercept` answers it; :meth:`answered` sees each status.
    Serve it with :func:`serving`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.client = httpx.Client(timeout=30)

    def target(self, path: str) -> str:
        raise NotImplementedError

    def intercept(self, command: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        return None

    def answered(self, command: str, status: int) -> None:
        pass


class _RelayHandler(BaseHTTPRequestHandler):
    server: RelayProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = self.server.intercept(self.command, body)
        if answer is None:
            response = self.server.client.request(
                self.command,
                self.server.target(self.path),
                content=body,
                headers={k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP},
            )
            headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
            answer = (response.status_code, headers, response.content)
        self.server.answered(self.command, answer[0])
        status, headers, content = answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_DELETE = _forward


_Relay = TypeVar("_Relay", bound=RelayProxy)


@contextlib.contextmanager
def serving(proxy: _Relay) -> Iterator[_Relay]:
    """``proxy`` serving in a thread meanwhile."""
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        proxy.client.close()


class FailingProxy(RelayProxy):
    """Serves ``url`` (``/fhir/R4`` like the server); ``failed_posts``: when each refused
    POST came (``time.monotonic()``)."""

    def __init__(self, upstream: str, failing: bytes) -> None:
        super().__init__()
        self.upstream = upstream
        self.failing = failing
        self.failed_posts: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/fhir/R4"

    def target(self, path: str) -> str:
        return self.upstream + path.removeprefix("/fhir/R4")

    def intercept(self, command: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        if command == "POST" and self.failing in body:
            self.failed_posts.append(time.monotonic())
            return 500, {"Content-Type": "application/fhir+json"}, _OUTCOME
        return None


def failing_proxy(upstream: str, failing: bytes) -> contextlib.AbstractContextManager[FailingProxy]:
    """A :class:`FailingProxy` to ``upstream`` (the server's base url), serving meanwhile."""
    return serving(FailingProxy(upstream, failing))


class ForwardProxy:
    """A real outbound HTTP proxy on 127.0.0.1, in a thread: ``CONNECT host:port`` tunnels
    (https destinations) and absolute-form requests forwarded (http destinations), one
    request per client connection (``Connection: close``), as squid or tinyproxy would.

    ``credentials`` (``user:password``): the ``Proxy-Authorization`` Basic it requires,
    else it answers 407. ``seen``: ``(method, target, authorized)`` of each request."""

    def __init__(self, credentials: str | None = None) -> None:
        self.credentials = credentials
        self.seen: list[tuple[str, str, bool]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._clients):
                writer.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _authorized(self, head: list[str]) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(self.credentials.encode()).decode()
        return any(
            line.split(":", 1)[0].strip().lower() == "proxy-authorization"
            and line.split(":", 1)[1].strip() == expected
            for line in head[1:]
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            head = raw.decode("latin-1").split("\r\n")[:-2]
            method, target, _ = head[0].split(" ", 2)
            authorized = self._authorized(head)
            self.seen.append((method, target, authorized))
            if not authorized:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                    b"Connection: close\r\n\r\n"
                )
                await writer.drain()
                return
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await _pipe_both(reader, writer, up_reader, up_writer)
                return
            await self._forward(method, target, head, reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _forward(
        self,
        method: str,
        target: str,
        head: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        parts = urlsplit(target)
        headers = [
            line
            for line in head[1:]
            if line.split(":", 1)[0].strip().lower()
            not in ("proxy-authorization", "proxy-connection", "connection")
        ]
        length = next(
            (int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")),
            0,
        )
        body = await reader.readexactly(length)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = "\r\n".join([f"{method} {path} HTTP/1.1", *headers, "Connection: close"])
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        up_writer.write(request.encode("latin-1") + b"\r\n\r\n" + body)
        await up_writer.drain()
        answer_head = await up_reader.readuntil(b"\r\n\r\n")
        lines = answer_head.decode("latin-1").split("\r\n")[:-2]
        kept = [line for line in lines if not line.lower().startswith("connection:")]
        writer.write(("\r\n".join([*kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
        # The server closes after its answer (Connection: close): relay until then.
        while chunk := await up_reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        up_writer.close()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
