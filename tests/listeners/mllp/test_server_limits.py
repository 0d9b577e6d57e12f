"""The MLLP server's limits against peers that hold connections or memory: connections
per listener (``max_connections``), the deadline of a frame (``frame_timeout``) and the
bytes of unfinished frames of all connections (``max_unfinished_bytes``)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from listeners.mllp import OversizedFrame, PeerInfo, parse_ack
from listeners.mllp.framing import START_BLOCK

from ._support import RawConnection, Recorder, listener, message, port_of, run, serving


async def _acked(conn: RawConnection, control_id: str) -> None:
    ack = await conn.exchange(message(control_id))
    assert ack is not None, f"no ACK for {control_id}"
    assert parse_ack(ack).code == "AA"


async def _eventually(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# -- max_connections --------------------------------------------------------------------------
def test_connections_beyond_max_connections_are_closed_at_accept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="passerelle.test-limits")

    async def scenario() -> None:
        recorder = Recorder()
        listeners = [listener("noisy", max_connections=3), listener("chu")]
        logger = logging.getLogger("passerelle.test-limits")
        async with serving(recorder, listeners, logger=logger) as server:
            noisy = port_of(server, "noisy")
            held = [await RawConnection.open(noisy) for _ in range(3)]
            for i, conn in enumerate(held):
                await _acked(conn, f"HELD-{i}")
            refused = [await RawConnection.open(noisy) for _ in range(4)]
            for conn in refused:
                assert await conn.closed_by_server(timeout=5)
            stats = server.stats("noisy")
            assert (stats.connections_refused, stats.connections_open) == (4, 3)
            assert stats.connections_total == 3  # refused ones are not served at all
            # The held connections and the other listener are untouched.
            await _acked(held[0], "HELD-AGAIN")
            other = await RawConnection.open(port_of(server, "chu"))
            await _acked(other, "CHU-1")
            assert server.stats("chu").connections_refused == 0
            # A slot freed is a slot taken.
            await held.pop().close()
            await _eventually(lambda: server.stats("noisy").connections_open == 2)
            again = await RawConnection.open(noisy)
            await _acked(again, "AGAIN-1")
            for conn in [*held, *refused, other, again]:
                await conn.close()

    run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.msg]
    # One WARNING naming listener and peer; the next refusals within 10 s at DEBUG only.
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert text.startswith("MLLP listener noisy: connection from 127.0.0.1:")
    assert "3 connections open, the listener's max_connections" in text
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "refused" in r.msg]
    assert len(debug) == 3


def test_the_next_refusal_warning_counts_the_ones_left_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("listeners.mllp.server._REFUSAL_LOG_INTERVAL", 0.3)

    async def scenario() -> None:
        async with serving(Recorder(), [listener(max_connections=1)]) as server:
            held = await RawConnection.open(port_of(server))
            await _acked(held, "HELD-1")
            for _ in range(3):
                conn = await RawConnection.open(port_of(server))
                assert await conn.closed_by_server(timeout=5)
            await asyncio.sleep(0.4)
            late = await RawConnection.open(port_of(server))
            assert await late.closed_by_server(timeout=5)
            await held.close()

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        run(scenario())
    texts = [r.getMessage() for r in caplog.records if "refused" in r.msg]
    assert len(texts) == 2
    assert "more refused" not in texts[0]
    assert texts[1].endswith("(2 more refused since the last such warning)")


# -- frame_timeout ----------------------------------------------------------------------------
def test_a_frame_trickled_past_frame_timeout_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A byte every 0.1 s keeps the per-read idle timeout from ever firing: only the
    frame's own deadline ends it."""

    async def scenario() -> float:
        recorder = Recorder()
        async with serving(recorder, idle_timeout=1.0, frame_timeout=0.6) as server:
            conn = await RawConnection.open(port_of(server))
            await _acked(conn, "BEFORE-1")  # the deadline is per frame, not per connection
            started = time.monotonic()
            await conn.send_raw(START_BLOCK)
            payload = message("TRICKLE-1")
            closed = False
            for byte in payload:
                try:
                    await conn.send_raw(bytes([byte]))
                except ConnectionError:
                    closed = True
                    break
                if conn.reader.at_eof():
                    closed = True
                    break
                await asyncio.sleep(0.1)
                assert time.monotonic() - started < 5, "a trickling sender was never closed"
            assert closed or await conn.closed_by_server(timeout=2)
            elapsed = time.monotonic() - started
            stats = server.stats()
            assert (stats.frame_timeouts, stats.idle_timeouts, stats.frames) == (1, 0, 1)
            assert recorder.payloads == [message("BEFORE-1")]  # the unfinished frame: not
            return elapsed

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        elapsed = run(scenario())
    assert 0.5 < elapsed < 2.0
    (warning,) = [r.getMessage() for r in caplog.records if "frame_timeout" in r.getMessage()]
    assert "frame not complete 0.6s after its start block" in warning
    assert "test from 127.0.0.1:" in warning and "closing without ACK" in warning


