"""The MLLP server over real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from converter.errors import ParseError, UnsupportedMessageError
from converter.hl7v2.charset import decode_message
from listeners.mllp import (
    NO_REPLY,
    AckBuilder,
    AckOutcome,
    MllpClient,
    MllpServer,
    OversizedFrame,
    PeerInfo,
    frame,
    parse_ack,
    read_header,
    wants_accept_ack,
)

from ._support import (
    PATIENT_NAME,
    RawConnection,
    Recorder,
    listener,
    message,
    port_of,
    run,
    serving,
)


def test_aa_round_trip_and_peer_info() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            conn = await RawConnection.open(port_of(server))
            ack = await conn.exchange(message("RT-1"))
            assert ack is not None
            info = parse_ack(ack)
            assert (info.code, info.acknowledged_id) == ("AA", "RT-1")
            assert recorder.payloads == [message("RT-1")]
            peer = recorder.peers[0]
            assert (peer.listener, peer.host, peer.tls, peer.tls_subject) == (
                "test",
                "127.0.0.1",
                False,
                None,
            )
            local_port = conn.writer.get_extra_info("sockname")[1]
            assert peer.port == local_port
            await conn.close()
            stats = server.stats()
            assert (stats.connections_total, stats.frames, stats.acks_sent) == (1, 1, 1)
            assert stats.bytes_received == len(frame(message("RT-1")))
            assert stats.bytes_sent == len(frame(ack))

    run(scenario())


def test_many_concurrent_connections() -> None:
    connections, per_connection = 60, 5

    async def client(port: int, n: int) -> list[tuple[str, str]]:
        async with MllpClient("127.0.0.1", port, timeout=20) as mllp:
            pairs = []
            for i in range(per_connection):
                control_id = f"C{n}-{i}"
                ack = parse_ack(await mllp.send(message(control_id)))
                pairs.append((control_id, ack.acknowledged_id))
                assert ack.code == "AA"
            return pairs

    async def scenario() -> None:
        recorder = Recorder(delay=0.002)
        async with serving(recorder) as server:
            port = port_of(server)
            results = await asyncio.gather(*(client(port, n) for n in range(connections)))
            for pairs in results:
                assert all(sent == acked for sent, acked in pairs)
            assert server.stats().frames == connections * per_connection
            assert server.stats().connections_total == connections
            assert recorder.max_active == 1  # one frame at a time per connection

    run(scenario())


def test_pipelined_frames_are_handled_one_at_a_time_and_acked_in_order() -> None:
    async def scenario() -> None:
        recorder = Recorder(delay=0.01)
        async with serving(recorder) as server:
            conn = await RawConnection.open(port_of(server))
            ids = [f"P{i}" for i in range(8)]
            await conn.send_raw(b"".join(frame(message(i)) for i in ids))
            acked = []
            for _ in ids:
                ack = await conn.read()
                assert ack is not None
                acked.append(parse_ack(ack).acknowledged_id)
            assert acked == ids
            assert recorder.max_active == 1
            await conn.close()

    run(scenario())


def test_garbage_before_start_block_is_dropped_and_counted() -> None:
    async def scenario() -> None:
        async with serving(Recorder()) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(b"\r\n\x00junk" + frame(message("G1")))
            ack = await conn.read()
            assert ack is not None and parse_ack(ack).acknowledged_id == "G1"
            assert server.stats().dropped_bytes == len(b"\r\n\x00junk")
            await conn.close()

    run(scenario())


def test_truncated_frame_then_disconnect() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            port = port_of(server)
            bystander = await RawConnection.open(port)
            conn = await RawConnection.open(port)
            await conn.send_raw(b"\x0b" + message("TRUNC")[:30])
            await conn.close()
            for _ in range(100):
                if server.stats().truncated_frames:
                    break
                await asyncio.sleep(0.02)
            assert server.stats().truncated_frames == 1
            assert recorder.payloads == []
            ack = await bystander.exchange(message("STILL-OK"))
            assert ack is not None and parse_ack(ack).code == "AA"
            fresh = await RawConnection.open(port)
            assert await fresh.exchange(message("NEW")) is not None
            await bystander.close()
            await fresh.close()

    run(scenario())


def big_message(control_id: str, size: int = 5000) -> bytes:
    """A message of more than ``size`` bytes (a long Z segment after MSH and PID)."""
    return message(control_id) + b"ZZZ|" + b"x" * size + b"\r"


def test_oversized_frame_is_handed_to_on_oversized_and_the_connection_goes_on() -> None:
    builder = AckBuilder()
    seen: list[tuple[OversizedFrame, PeerInfo]] = []

    async def on_oversized(oversized: OversizedFrame, peer: PeerInfo) -> bytes | None:
        seen.append((oversized, peer))
        header = read_header(oversized.head)
        if header.rejection() is not None:
            return NO_REPLY
        return builder.build(header, AckOutcome.reject("207", f"{oversized.size} bytes"))

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, on_oversized=on_oversized, max_frame_bytes=2048) as server:
            conn = await RawConnection.open(port_of(server))
            big = big_message("BIG-1")
            ack = await conn.exchange(big)
            assert ack is not None
            info = parse_ack(ack)
            assert (info.code, info.acknowledged_id, info.error_codes) == ("AR", "BIG-1", ("207",))
            assert info.texts == (f"{len(big)} bytes",)
            ack = await conn.exchange(message("N1"))
            assert ack is not None and parse_ack(ack).acknowledged_id == "N1"
            # The handler may answer nothing (NO_REPLY): the connection stays open.
            await conn.send_raw(frame(b"A" * 3000))
            # An oversized frame given up on (a VT before its end) is only abandoned.
            await conn.send_raw(b"\x0b" + b"B" * 3000)
            ack = await conn.exchange(message("N2"))
            assert ack is not None and parse_ack(ack).acknowledged_id == "N2"
            await conn.close()
            stats = server.stats()
            assert (stats.framing_errors, stats.frames, stats.acks_sent) == (2, 2, 3)
            assert stats.connections_total == 1
        assert recorder.payloads == [message("N1"), message("N2")]
        assert [(o.head, o.size, o.limit) for o, _ in seen] == [
            (big[:2048], len(big), 2048),
            (b"A" * 2048, 3000, 2048),
        ]
        assert seen[0][1] == recorder.peers[0]

    run(scenario())


def test_without_on_oversized_an_oversized_frame_closes_that_connection_only() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, max_frame_bytes=2048) as server:
            port = port_of(server)
            bystander = await RawConnection.open(port)
            assert await bystander.exchange(message("B1")) is not None
            big = await RawConnection.open(port)
            await big.send_raw(frame(big_message("BIG")))
            assert await big.closed_by_server()
            assert server.stats().framing_errors == 1
            ack = await bystander.exchange(message("B2"))
            assert ack is not None and parse_ack(ack).acknowledged_id == "B2"
            assert [read_header(p).control_id for p in recorder.payloads] == ["B1", "B2"]
            await bystander.close()
            await big.close()

    run(scenario())


def test_a_failing_on_oversized_closes_without_reply() -> None:
    async def failing(oversized: OversizedFrame, peer: PeerInfo) -> bytes | None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        async with serving(Recorder(), on_oversized=failing, max_frame_bytes=100) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(frame(big_message("F1")))
            assert await conn.closed_by_server()
            assert (server.stats().handler_errors, server.stats().framing_errors) == (1, 1)
            await conn.close()

    run(scenario())


def reject_non_hl7(payload: bytes) -> AckOutcome:
    header = read_header(payload)
    rejection = header.rejection()
    if rejection is not None:
        return rejection
    if header.message_code not in ("ADT", "ORU"):
        return AckOutcome.from_error(
            UnsupportedMessageError(
                f"unsupported message type {header.message_code}", location="MSH-9.1"
            )
        )
    return AckOutcome.accept()


def test_non_hl7_payload_is_rejected_by_the_handler() -> None:
    async def scenario() -> None:
        async with serving(Recorder(outcome=reject_non_hl7)) as server:
            conn = await RawConnection.open(port_of(server))
            ack = await conn.exchange(b'{"resourceType": "Patient"}')
            assert ack is not None
            info = parse_ack(ack)
            assert (info.code, info.error_codes) == ("AR", ("100",))
            ack = await conn.exchange(message("Q1", msh9="QBP^Q22^QBP_Q21"))
            assert ack is not None
            info = parse_ack(ack)
            assert (info.code, info.acknowledged_id, info.error_codes) == ("AR", "Q1", ("200",))
            assert "ERR||MSH^1^9^1^1|200^Unsupported message type^HL70357|E" in "\r".join(
                info.segments
            )
            ack = await conn.exchange(message("OK1"))
            assert ack is not None and parse_ack(ack).code == "AA"
            await conn.close()

    run(scenario())


def test_wrong_charset_gets_a_well_formed_reject() -> None:
    def decode_or_reject(payload: bytes) -> AckOutcome:
        header = read_header(payload)
        try:
            decode_message(payload, header.codec or "utf-8")
        except ParseError as exc:
            return AckOutcome.from_error(exc)
        return AckOutcome.accept()

    async def scenario() -> None:
        async with serving(Recorder(outcome=decode_or_reject)) as server:
            conn = await RawConnection.open(port_of(server))
            text = message("CS-1", charset="UNICODE UTF-8").decode()
            payload = text.replace("Zyxwvut", "Zyxwvüt").encode("latin-1")
            ack = await conn.exchange(payload)
            assert ack is not None
            ack.decode("utf-8")  # strictly valid in the charset the ACK declares
            info = parse_ack(ack)
            assert (info.code, info.acknowledged_id, info.error_codes) == ("AR", "CS-1", ("102",))
            assert info.header.field(18) == "UNICODE UTF-8"
            assert b"Zyxw" not in ack
            await conn.close()

    run(scenario())


def test_enhanced_mode_accept_ack_and_no_reply() -> None:
    builder = AckBuilder()

    async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
        if not wants_accept_ack(payload, success=True):
            return NO_REPLY
        return builder.build(payload)

    async def scenario() -> None:
        async with serving(handler) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(frame(message("NE-1", accept_ack="NE", application_ack="AL")))
            ack = await conn.exchange(message("AL-1", accept_ack="AL", application_ack="NE"))
            assert ack is not None
            info = parse_ack(ack)
            assert (info.code, info.acknowledged_id) == ("CA", "AL-1")
            assert server.stats().frames == 2
            assert server.stats().acks_sent == 1
            await conn.close()

    run(scenario())


def test_handler_none_closes_without_reply() -> None:
    async def scenario() -> None:
        recorder = Recorder(outcome=lambda p: None)  # "storage failed"
        async with serving(recorder) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(frame(message("N1")))
            assert await conn.closed_by_server()
            assert server.stats().closed_without_reply == 1
            await conn.close()

    run(scenario())


def test_handler_exception_closes_without_ack_and_logs_no_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(payload: bytes, peer: PeerInfo) -> bytes | None:
        raise RuntimeError(f"cannot handle {payload!r}")

    async def scenario() -> None:
        logger = logging.getLogger("test.mllp")
        async with serving(failing, logger=logger) as server:
            port = port_of(server)
            conn = await RawConnection.open(port)
            await conn.send_raw(frame(message("X1")))
            assert await conn.closed_by_server()
            assert server.stats().handler_errors == 1
            other = await RawConnection.open(port)
            await other.send_raw(frame(message("X2")))
            assert await other.closed_by_server()
            await conn.close()
            await other.close()

    with caplog.at_level(logging.DEBUG, logger="test.mllp"):
        run(scenario())
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "RuntimeError" in text
    assert "handler failed" in text
    assert "Zyxwvut" not in text and "X1" not in text and "MSH" not in text
    assert PATIENT_NAME not in text


def test_idle_connection_is_closed() -> None:
    async def scenario() -> None:
        async with serving(Recorder(), idle_timeout=0.3) as server:
            conn = await RawConnection.open(port_of(server))
            started = time.monotonic()
            assert await conn.closed_by_server(timeout=5)
            assert 0.25 < time.monotonic() - started < 3
            assert server.stats().idle_timeouts == 1
            # A slow but steady sender is not cut off.
            slow = await RawConnection.open(port_of(server))
            for byte in frame(message("SLOW")):
                slow.writer.write(bytes([byte]))
                if byte in (0x0B, 0x0D, 0x1C):
                    await asyncio.sleep(0.1)
            ack = await slow.read()
            assert ack is not None and parse_ack(ack).acknowledged_id == "SLOW"
            await conn.close()
            await slow.close()

    run(scenario())


def test_several_listeners() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, [listener("east"), listener("west")]) as server:
            for name in ("east", "west"):
                conn = await RawConnection.open(port_of(server, name))
                assert await conn.exchange(message(name)) is not None
                await conn.close()
            assert [p.listener for p in recorder.peers] == ["east", "west"]
            assert server.stats("east").frames == 1
            assert server.stats().frames == 2

    run(scenario())


def test_graceful_stop_delivers_the_ack_of_a_frame_in_flight() -> None:
    async def scenario() -> None:
        recorder = Recorder(delay=0.5, started=asyncio.Event())
        server = MllpServer([listener()], recorder, grace_period=5)
        await server.start()
        port = port_of(server)
        idle = await RawConnection.open(port)
        busy = await RawConnection.open(port)
        await busy.send_raw(frame(message("INFLIGHT")))
        assert recorder.started is not None
        await recorder.started.wait()
        started = time.monotonic()
        stopping = asyncio.create_task(server.stop())
        ack = await busy.read()
        assert ack is not None and parse_ack(ack).acknowledged_id == "INFLIGHT"
        assert await busy.closed_by_server()
        assert await idle.closed_by_server()
        await stopping
        assert time.monotonic() - started < 3
        with pytest.raises(OSError):
            await RawConnection.open(port)
        assert server.open_connections == 0
        await idle.close()
        await busy.close()

    run(scenario())


def test_stop_gives_up_after_the_grace_period() -> None:
    async def scenario() -> None:
        recorder = Recorder(delay=30, started=asyncio.Event())
        server = MllpServer([listener()], recorder)
        await server.start()
        conn = await RawConnection.open(port_of(server))
        await conn.send_raw(frame(message("STUCK")))
        assert recorder.started is not None
        await recorder.started.wait()
        started = time.monotonic()
        await server.stop(grace_period=0.2)
        assert time.monotonic() - started < 3
        assert await conn.closed_by_server()
        await conn.close()

    run(scenario())


def test_server_rejects_bad_listener_sets() -> None:
    with pytest.raises(ValueError):
        MllpServer([], Recorder())
    with pytest.raises(ValueError):
        MllpServer([listener("a"), listener("a")], Recorder())


def test_stop_with_idle_connections_logs_no_asyncio_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        server = MllpServer([listener()], Recorder())
        await server.start()
        conns = [await RawConnection.open(port_of(server)) for _ in range(3)]
        assert await conns[0].exchange(message("I1")) is not None
        await server.stop()
        for conn in conns:
            assert await conn.closed_by_server()
            await conn.close()
        await asyncio.sleep(0.05)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(scenario())
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
