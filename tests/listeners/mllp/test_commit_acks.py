"""MLLP release 2 commit acknowledgements sent to the listener are not answered."""

from __future__ import annotations

import logging

import pytest

from listeners.mllp import parse_ack
from listeners.mllp.framing import frame

from ._support import RawConnection, Recorder, message, port_of, run, serving


def test_commit_acknowledgements_are_not_answered_as_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A release 2 peer commits our ACK with VT 0x06 FS CR. Handed to the handler, it drew
    an AR (no MSH: error 100, empty MSA-2), which the peer read as the ACK of its next
    message, and committed in turn."""

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            conn = await RawConnection.open(port_of(server))
            first = await conn.exchange(message("R2-1"))
            assert first is not None and parse_ack(first).acknowledged_id == "R2-1"
            # The commit of that ACK, then a NAK, then the next message: the next frame
            # read is that message's ACK.
            await conn.send_raw(frame(b"\x06") + frame(b"\x15"))
            second = await conn.exchange(message("R2-2"))
            assert second is not None
            info = parse_ack(second)
            assert (info.code, info.acknowledged_id) == ("AA", "R2-2")
            assert recorder.payloads == [message("R2-1"), message("R2-2")]
            stats = server.stats()
            assert (stats.commit_acks, stats.frames, stats.acks_sent) == (2, 2, 2)
            await conn.close()

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        run(scenario())
    (warning,) = [r.getMessage() for r in caplog.records if "commit" in r.getMessage()]
    assert "NAK" in warning and "not answered" in warning