def test_a_slow_frame_within_frame_timeout_is_acknowledged() -> None:
    async def scenario() -> None:
        async with serving(Recorder(), idle_timeout=1.0, frame_timeout=2.0) as server:
            conn = await RawConnection.open(port_of(server))
            payload = message("SLOW-1")
            await conn.send_raw(START_BLOCK + payload[:20])
            await asyncio.sleep(0.4)
            await conn.send_raw(payload[20:40])
            await asyncio.sleep(0.4)
            await conn.send_raw(payload[40:] + b"\x1c\r")
            ack = await conn.read()
            assert ack is not None and parse_ack(ack).acknowledged_id == "SLOW-1"
            assert server.stats().frame_timeouts == 0
            await conn.close()

    run(scenario())


def test_frame_timeout_does_not_count_the_time_the_handler_takes() -> None:
    """A frame begun in the chunk that ended the previous one waits while that one is
    handled (an ack_after = "delivery" handler takes seconds): the sender is not late."""

    async def scenario() -> None:
        recorder = Recorder(delay=0.8)
        async with serving(recorder, frame_timeout=0.5) as server:
            conn = await RawConnection.open(port_of(server))
            second = message("SECOND-1")
            await conn.send_raw(START_BLOCK + message("FIRST-1") + b"\x1c\r" + START_BLOCK)
            await conn.send_raw(second[:10])
            await asyncio.sleep(1.0)  # 1.0 s after the second frame began, 0.2 s unhandled
            await conn.send_raw(second[10:] + b"\x1c\r")
            acks = [await conn.read(), await conn.read()]
            assert [parse_ack(a).acknowledged_id for a in acks if a] == ["FIRST-1", "SECOND-1"]
            assert server.stats().frame_timeouts == 0
            await conn.close()

    run(scenario())


def test_frame_timeout_zero_means_no_limit() -> None:
    async def scenario() -> None:
        async with serving(Recorder(), idle_timeout=1.0, frame_timeout=0) as server:
            conn = await RawConnection.open(port_of(server))
            payload = message("NOLIMIT-1")
            await conn.send_raw(START_BLOCK)
            for piece in range(0, 12):
                await conn.send_raw(payload[piece : piece + 1])
                await asyncio.sleep(0.1)
            await conn.send_raw(payload[12:] + b"\x1c\r")
            ack = await conn.read()
            assert ack is not None and parse_ack(ack).code == "AA"
            await conn.close()

    run(scenario())


# -- max_unfinished_bytes ---------------------------------------------------------------------
def _padded(control_id: str, size: int) -> bytes:
    """A message of about ``size`` bytes (a long NTE)."""
    head = message(control_id)
    return head + b"NTE|1||" + b"x" * (size - len(head) - 8) + b"\r"


