"""MLLP release 2 on a listener with ``release = 2``: a commit acknowledgement block
(``VT 0x06 FS CR``) before each reply, a commit NAK (``VT 0x15 FS CR``) before a close
without reply. A release 2 sender (Mirth Connect's MLLPv2 mode) waits for the commit
block after each message: without one it timed out and sent every message again.
Real sockets, the real server; the handlers stand for the service's outcomes (stored,
not stored, failed)."""

from __future__ import annotations

import pytest

from listeners.mllp import NO_REPLY, CommitNakError, MllpClient, PeerInfo, frame, parse_ack
from listeners.mllp.framing import CommitAck

from ._support import RawConnection, Recorder, listener, message, port_of, run, serving

COMMIT = CommitAck.ACK.value
NAK = CommitAck.NAK.value


def test_a_commit_block_comes_before_each_ack_on_one_connection() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, [listener(release=2)]) as server:
            conn = await RawConnection.open(port_of(server))
            for n in range(3):
                assert await conn.exchange(message(f"R2-{n}")) == COMMIT
                ack = await conn.read()
                assert ack is not None and parse_ack(ack).acknowledged_id == f"R2-{n}"
            # The peer's commit of our ACK is still not answered (nor committed).
            await conn.send_raw(frame(COMMIT))
            assert await conn.exchange(message("R2-last")) == COMMIT
            ack = await conn.read()
            assert ack is not None and parse_ack(ack).acknowledged_id == "R2-last"
            stats = server.stats()
            assert (stats.commit_acks_sent, stats.acks_sent, stats.commit_acks) == (4, 4, 1)
            assert stats.commit_naks_sent == 0
            await conn.close()

    run(scenario())


def test_a_message_answered_with_no_reply_is_committed() -> None:
    """MSH-15 NE, or an ACK the sender sent us: no HL7 reply, but the block is taken."""

    async def no_reply(payload: bytes, peer: PeerInfo) -> bytes | None:
        return NO_REPLY

    async def scenario() -> None:
        async with serving(no_reply, [listener(release=2)]) as server:
            conn = await RawConnection.open(port_of(server))
            assert await conn.exchange(message("NE-1", accept_ack="NE")) == COMMIT
            assert await conn.exchange(message("NE-2", accept_ack="NE")) == COMMIT
            with pytest.raises(TimeoutError):
                await conn.read(timeout=0.5)  # nothing else was written
            assert server.stats().commit_acks_sent == 2
            assert server.stats().acks_sent == 0
            await conn.close()

    run(scenario())


@pytest.mark.parametrize("failure", ["declined", "raised"])
def test_a_message_not_taken_gets_a_commit_nak_then_the_close(failure: str) -> None:
    """The handler returned None (not stored: full disk, stopping) or raised: the sender
    is told at once that the block was not committed, then the connection closes as on a
    release 1 listener."""

    async def not_taken(payload: bytes, peer: PeerInfo) -> bytes | None:
        if failure == "raised":
            raise RuntimeError("the queue could not be written")
        return None

    async def scenario() -> None:
        async with serving(not_taken, [listener(release=2)]) as server:
            conn = await RawConnection.open(port_of(server))
            assert await conn.exchange(message("LOST-1")) == NAK
            assert await conn.closed_by_server()
            stats = server.stats()
            assert (stats.commit_naks_sent, stats.commit_acks_sent) == (1, 0)

    run(scenario())


def test_an_oversized_frame_without_its_handler_gets_a_commit_nak() -> None:
    async def scenario() -> None:
        async with serving(Recorder(), [listener(release=2)], max_frame_bytes=2048) as server:
            conn = await RawConnection.open(port_of(server))
            big = message("BIG-1", pid="PID|1||" + "9" * 4000)
            assert await conn.exchange(big) == NAK
            assert await conn.closed_by_server()
            assert server.stats().commit_naks_sent == 1

    run(scenario())


def test_release_1_listeners_beside_it_send_no_commit_block() -> None:
    async def scenario() -> None:
        listeners = [listener("v2", release=2), listener("v1")]
        async with serving(Recorder(), listeners) as server:
            plain = await RawConnection.open(port_of(server, "v1"))
            first = await plain.exchange(message("V1-1"))
            assert first is not None and parse_ack(first).acknowledged_id == "V1-1"
            with pytest.raises(TimeoutError):
                await plain.read(timeout=0.5)
            committed = await RawConnection.open(port_of(server, "v2"))
            assert await committed.exchange(message("V2-1")) == COMMIT
            assert server.stats("v1").commit_acks_sent == 0
            assert server.stats("v2").commit_acks_sent == 1
            await plain.close()
            await committed.close()

    run(scenario())


def test_the_mllp_client_reads_the_commit_then_the_ack_or_raises_on_the_nak() -> None:
    """``passerelle send``'s client (a release 2 sender) against the listener."""

    async def scenario() -> None:
        recorder = Recorder()

        async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
            return None if b"|NAK-1|" in payload else await recorder(payload, peer)

        async with serving(handler, [listener(release=2)]) as server:
            port = port_of(server)
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                ack = parse_ack(await client.send(message("OK-1")))
                assert (ack.code, ack.acknowledged_id) == ("AA", "OK-1")
                assert client.last_commit is CommitAck.ACK
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                with pytest.raises(CommitNakError):
                    await client.send(message("NAK-1"))
            # A sender satisfied by the commit alone (commit_ack_is_final).
            async with MllpClient("127.0.0.1", port, timeout=10, commit_ack_is_final=True) as c:
                await c.send(message("OK-2"))
                assert c.last_commit is CommitAck.ACK
            assert [p.split(b"|")[9] for p in recorder.payloads] == [b"OK-1", b"OK-2"]

    run(scenario())
