"""Session 26: ``passerelle send`` as an interface engineer uses it, on real sockets.

* A control id (MSH-10) with a non-ASCII character in a UTF-8 message (MSH-18
  ``UNICODE UTF-8``, or empty: the default) was compared, and printed, as its bytes
  read as Latin-1 (``CTRL-Ã©``), while the ACK's MSA-2 was read as UTF-8: a server
  echoing MSH-10 exactly was reported ``MSA-2 'CTRL-é' does not match MSH-10`` and
  the run exited 1.
* A server that acknowledges every message whatever MSH-15 says (Mirth's default, the
  notes say: its MSH-15 support is optional) answered a message sent with MSH-15 ``NE``
  too. ``passerelle send`` does not wait for such an ACK, so it read it as the ACK of
  the next message: ``MSA-2 'NE1' does not match MSH-10``, exit 1, and every later ACK
  one message late. An ACK naming a message sent with ``NE`` earlier on the connection
  is now passed over, and counted in the summary (``NE: acknowledged anyway``).
* Every segment ends with a carriage return (HL7 v2 §2.5.3), the last one included;
  the messages split from a file went out without the last one (``…|PID|1<FS><CR>``),
  which some receivers do not take for a complete message.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from listeners.mllp import run_send
from tests.listeners.service.support import make_config, running

from ._support import Recorder, message, port_of, run, serving
from .test_client import parse


async def send(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``passerelle send`` in a worker thread (it runs its own event loop)."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(run_send, parse(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("charset", "encoding"),
    [("UNICODE UTF-8", "utf-8"), ("", "utf-8"), ("8859/1", "latin-1")],
)
def test_a_non_ascii_control_id_echoed_by_the_server_matches(
    tmp_path: Path, charset: str, encoding: str
) -> None:
    body = message("CTRLX", charset=charset).replace(b"CTRLX", "CTRL-é".encode(encoding))
    path = tmp_path / "m.hl7"
    path.write_bytes(body)

    async def scenario() -> None:
        recorder = Recorder()  # echoes MSH-10 in MSA-2, byte for byte
        async with serving(recorder) as server:
            code, out, err = await send([str(path), "--port", str(port_of(server))])
            assert [p.split(b"|")[9] for p in recorder.payloads] == ["CTRL-é".encode(encoding)]
            assert code == 0, out + err
            assert "does not match" not in out + err
            assert "# m.hl7 MSH-10 CTRL-é: AA in" in out.replace(str(tmp_path) + "/", "")

    run(scenario())


def test_a_server_echoing_another_non_ascii_control_id_is_still_flagged(tmp_path: Path) -> None:
    path = tmp_path / "m.hl7"
    path.write_bytes(message("CTRLX", charset="UNICODE UTF-8").replace(b"CTRLX", "CTRL-é".encode()))

    async def scenario() -> None:
        async def liar(payload: bytes, _peer: object) -> bytes:
            other = payload.replace("CTRL-é".encode(), "CTRL-è".encode())
            return Recorder().builder.build(other)

        async with serving(liar) as server:
            code, out, _ = await send([str(path), "--port", str(port_of(server))])
            assert code == 1
            assert "MSA-2 'CTRL-è' does not match MSH-10" in out

    run(scenario())


@pytest.mark.parametrize("newline", [b"\r", b"\n", b"\r\n"])
def test_every_segment_of_a_sent_message_ends_with_cr(tmp_path: Path, newline: bytes) -> None:
    first, second = message("SEG-1"), message("SEG-2")
    path = tmp_path / "feed.hl7"
    # The file's last line has no line end (an editor's choice), the others have one.
    path.write_bytes((first + second[:-1]).replace(b"\r", newline))

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            code, _, err = await send([str(path), "--port", str(port_of(server))])
            assert code == 0, err
            assert recorder.payloads == [first, second]

    run(scenario())


def test_an_ack_the_server_sends_for_an_ne_message_is_not_taken_for_the_next_ones(
    tmp_path: Path,
) -> None:
    # Recorder acknowledges every message, as a server ignoring MSH-15 does.
    path = tmp_path / "feed.hl7"
    path.write_bytes(
        message("NE-1", accept_ack="NE")
        + message("NE-2", accept_ack="NE")
        + message("AL-3", accept_ack="AL")
        + message("ORIG-4")
    )

    async def scenario() -> None:
        recorder = Recorder(delay=0.05)  # the ACKs of NE-1 and NE-2 come after AL-3 is sent
        async with serving(recorder) as server:
            code, out, err = await send([str(path), "--port", str(port_of(server))])
            assert [p.split(b"|")[9] for p in recorder.payloads] == [
                b"NE-1",
                b"NE-2",
                b"AL-3",
                b"ORIG-4",
            ]
            assert code == 0, out + err
            assert "does not match" not in out + err
            assert "MSH-10 AL-3: CA in" in out
            assert "MSH-10 ORIG-4: AA in" in out
            assert "NE: acknowledged anyway 2" in err
            assert server.stats().connections_total == 1

    run(scenario())


def test_the_service_acknowledging_a_utf8_control_id_is_not_reported_as_a_mismatch(
    tmp_path: Path,
) -> None:
    # The service itself, its ACK built by the listener from the received bytes.
    path = tmp_path / "m.hl7"
    path.write_bytes(
        message("CTRLX", charset="UNICODE UTF-8").replace(b"CTRLX", "ADT-Ü-1".encode())
    )
    with running(make_config(tmp_path / "service")) as service:
        code, out, err = run(send([str(path), "--port", str(service.mllp_port())]))
    assert code == 0, out + err
    assert "MSA|AA|ADT-Ü-1" in out.splitlines()
    assert "does not match" not in out + err