def test_unfinished_frames_of_all_connections_are_held_within_max_unfinished_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(
            recorder,
            [listener("a"), listener("b")],
            max_frame_bytes=200_000,
            max_unfinished_bytes=300_000,
        ) as server:
            first = _padded("BIG-1", 180_000)
            a = await RawConnection.open(port_of(server, "a"))
            await a.send_raw(START_BLOCK + first[:-10])
            await _eventually(lambda: server.unfinished_bytes == len(first) - 10)
            # Another listener's connection: the budget is the whole server's.
            b = await RawConnection.open(port_of(server, "b"))
            await b.send_raw(START_BLOCK + _padded("BIG-2", 180_000)[:-10])
            assert await b.closed_by_server(timeout=5)
            stats = server.stats("b")
            assert stats.unfinished_bytes_refusals == 1 and stats.frames == 0
            assert server.unfinished_bytes == len(first) - 10  # b's share given back
            # Small frames still go through (under the budget)...
            c = await RawConnection.open(port_of(server, "b"))
            await _acked(c, "SMALL-1")
            # ...the first frame ends normally, and its memory is given back.
            await a.send_raw(first[-10:] + b"\x1c\r")
            ack = await a.read()
            assert ack is not None and parse_ack(ack).acknowledged_id == "BIG-1"
            assert server.unfinished_bytes == 0
            # Once it is, b's frame fits: its sender sends it again.
            await b.close()
            b = await RawConnection.open(port_of(server, "b"))
            ack = await b.exchange(_padded("BIG-2", 180_000))
            assert ack is not None and parse_ack(ack).acknowledged_id == "BIG-2"
            # Connections ending inside a frame give their share back too.
            await a.send_raw(START_BLOCK + b"x" * 50_000)
            await _eventually(lambda: server.unfinished_bytes == 50_000)
            await a.close()
            await _eventually(lambda: server.unfinished_bytes == 0)
            for conn in (b, c):
                await conn.close()
        assert [p[:30] for p in recorder.payloads] == [
            message("SMALL-1")[:30],
            first[:30],
            _padded("BIG-2", 180_000)[:30],
        ]

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        run(scenario())
    (warning,) = [
        r.getMessage() for r in caplog.records if "max_unfinished_bytes" in r.getMessage()
    ]
    assert "b from 127.0.0.1:" in warning
    assert "over the maximum of 300000 (mllp.max_unfinished_bytes)" in warning


def test_an_oversized_frame_holds_only_its_head_against_the_budget() -> None:
    """Past max_frame_bytes a frame is not held (only its first 64 KiB): a 1 MB frame on
    a 200 kB limit goes through a 250 kB budget, to be answered like any oversized one."""

    async def scenario() -> None:
        seen: list[int] = []

        async def on_oversized(oversized: OversizedFrame, peer: PeerInfo) -> bytes:
            seen.append(oversized.size)
            return b"MSH|^~\\&|REFUSED"

        async with serving(
            Recorder(),
            max_frame_bytes=200_000,
            max_unfinished_bytes=250_000,
            on_oversized=on_oversized,
        ) as server:
            conn = await RawConnection.open(port_of(server))
            huge = _padded("HUGE-1", 1_000_000)
            assert await conn.exchange(huge) == b"MSH|^~\\&|REFUSED"
            assert seen == [len(huge)]
            assert server.stats().unfinished_bytes_refusals == 0
            assert server.unfinished_bytes == 0
            await _acked(conn, "AFTER-1")
            await conn.close()

    run(scenario())


# -- a frame ended by FS alone ------------------------------------------------------------------
@pytest.mark.parametrize("ending", ["frame_timeout", "idle_timeout", "peer closes"])
def test_a_frame_left_on_an_fs_without_cr_is_named_in_the_warning(
    caplog: pytest.LogCaptureFixture, ending: str
) -> None:
    """A sender ending its frames with FS alone never gets an ACK: the frame is cut by
    frame_timeout, idle_timeout (frame_timeout 0) or the sender's own close. The WARNING
    said "frame not complete" (or nothing at all, on an idle timeout), never why."""

    async def scenario() -> None:
        limits = {
            "frame_timeout": {"frame_timeout": 0.5, "idle_timeout": 5.0},
            "idle_timeout": {"frame_timeout": 0, "idle_timeout": 0.5},
            "peer closes": {"frame_timeout": 5.0, "idle_timeout": 5.0},
        }[ending]
        recorder = Recorder()
        async with serving(recorder, **limits) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(START_BLOCK + message("FS-ONLY-1") + b"\x1c")
            if ending == "peer closes":
                await asyncio.sleep(0.2)
                await conn.close()
                await _eventually(lambda: server.open_connections == 0)
            else:
                assert await conn.closed_by_server(timeout=3)
            assert recorder.payloads == []

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        run(scenario())
    (warning,) = [r.getMessage() for r in caplog.records if "no CR" in r.getMessage()]
    assert "FS (0x1C) and no CR" in warning and "FS CR, 0x1C 0x0D" in warning
    assert "closing without ACK" in warning or "no ACK sent" in warning
    assert "Zyxwvut" not in warning and "FS-ONLY-1" not in warning


def test_a_frame_cut_short_elsewhere_gets_no_fs_hint(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(Recorder(), frame_timeout=0.5, idle_timeout=5.0) as server:
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(START_BLOCK + message("HALF-1")[:30])
            assert await conn.closed_by_server(timeout=3)

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "frame_timeout" in r.getMessage()]
    assert len(warnings) == 1 and "no CR" not in warnings[0]
