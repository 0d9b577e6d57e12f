"""MLLP framing: the sans-I/O decoder and the stream reader."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from listeners.mllp.framing import (
    DEFAULT_HEAD_BYTES,
    CommitAck,
    FrameDecoder,
    FrameReader,
    FrameTooLargeError,
    IncompleteFrameError,
    OversizedFrame,
    commit_ack,
    frame,
)

from ._support import RawConnection, Recorder, message, port_of, run, serving

# Any payload holding neither a start block (which would restart the frame) nor the end
# block.
payloads = (
    st.binary(max_size=300)
    .map(lambda p: p.replace(b"\x0b", b""))
    .filter(lambda p: b"\x1c\r" not in p)
)
garbage = st.binary(max_size=50).filter(lambda g: b"\x0b" not in g)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def decode_all(
    chunks: list[bytes], max_frame_bytes: int = 10_000, head_bytes: int = DEFAULT_HEAD_BYTES
) -> tuple[list[bytes | OversizedFrame], int]:
    decoder = FrameDecoder(max_frame_bytes, head_bytes=head_bytes)
    frames: list[bytes | OversizedFrame] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
        assert decoder.buffered <= max_frame_bytes + 1
    return frames, decoder.dropped_bytes


def oversized(payload: bytes, limit: int, head_bytes: int = DEFAULT_HEAD_BYTES) -> OversizedFrame:
    """What the decoder emits for ``payload`` over ``limit``."""
    return OversizedFrame(payload[: min(head_bytes, limit)], len(payload), limit)


def test_frame_wraps_payload() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\r"


def test_one_frame() -> None:
    assert decode_all([frame(b"MSH|^~\\&|A\rPID|1\r")]) == ([b"MSH|^~\\&|A\rPID|1\r"], 0)


def test_bytes_outside_frames_are_dropped_and_counted() -> None:
    frames, dropped = decode_all([b"\r\nnoise" + frame(b"A") + b"\n" + frame(b"B") + b"xx"])
    assert frames == [b"A", b"B"]
    assert dropped == len(b"\r\nnoise") + 1 + 2


def test_end_block_split_across_reads() -> None:
    assert decode_all([b"\x0bABC\x1c", b"\r\x0bD\x1c", b"\r"])[0] == [b"ABC", b"D"]
    assert decode_all([b"\x0b\x1c", b"\r"])[0] == [b""]


def test_fs_without_cr_is_payload() -> None:
    assert decode_all([b"\x0bA\x1cB\x1cC\x1c\x1c\r"])[0] == [b"A\x1cB\x1cC\x1c"]


def test_vt_inside_a_frame_starts_a_new_frame_and_the_unfinished_one_is_counted() -> None:
    # A sender that gave up mid-frame and re-sent on the same connection: the remains of
    # the first attempt used to be glued to the second into one frame (AA, dead letter).
    decoder = FrameDecoder(100)
    assert decoder.feed(b"\x0bMSH|PART") == []
    assert decoder.feed(frame(b"MSH|FULL")) == [b"MSH|FULL"]
    assert (decoder.abandoned_frames, decoder.abandoned_bytes) == (1, len(b"MSH|PART"))
    # Several restarts in one chunk; an FS not followed by CR belongs to the dropped part.
    assert decoder.feed(b"\x0bAB\x0b\x0bCD\x1c\x0bEF\x1c\r") == [b"EF"]
    assert (decoder.abandoned_frames, decoder.abandoned_bytes) == (4, 8 + 2 + 0 + 3)
    assert decoder.dropped_bytes == 0
    # An FS at the end of one read and a VT at the start of the next: FS was payload.
    assert decoder.feed(b"\x0bXY\x1c") == []
    assert decoder.feed(b"\x0bZ\x1c\r") == [b"Z"]
    assert (decoder.abandoned_frames, decoder.abandoned_bytes) == (5, 16)
    assert not decoder.in_frame


def test_an_abandoned_frame_is_not_held_in_memory_nor_counted_against_the_limit() -> None:
    decoder = FrameDecoder(10)
    assert decoder.feed(b"\x0b" + b"x" * 50 + frame(b"ok") + b"\x0b" + b"y" * 9) == [b"ok"]
    assert decoder.buffered == 9
    assert decoder.abandoned_bytes == 50


def test_frame_of_exactly_the_maximum_is_accepted() -> None:
    assert decode_all([frame(b"x" * 100)], max_frame_bytes=100)[0] == [b"x" * 100]
    # The trailing FS of a maximal frame may arrive before its CR.
    assert decode_all([b"\x0b" + b"x" * 100 + b"\x1c", b"\r"], max_frame_bytes=100)[0] == [
        b"x" * 100
    ]


def test_oversized_frame_is_reported_by_its_head_and_the_stream_goes_on() -> None:
    decoder = FrameDecoder(100, head_bytes=10)
    big = b"MSH|^~\\&|" + b"x" * 200
    items = decoder.feed(frame(big) + b"junk" + frame(b"next"))
    assert items == [OversizedFrame(big[:10], len(big), 100), b"next"]
    assert (decoder.oversized_frames, decoder.dropped_bytes, decoder.abandoned_frames) == (1, 4, 0)
    assert decoder.buffered == 0 and not decoder.in_frame
    # The decoder is as good as new: more frames, and more oversized ones.
    assert decoder.feed(frame(b"y" * 101) + frame(b"ok")) == [oversized(b"y" * 101, 100, 10), b"ok"]
    assert decoder.oversized_frames == 2


def test_the_head_is_64_kib_or_max_frame_bytes_when_smaller() -> None:
    big = bytes(range(256)).replace(b"\x0b", b"") * 1000  # 255,000 bytes, no VT, no FS CR
    assert decode_all([frame(big)], max_frame_bytes=200_000) == (
        [OversizedFrame(big[: 64 * 1024], len(big), 200_000)],
        0,
    )
    assert decode_all([frame(big)], max_frame_bytes=1000) == (
        [OversizedFrame(big[:1000], len(big), 1000)],
        0,
    )


def test_a_huge_frame_fed_in_chunks_never_holds_more_than_the_bound() -> None:
    # 64 MiB in 64 KiB reads, against a 1 MiB limit: memory stays under the limit while
    # the frame may still fit, then at the head (64 KiB) once it is known to be too big.
    limit, chunk = 1024 * 1024, b"z" * (64 * 1024)
    decoder = FrameDecoder(limit)
    assert decoder.feed(b"\x0bMSH|^~\\&|HEAD") == []
    most = 0
    for i in range(1024):
        assert decoder.feed(chunk) == []
        most = max(most, decoder.buffered)
        assert decoder.buffered <= limit + 1
        if i > 16:  # past the limit
            assert decoder.buffered == DEFAULT_HEAD_BYTES
    assert most <= limit
    size = len(b"MSH|^~\\&|HEAD") + 1024 * len(chunk)
    assert decoder.frame_bytes == size
    (item,) = decoder.feed(b"\x1c\r")
    assert isinstance(item, OversizedFrame)
    assert item.head.startswith(b"MSH|^~\\&|HEAD") and len(item.head) == DEFAULT_HEAD_BYTES
    assert (item.size, item.limit) == (size, limit)
    assert decoder.buffered == 0 and decoder.frame_bytes == 0


def test_the_end_block_of_an_oversized_frame_may_straddle_reads() -> None:
    decoder = FrameDecoder(10, head_bytes=4)
    assert decoder.feed(b"\x0b" + b"a" * 30 + b"\x1c") == []
    assert decoder.buffered == 4
    assert decoder.feed(b"\r\x0bok\x1c") == [OversizedFrame(b"aaaa", 30, 10)]
    assert decoder.feed(b"\r") == [b"ok"]
    # An FS that is not followed by CR is payload, in an oversized frame too.
    assert decoder.feed(b"\x0b" + b"b" * 20 + b"\x1c") == []
    assert decoder.feed(b"b\x1c\x1c\r") == [OversizedFrame(b"bbbb", 23, 10)]
    # Exactly the limit, its FS arriving in one read and its CR in the next: not oversized.
    assert decoder.feed(b"\x0b" + b"c" * 10 + b"\x1c") == []
    assert decoder.feed(b"\r") == [b"c" * 10]


def test_a_vt_inside_an_oversized_frame_abandons_it() -> None:
    # The sender gave up on the big frame and started again: no answer is owed for it.
    decoder = FrameDecoder(10, head_bytes=4)
    assert decoder.feed(b"\x0b" + b"a" * 50) == []
    assert decoder.feed(b"a" * 50 + b"\x0b" + b"MSH|new" + b"\x1c\r") == [b"MSH|new"]
    assert (decoder.abandoned_frames, decoder.abandoned_bytes) == (1, 100)
    assert decoder.oversized_frames == 0
    # Restarted by an oversized frame; in one read.
    assert decoder.feed(b"\x0b" + b"b" * 40 + b"\x0b" + b"c" * 40 + b"\x1c\r") == [
        OversizedFrame(b"cccc", 40, 10)
    ]
    assert (decoder.abandoned_frames, decoder.abandoned_bytes) == (2, 140)


def test_an_oversized_frame_without_end_block_stays_bounded() -> None:
    decoder = FrameDecoder(1000)
    decoder.feed(b"\x0b")
    for _ in range(100):
        assert decoder.feed(b"y" * 64) == []
        assert decoder.buffered <= 1000
    assert decoder.in_frame and decoder.frame_bytes == 6400 and decoder.buffered == 1000


def test_commit_acknowledgement_blocks() -> None:
    frames, _ = decode_all([b"\x0b\x06\x1c\r\x0b\x15\x1c\r"])
    assert [commit_ack(f) for f in frames] == [CommitAck.ACK, CommitAck.NAK]
    assert commit_ack(b"MSH|^~\\&") is None


@given(
    st.lists(st.tuples(garbage, payloads), min_size=1, max_size=6),
    garbage,
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_any_split_of_any_stream_yields_the_frames(
    items: list[tuple[bytes, bytes]], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(g + frame(p) for g, p in items) + tail
    frames, dropped = decode_all(split(stream, cuts))
    assert frames == [p for _, p in items]
    assert dropped == sum(len(g) for g, _ in items) + len(tail)


@given(
    st.lists(st.tuples(garbage, payloads, st.booleans()), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_unfinished_frames_are_dropped_whatever_the_split(
    items: list[tuple[bytes, bytes, bool]], cuts: list[int]
) -> None:
    # Each item: garbage, then VT + payload, then FS CR only when ``complete``. Garbage
    # after an unfinished frame is inside it, so it is abandoned with it (and must not
    # complete it).
    for (_, p, complete), (g, _, _) in itertools.pairwise(items):
        assume(complete or b"\x1c\r" not in p + g)
    stream = b"".join(
        g + b"\x0b" + p + (b"\x1c\r" if complete else b"") for g, p, complete in items
    )
    decoder = FrameDecoder(10_000)
    frames = [f for chunk in split(stream, cuts) for f in decoder.feed(chunk)]
    assert frames == [p for _, p, complete in items if complete]
    abandoned = [
        (p, items[i + 1][0]) for i, (_, p, complete) in enumerate(items[:-1]) if not complete
    ]
    assert decoder.abandoned_frames == len(abandoned)
    assert decoder.abandoned_bytes == sum(len(p) + len(g) for p, g in abandoned)
    assert decoder.dropped_bytes == sum(
        len(g) for i, (g, _, _) in enumerate(items) if i == 0 or items[i - 1][2]
    )
    assert decoder.in_frame is not items[-1][2]


@given(
    payloads,
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=400),
    st.lists(st.integers(), max_size=8),
)
def test_oversize_is_reported_whatever_the_split(
    payload: bytes, limit: int, head_bytes: int, cuts: list[int]
) -> None:
    # The next frame always comes out too: the stream stays in sync.
    chunks = split(frame(payload) + frame(b"next"), cuts)
    expected = [
        p if len(p) <= limit else oversized(p, limit, head_bytes) for p in (payload, b"next")
    ]
    assert decode_all(chunks, limit, head_bytes)[0] == expected


@given(
    st.lists(st.tuples(garbage, payloads), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=200),
    st.integers(min_value=1, max_value=100),
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_any_split_of_any_stream_with_any_limit(
    items: list[tuple[bytes, bytes]], limit: int, head_bytes: int, cuts: list[int]
) -> None:
    stream = b"".join(g + frame(p) for g, p in items)
    decoder = FrameDecoder(limit, head_bytes=head_bytes)
    out: list[bytes | OversizedFrame] = []
    for chunk in split(stream, cuts):
        out += decoder.feed(chunk)
        # Bounded whatever the frame sizes: a frame that may still fit, or a head.
        assert decoder.buffered <= limit + 1
    assert out == [p if len(p) <= limit else oversized(p, limit, head_bytes) for _, p in items]
    assert decoder.oversized_frames == sum(len(p) > limit for _, p in items)
    assert decoder.dropped_bytes == sum(len(g) for g, _ in items)


async def read_all(chunks: list[bytes], *, eof: bool = True) -> list[bytes | None]:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    frames = FrameReader(reader, chunk_size=7)
    out: list[bytes | None] = []
    while True:
        item = await frames.read_frame()
        out.append(item)
        if item is None:
            return out


@settings(max_examples=50)
@given(st.lists(st.tuples(garbage, payloads), max_size=5), st.lists(st.integers(), max_size=10))
def test_stream_reader_yields_frames_then_none(
    items: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(g + frame(p) for g, p in items)
    assert run(read_all(split(stream, cuts))) == [*(p for _, p in items), None]


def test_stream_ending_inside_a_frame_raises() -> None:
    with pytest.raises(IncompleteFrameError):
        run(read_all([frame(b"A"), b"\x0bMSH|trunc"]))


def test_stream_ending_inside_an_oversized_frame_raises_with_its_size() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x0b" + b"x" * 500)
        reader.feed_eof()
        with pytest.raises(IncompleteFrameError, match="after 500 bytes"):
            await FrameReader(reader, max_frame_bytes=100).read_item()

    run(scenario())


def test_stream_reader_items_and_frames() -> None:
    """read_item yields oversized frames; read_frame (the client's, for ACKs) raises for
    them, and the next call reads the next frame."""

    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data((frame(b"a" * 50) + frame(b"ok")) * 2)
        reader.feed_eof()
        frames = FrameReader(reader, max_frame_bytes=20, head_bytes=5)
        assert await frames.read_item() == OversizedFrame(b"aaaaa", 50, 20)
        assert await frames.read_item() == b"ok"
        with pytest.raises(FrameTooLargeError, match="frame of 50 bytes exceeds the maximum of 20"):
            await frames.read_frame()
        assert await frames.read_frame() == b"ok"
        assert await frames.read_frame() is None
        assert frames.oversized_frames == 2

    run(scenario())


def test_stream_reader_counts_bytes() -> None:
    async def scenario() -> tuple[int, int]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"junk" + frame(b"ABC"))
        reader.feed_eof()
        frames = FrameReader(reader)
        assert await frames.read_frame() == b"ABC"
        assert await frames.read_frame() is None
        return frames.bytes_read, frames.dropped_bytes

    assert run(scenario()) == (4 + 6, 4)


def test_stream_reader_reports_abandoned_frames_once() -> None:
    async def scenario() -> list[tuple[int, int]]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x0bpartial" + frame(b"A") + frame(b"B") + b"\x0bxx\x0b" + frame(b"C"))
        reader.feed_eof()
        frames = FrameReader(reader)
        seen: list[tuple[int, int]] = []
        for expected in (b"A", b"B", b"C"):
            assert await frames.read_frame() == expected
            seen.append(frames.take_abandoned())
        assert (frames.abandoned_frames, frames.abandoned_bytes) == (3, 7 + 2 + 0)
        return seen

    # One chunk holds everything: the three frames are reported with the first read.
    assert run(scenario()) == [(3, 9), (0, 0), (0, 0)]


def test_idle_timeout_applies_to_each_wait() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        frames = FrameReader(reader)

        async def dribble() -> None:
            for byte in frame(b"slow"):
                await asyncio.sleep(0.05)
                reader.feed_data(bytes([byte]))

        feeder = asyncio.create_task(dribble())
        # 8 bytes over ~0.4 s with a 0.3 s idle timeout: active, so not cut off.
        assert await frames.read_frame(idle_timeout=0.3) == b"slow"
        await feeder
        with pytest.raises(TimeoutError):
            await frames.read_frame(idle_timeout=0.1)

    run(scenario())


# Over real sockets: what the server's handler sees, and the ACK the sender gets.


def test_a_resend_after_an_unfinished_frame_is_acked_and_handled_alone() -> None:
    first, other = message("RSC-1"), message("RSB-2")
    cut = first.index(b"\rPID") + 10

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            conn = await RawConnection.open(port_of(server))
            # Gave up mid-message, then re-sent it whole on the same connection.
            await conn.send_raw(b"\x0b" + first[:cut])
            await asyncio.sleep(0.05)  # a separate read on the server's side
            ack = await conn.exchange(first)
            assert ack is not None and b"MSA|AA|RSC-1\r" in ack
            # Gave up on one message, then sent another one.
            await conn.send_raw(b"\x0b" + first[:cut])
            ack = await conn.exchange(other)
            assert ack is not None and b"MSA|AA|RSB-2\r" in ack
            await conn.close()
        # Each message reached the handler alone, never glued to the remains of another.
        assert recorder.payloads == [first, other]

    run(scenario())
