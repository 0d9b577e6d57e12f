"""Helpers for the MLLP tests: messages, handlers, a running server, raw connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from listeners.config import ListenerConfig
from listeners.mllp import AckBuilder, AckOutcome, LaterReply, MllpServer, PeerInfo, frame
from listeners.mllp.framing import FrameReader

T = TypeVar("T")

PATIENT_NAME = "Zyxwvut^Secretname"


def message(
    control_id: str = "CID-1",
    *,
    sep: str = "|",
    msh2: str = "^~\\&",
    msh9: str = "ADT^A01^ADT_A01",
    version: str = "2.5.1",
    accept_ack: str = "",
    application_ack: str = "",
    charset: str = "",
    sending: tuple[str, str] = ("LABAPP", "LABFAC"),
    receiving: tuple[str, str] = ("PASSERELLE", "HOSP"),
    pid: str | None = None,
) -> bytes:
    """One message (segments ending in CR) with the given MSH values."""
    comp = msh2[0]
    fields = [
        "MSH",
        msh2,
        sending[0],
        sending[1],
        receiving[0],
        receiving[1],
        "20240102030405",
        "",
        msh9.replace("^", comp),
        control_id,
        "P",
        version,
        "",
        "",
        accept_ack,
        application_ack,
        "",
        charset,
    ]
    while fields[-1] == "":
        fields.pop()
    pid_line = (
        pid
        if pid is not None
        else sep.join(
            ["PID", "1", "", f"12345{comp}{comp}{comp}MRN", "", PATIENT_NAME.replace("^", comp)]
        )
    )
    return (sep.join(fields) + "\r" + pid_line + "\r").encode("utf-8")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a test scenario in a fresh event loop; a hang fails instead of blocking."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def listener(name: str = "test", **kwargs: Any) -> ListenerConfig:
    return ListenerConfig(name=name, host="127.0.0.1", port=0, **kwargs)


@dataclass
class Recorder:
    """A handler that acknowledges AA with :class:`AckBuilder`, recording what it saw.

    ``outcome`` may choose the outcome per payload; ``delay`` slows it down; ``active``
    tracks concurrency per connection to prove frames are handled one at a time.
    """

    builder: AckBuilder = field(default_factory=AckBuilder)
    outcome: Callable[[bytes], AckOutcome | None] | None = None
    delay: float = 0.0
    payloads: list[bytes] = field(default_factory=list)
    peers: list[PeerInfo] = field(default_factory=list)
    active: dict[int, int] = field(default_factory=dict)
    max_active: int = 0
    started: asyncio.Event | None = None

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        self.payloads.append(payload)
        self.peers.append(peer)
        self.active[peer.connection_id] = self.active.get(peer.connection_id, 0) + 1
        self.max_active = max(self.max_active, self.active[peer.connection_id])
        try:
            if self.started is not None:
                self.started.set()
            if self.delay:
                await asyncio.sleep(self.delay)
            outcome = self.outcome(payload) if self.outcome else AckOutcome.accept()
            return None if outcome is None else self.builder.build(payload, outcome)
        finally:
            self.active[peer.connection_id] -= 1


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[bytes, PeerInfo], Awaitable[bytes | LaterReply | None]],
    listeners: Sequence[ListenerConfig] | None = None,
    **kwargs: Any,
) -> AsyncIterator[MllpServer]:
    server = MllpServer(listeners or [listener()], handler, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_period=1.0)


def port_of(server: MllpServer, name: str = "test") -> int:
    return server.addresses[name][1]


class RawConnection:
    """A plain socket to the server for byte-level tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = FrameReader(reader)

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def exchange(self, payload: bytes, timeout: float = 10.0) -> bytes | None:
        await self.send_raw(frame(payload))
        return await self.read(timeout)

    async def read(self, timeout: float = 10.0) -> bytes | None:
        async with asyncio.timeout(timeout):
            return await self.frames.read_frame()

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection (EOF or reset) without a frame."""
        try:
            async with asyncio.timeout(timeout):
                return await self.frames.read_frame() is None
        except TimeoutError:  # an OSError too: test it first
            return False
        except (ConnectionError, OSError):
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
