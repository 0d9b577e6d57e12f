"""The embedded HTTP server and clients that never read their response, over real sockets.

uvicorn's own shutdown waits for every open connection with no limit, and a response the
client does not read keeps its connection open for ever (``transport.close()`` waits for
the buffer to drain): :meth:`EmbeddedHttpServer.stop` aborts what is left after its grace,
and a response stalled for ``write_timeout`` seconds is aborted at any time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from listeners.http import server as http_server
from listeners.http.server import EmbeddedHttpServer

#: Far more than the kernel's socket buffers hold: the rest waits in the transport.
BIG = 32 * 1024 * 1024


async def big_answer(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b"x" * BIG
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def non_reader(port: int) -> socket.socket:
    """A client that sends a request and then reads nothing (a tiny receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
    return sock


async def answered(sock: socket.socket) -> None:
    """Until the response's first bytes are in the client's buffer (nothing consumed)."""
    sock.setblocking(False)
    for _ in range(500):
        try:
            if sock.recv(1, socket.MSG_PEEK):
                return
        except BlockingIOError:
            pass
        await asyncio.sleep(0.01)
    raise AssertionError("the server never answered")


def open_connections(server: EmbeddedHttpServer) -> int:
    return len(server._server.server_state.connections)


def was_reset(sock: socket.socket) -> bool:
    """The server dropped the connection: a reset (or EOF) before the whole body."""
    sock.setblocking(True)
    sock.settimeout(5)
    received = 0
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return received < BIG


def test_stop_aborts_the_connections_left_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[float, int, socket.socket]:
        server = EmbeddedHttpServer(big_answer, "127.0.0.1", 0)
        await server.start()
        sock = non_reader(server.port)
        await answered(sock)
        await asyncio.sleep(0.2)  # the transport's buffer is over its high-water mark
        started = time.monotonic()
        await asyncio.wait_for(server.stop(grace=1.0), timeout=20)
        return time.monotonic() - started, open_connections(server), sock

    with caplog.at_level(logging.WARNING, logger="passerelle.http"):
        elapsed, left, sock = asyncio.run(scenario())
    with sock:
        assert 0.9 <= elapsed < 5, elapsed
        assert left == 0
        assert was_reset(sock)
    assert "HTTP shutdown: 1 connection(s) still open after 1.0s, aborted" in caplog.text
    # A request cut off by the grace is not an "Exception in ASGI application".
    assert "Exception in ASGI application" not in caplog.text


def test_stop_without_stragglers_returns_at_once() -> None:
    async def scenario() -> float:
        server = EmbeddedHttpServer(big_answer, "127.0.0.1", 0)
        await server.start()
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/big")
        assert len(response.content) == BIG
        started = time.monotonic()
        await server.stop(grace=10.0)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2


def test_a_response_nobody_reads_is_aborted_after_the_write_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(http_server._GuardedH11Protocol, "write_timeout", 1.0)

    async def scenario() -> tuple[int, int, socket.socket, int]:
        server = EmbeddedHttpServer(big_answer, "127.0.0.1", 0)
        await server.start()
        try:
            sock = non_reader(server.port)
            await answered(sock)
            before = open_connections(server)
            for _ in range(100):  # the connection goes well before stop() is called
                if open_connections(server) == 0:
                    break
                await asyncio.sleep(0.05)
            after = open_connections(server)
            # A client that reads gets the whole answer under the same timeout.
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{server.port}/big")
            return before, after, sock, len(response.content)
        finally:
            await server.stop(grace=5.0)

    with caplog.at_level(logging.WARNING, logger="passerelle.http"):
        before, after, sock, size = asyncio.run(scenario())
    with sock:
        assert (before, after) == (1, 0)
        assert was_reset(sock)
    assert size == BIG
    assert "client read nothing of the response for 1s" in caplog.text
