"""Empty MLLP frames (keep-alives) are not answered; a peer that never reads its ACKs does
not keep its connection. Real TCP sockets against a running server."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from listeners.config import MllpConfig
from listeners.mllp import AckOutcome, MllpServer, PeerInfo, parse_ack
from listeners.mllp.framing import frame

from ._support import RawConnection, Recorder, listener, message, port_of, run, serving


@pytest.mark.parametrize("payload", [b"", b"\r", b"\n", b"\r\n", b" \t\r\n "])
def test_an_empty_frame_is_a_keep_alive_not_answered(
    payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Some engines send VT FS CR on a quiet connection. Handed to the handler, it drew an
    AR (error 100, empty MSA-2), which the engine logged as a rejection, or read as the
    ACK of its next message."""

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, idle_timeout=0) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(frame(payload) + frame(payload))
            # Nothing comes back for the keep-alives; the next message gets its own ACK on
            # the same connection, the first frame read.
            with pytest.raises(TimeoutError):
                await conn.read(timeout=0.5)
            reply = await conn.exchange(message("HB-1"))
            assert reply is not None
            info = parse_ack(reply)
            assert (info.code, info.acknowledged_id) == ("AA", "HB-1")
            assert recorder.payloads == [message("HB-1")]
            stats = server.stats()
            assert (stats.keepalives, stats.frames, stats.acks_sent) == (2, 1, 1)
            assert server.open_connections == 1
            await conn.close()

    with caplog.at_level(logging.DEBUG, logger="listeners.mllp.server"):
        run(scenario())
    lines = [r for r in caplog.records if "keep-alive" in r.getMessage()]
    assert len(lines) == 2 and all(r.levelno == logging.DEBUG for r in lines)


def test_a_keep_alive_keeps_a_quiet_connection_open() -> None:
    """A heartbeat is activity: each one gives the connection another idle_timeout."""

    async def scenario() -> None:
        async with serving(Recorder(), idle_timeout=0.6) as server:
            conn = await RawConnection.open(port_of(server))
            for _ in range(4):
                await asyncio.sleep(0.3)
                await conn.send_raw(frame(b""))
            reply = await conn.exchange(message("HB-2"))
            assert reply is not None and parse_ack(reply).acknowledged_id == "HB-2"
            assert server.stats().idle_timeouts == 0
            await conn.close()

    run(scenario())


def _established_server_sides(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (this host, IPv4)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] == "01":
                count += 1
    return count


#: An ACK over the kernel's socket buffers (4 MiB at most on Linux): it stands for many
#: small ACKs a peer leaves unread.
BIG_ACK = b"MSH|^~\\&|A|B|C|D|20240101||ACK|1|P|2.5\rMSA|AA|1\rNTE|" + b"x" * 16 * 1024 * 1024


async def big_ack(payload: bytes, peer: PeerInfo) -> bytes:
    return BIG_ACK


async def never_reading_peer_is_cut_off(server: MllpServer, *, within: float = 10.0) -> None:
    """A client that sends two messages and never reads its ACKs (a small receive buffer,
    then ours, fill up): the server aborts the connection within ``within`` seconds."""
    port = port_of(server)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.setblocking(False)
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, frame(message("NR-1")) + frame(message("NR-2")))
        async with asyncio.timeout(within):
            while not server.stats().connections_total or server.open_connections:
                await asyncio.sleep(0.05)
        assert server.stats().write_timeouts == 1
        await asyncio.sleep(0.2)
        # Aborted, not left half-open waiting for the peer to read.
        assert _established_server_sides(port) == 0
        client.setblocking(True)
        client.settimeout(10)
        with pytest.raises(ConnectionResetError):
            while client.recv(1 << 20):
                pass
    finally:
        client.close()


@pytest.mark.parametrize("idle_timeout", [0, 30.0])
def test_a_peer_that_never_reads_its_acks_is_cut_off(
    idle_timeout: float, caplog: pytest.LogCaptureFixture
) -> None:
    """With idle_timeout 0, a sender that sends but never reads (its receive buffer full,
    then ours) kept its connection, its task and its max_connections slot until the
    service stopped; with an idle_timeout the ACK write gave up, but the close then
    waited, socket open, for the peer to read the unsent ACK."""

    async def scenario() -> None:
        async with serving(
            big_ack, [listener()], idle_timeout=idle_timeout, write_timeout=0.5
        ) as server:
            await never_reading_peer_is_cut_off(server)

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        run(scenario())
    (warning,) = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert "aborting the connection" in warning


def test_mllp_write_timeout_from_the_configuration_cuts_off_a_peer_that_never_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``[mllp] write_timeout`` reaches the server the service builds
    (:meth:`MllpServer.from_config`): it was fixed at 60 s whatever the configuration
    said, so this peer held its connection for a minute, past the 10 s allowed here."""
    config = MllpConfig(listeners=(listener(),), idle_timeout=0, write_timeout=0.5)

    async def scenario() -> None:
        server = MllpServer.from_config(config, big_ack)
        await server.start()
        try:
            await never_reading_peer_is_cut_off(server)
        finally:
            await server.stop(grace_period=1.0)

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        run(scenario())
    (warning,) = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert "within 0.5s" in warning


def test_a_peer_reading_its_acks_slowly_is_served() -> None:
    """The limit is on an ACK the peer takes none of, not on a slow reader."""

    async def scenario() -> None:
        recorder = Recorder(outcome=lambda payload: AckOutcome.accept())
        async with serving(recorder, idle_timeout=0, write_timeout=0.5) as server:
            conn = await RawConnection.open(port_of(server))
            for number in range(3):
                await asyncio.sleep(0.7)  # longer than write_timeout between messages
                reply = await conn.exchange(message(f"SR-{number}"))
                assert reply is not None and parse_ack(reply).acknowledged_id == f"SR-{number}"
            assert server.stats().write_timeouts == 0
            await conn.close()

    run(scenario())
