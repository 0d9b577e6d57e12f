"""NUL bytes in MLLP frames: a frame of nothing but NULs and blanks is a keep-alive, and
NULs padding a message are not part of it. Real TCP sockets against a running server."""

from __future__ import annotations

import asyncio

import pytest

from listeners.mllp import AckBuilder, AckOutcome, MllpClient, PeerInfo, parse_ack
from listeners.mllp.framing import FrameReader, OversizedFrame, frame, unpad

from ._support import RawConnection, Recorder, message, port_of, run, serving


@pytest.mark.parametrize(
    "payload",
    [b"\x00", b"\x00" * 64, b"\x00\r\n\x00 ", b" \x00\t\x00\r"],
    ids=["one NUL", "64 NULs", "NULs and line ends", "blanks and NULs"],
)
def test_a_frame_of_nul_bytes_is_a_keep_alive_not_answered(payload: bytes) -> None:
    """Like the empty frame: it drew an AR (error 100, "the message does not start with an
    MSH segment", empty MSA-2) that the sender logged as a rejection or read as the ACK
    of its next message."""

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, idle_timeout=0) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(frame(payload))
            with pytest.raises(TimeoutError):
                await conn.read(timeout=0.5)
            reply = await conn.exchange(message("NUL-KA-1"))
            assert reply is not None
            assert parse_ack(reply).acknowledged_id == "NUL-KA-1"
            assert recorder.payloads == [message("NUL-KA-1")]
            stats = server.stats()
            assert (stats.keepalives, stats.frames, stats.acks_sent) == (1, 1, 1)
            await conn.close()

    run(scenario())


@pytest.mark.parametrize(
    ("padded", "expected_tail"),
    [
        (b"\x00\x00{msg}", b""),
        (b"{msg}\x00\x00\x00", b""),
        (b"{msg}\n\x00", b"\n"),
        (b"\x00\r\n{msg}\x00 \r\x00", b" \r"),
    ],
    ids=["leading", "trailing", "after a line end", "both, among blanks"],
)
def test_nul_bytes_padding_a_message_are_not_part_of_it(
    padded: bytes, expected_tail: bytes
) -> None:
    """The handler gets the message without the NULs around it (the blanks and line ends
    stay, byte for byte): kept, leading NULs hid MSH (an AR) and trailing ones made a
    last segment the converter refuses, after the message had been acknowledged."""
    msg = message("NUL-PAD-1")
    payload = padded.replace(b"{msg}", msg)

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, idle_timeout=0) as server:
            conn = await RawConnection.open(port_of(server))
            reply = await conn.exchange(payload)
            assert reply is not None
            assert parse_ack(reply).acknowledged_id == "NUL-PAD-1"
            (received,) = recorder.payloads
            assert b"\x00" not in received
            assert received.endswith(msg + expected_tail)
            assert received.strip() == msg.strip()
            await conn.close()

    run(scenario())


def test_nul_bytes_inside_a_message_are_kept() -> None:
    """Only padding goes: a NUL within the message is the message's (the converter says
    where it is, in its refusal)."""
    inner = message("NUL-IN-1").replace(b"Secretname", b"Secret\x00name")
    assert unpad(inner) is inner
    assert unpad(b"\x00" + inner + b"\x00") == inner
    assert unpad(b" \x00 ") == b""


def test_the_client_skips_the_servers_keep_alives() -> None:
    """A server sending a keep-alive block (empty, or NULs) before an ACK: the client took
    the keep-alive for the ACK ("no MSA"), and the real ACK, left unread, for the next
    message's, whose MSA-2 then named the previous message."""

    async def scenario() -> list[str]:
        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            frames = FrameReader(reader)
            while (payload := await frames.read_frame()) is not None:
                ack = AckBuilder().build(payload, AckOutcome.accept())
                writer.write(frame(b"") + frame(b"\x00\x00") + frame(ack))
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                return [
                    parse_ack(await client.send(message(f"KA-{n}"))).acknowledged_id
                    for n in range(3)
                ]
        finally:
            server.close()
            await server.wait_closed()

    assert run(scenario()) == ["KA-0", "KA-1", "KA-2"]


def test_an_oversized_frame_padded_with_nuls_is_answered_by_its_msh() -> None:
    """The head handed to ``on_oversized`` starts at MSH: with the NULs, its MSH-10 could
    not be read and the AR named no message (MSA-2 empty)."""
    heads: list[bytes] = []

    async def on_oversized(oversized: OversizedFrame, peer: PeerInfo) -> bytes:
        heads.append(oversized.head)
        return AckBuilder().build(oversized.head, AckOutcome.reject("207", "too large"))

    async def scenario() -> str:
        async with serving(
            Recorder(), on_oversized=on_oversized, max_frame_bytes=200, idle_timeout=0
        ) as server:
            conn = await RawConnection.open(port_of(server))
            big = b"\x00" * 8 + message("BIG-NUL-1") + b"NTE|1||" + b"x" * 400 + b"\r"
            reply = await conn.exchange(big)
            await conn.close()
            assert reply is not None
            return parse_ack(reply).acknowledged_id

    assert run(scenario()) == "BIG-NUL-1"
    assert heads[0].startswith(b"MSH|")
