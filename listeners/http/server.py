"""uvicorn serving an ASGI app on the running event loop, for the service and the workers.

The process that embeds it owns SIGTERM/SIGINT and decides when the server stops; the
listening socket is bound here, so a busy port is an ``OSError`` at start-up ("cannot
start", exit 1) instead of uvicorn's ``sys.exit(3)`` from inside the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["EmbeddedHttpServer"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedHttpServer:
    """One ASGI app on ``host:port`` (port 0: an ephemeral port, see :attr:`port`)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server = _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
                loop="none",
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; returns once requests are answered (OSError: cannot bind)."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listening = socket.create_server((self._host, self._port), family=family)
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

    async def stop(self) -> None:
        """Stop accepting, finish the requests in progress, close."""
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
