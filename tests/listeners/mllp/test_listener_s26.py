"""Session 26: the MLLP listener as an interface engine sees it, on real sockets.

Line ends or blanks after a frame's end block (``FS CR LF``: some senders end every
frame so) were a WARNING ``dropped 1 byte(s) outside MLLP frames`` once per connection:
for a sender opening a connection per message, one WARNING per message, drowning the
ones that matter. They are harmless, like the blanks and NULs a keep-alive holds: logged
at DEBUG (still counted in ``dropped_bytes``). Other bytes outside frames (a sender that
does not frame its messages, junk before the start block) are still a WARNING, once per
connection.
"""

from __future__ import annotations

import logging

import pytest

from listeners.mllp import frame, parse_ack

from ._support import RawConnection, Recorder, message, port_of, run, serving

LOGGER = "listeners.mllp.server"


def dropped_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno >= logging.WARNING and "outside MLLP" in r.getMessage()
    ]


@pytest.mark.parametrize("trailer", [b"\n", b"\r\n", b" \r\n\x00"])
def test_line_ends_after_each_frame_draw_no_warning(
    caplog: pytest.LogCaptureFixture, trailer: bytes
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def scenario() -> None:
        async with serving(Recorder()) as server:
            port = port_of(server)
            for n in range(3):  # a connection per message, as many engines send
                conn = await RawConnection.open(port)
                await conn.send_raw(frame(message(f"LF-{n}")) + trailer)
                ack = await conn.read()
                assert ack is not None and parse_ack(ack).acknowledged_id == f"LF-{n}"
                await conn.close()
            # On one connection too: the line end before the next start block.
            conn = await RawConnection.open(port)
            for n in range(3):
                await conn.send_raw(trailer + frame(message(f"KEEP-{n}")))
                ack = await conn.read()
                assert ack is not None and parse_ack(ack).acknowledged_id == f"KEEP-{n}"
            await conn.close()
            assert server.stats().dropped_bytes == 6 * len(trailer)

    run(scenario())
    assert dropped_warnings(caplog) == []
    assert any("line ends or blanks" in r.getMessage() for r in caplog.records if r.name == LOGGER)


def test_other_bytes_outside_frames_are_still_a_warning_once_per_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def scenario() -> None:
        async with serving(Recorder()) as server:
            conn = await RawConnection.open(port_of(server))
            # A line end first (not worth a warning), then a message sent unframed, then
            # the framed ones with junk between them.
            await conn.send_raw(b"\r\n" + frame(message("F-0")))
            assert parse_ack(await conn.read() or b"").acknowledged_id == "F-0"
            await conn.send_raw(message("UNFRAMED") + frame(message("F-1")))
            assert parse_ack(await conn.read() or b"").acknowledged_id == "F-1"
            await conn.send_raw(b"junk" + frame(message("F-2")))
            assert parse_ack(await conn.read() or b"").acknowledged_id == "F-2"
            await conn.close()

    run(scenario())
    warnings = dropped_warnings(caplog)
    assert len(warnings) == 1, warnings
    # About the unframed message, not the line end that came first.
    dropped = int(warnings[0].split("dropped ")[1].split(" ")[0])
    assert dropped >= len(message("UNFRAMED")), warnings[0]
    assert "UNFRAMED" not in warnings[0]
