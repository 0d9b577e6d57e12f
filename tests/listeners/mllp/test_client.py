"""``passerelle send`` (run_send), MllpClient, and python-hl7's mllp_send as a peer."""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from listeners.mllp import (
    AckOutcome,
    CommitNakError,
    ConnectionClosedError,
    MllpClient,
    PeerInfo,
    add_send_command,
    frame,
    parse_ack,
    read_header,
    run_send,
)
from listeners.mllp.framing import FrameReader, FrameTooLargeError
from tests.support.certs import Pki

from ._support import Recorder, listener, message, port_of, run, serving


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="passerelle")
    add_send_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["send", *argv])


async def send(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``passerelle send`` in a worker thread (it runs its own event loop)."""
    out, err = io.StringIO(), io.StringIO()
    args = parse(argv)
    assert args.handler is run_send
    code = await asyncio.to_thread(run_send, args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write(path: Path, *messages: bytes, newline: bytes = b"\r") -> Path:
    path.write_bytes(b"".join(m.replace(b"\r", newline) for m in messages))
    return path


def test_send_files_and_print_acks(tmp_path: Path) -> None:
    one = write(tmp_path / "one.hl7", message("F1"), newline=b"\r\n")
    batch = tmp_path / "batch.hl7"
    batch.write_bytes(
        b"\xef\xbb\xbfFHS|^~\\&\nBHS|^~\\&\n"
        + message("F2").replace(b"\r", b"\n")
        + message("F3").replace(b"\r", b"\n")
        + b"BTS|2\nFTS|1\n"
    )

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            code, out, err = await send(
                [str(one), str(batch), "--port", str(port_of(server)), "--host", "127.0.0.1"]
            )
            assert code == 0, err
            assert [read_header(p).control_id for p in recorder.payloads] == ["F1", "F2", "F3"]
            assert all(b"\n" not in p for p in recorder.payloads)
            assert "MSA|AA|F1" in out.splitlines()
            assert "MSA|AA|F3" in out.splitlines()
            assert "3 message(s) sent" in err and "AA 3" in err and "0 not accepted" in err
            assert server.stats().connections_total == 1

    run(scenario())


def test_send_exits_1_on_error_acks(tmp_path: Path) -> None:
    path = write(tmp_path / "m.hl7", message("OK"), message("BAD"), message("OK2"))

    def outcome(payload: bytes) -> AckOutcome:
        if read_header(payload).control_id == "BAD":
            return AckOutcome.error("207", "could not store")
        return AckOutcome.accept()

    async def scenario() -> None:
        async with serving(Recorder(outcome=outcome)) as server:
            code, out, err = await send([str(path), "--port", str(port_of(server))])
            assert code == 1
            assert "MSA|AE|BAD" in out
            assert "ERR|||207^Application internal error^HL70357|E||||could not store" in out
            assert "AA 2, AE 1" in err

    run(scenario())


def test_send_exits_1_on_timeout_and_reconnects(tmp_path: Path) -> None:
    path = write(tmp_path / "m.hl7", message("SLOW"), message("FAST"))

    async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
        if read_header(payload).control_id == "SLOW":
            await asyncio.sleep(3)
        return Recorder().builder.build(payload)

    async def scenario() -> None:
        async with serving(handler) as server:
            code, out, err = await send(
                [str(path), "--port", str(port_of(server)), "--timeout", "0.5"]
            )
            assert code == 1
            assert "no ACK within 0.5s" in err
            assert "MSA|AA|FAST" in out
            assert server.stats().connections_total == 2

    run(scenario())


def test_send_exits_1_when_the_server_closes_without_ack(tmp_path: Path) -> None:
    path = write(tmp_path / "m.hl7", message("LOST"))

    async def scenario() -> None:
        async with serving(Recorder(outcome=lambda p: None)) as server:
            code, _, err = await send([str(path), "--port", str(port_of(server))])
            assert code == 1
            assert "no ACK" in err

    run(scenario())


def test_send_exits_1_when_nobody_listens(tmp_path: Path) -> None:
    path = write(tmp_path / "m.hl7", message("NOBODY"))

    async def scenario() -> None:
        async with serving(Recorder()) as server:
            port = port_of(server)
        code, _, err = await send([str(path), "--port", str(port), "--timeout", "2"])
        assert code == 1
        assert "no ACK" in err

    run(scenario())


def test_send_flags_a_mismatched_msa2(tmp_path: Path) -> None:
    path = write(tmp_path / "m.hl7", message("MINE"))

    async def liar(payload: bytes, peer: PeerInfo) -> bytes | None:
        return Recorder().builder.build(message("SOMEONE-ELSE"))

    async def scenario() -> None:
        async with serving(liar) as server:
            code, out, _ = await send([str(path), "--port", str(port_of(server))])
            assert code == 1
            assert "does not match MSH-10" in out

    run(scenario())


def test_send_prints_control_characters_of_acks_escaped(tmp_path: Path) -> None:
    # The ACK is the server's text, and echoes MSH-10: an ESC there must not reach the
    # operator's terminal as an escape sequence.
    path = write(tmp_path / "m.hl7", message("C\x1b[2J1"))

    async def scenario() -> None:
        async with serving(Recorder()) as server:
            code, out, err = await send([str(path), "--port", str(port_of(server))])
            assert code == 0, err
            assert "\x1b" not in out + err
            assert "MSA|AA|C\\X1B\\[2J1" in out.splitlines()
            assert "MSH-10 C\\x1b[2J1: AA" in out

    run(scenario())


def test_send_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "m.hl7", message("U"))
    not_hl7 = tmp_path / "x.txt"
    not_hl7.write_text("hello\n")
    cases = [
        [str(tmp_path / "missing.hl7")],
        [str(not_hl7)],
        [str(good), "--key", str(good)],
        [str(good), "--tls", "--ca", str(tmp_path / "nope.pem")],
        [str(good), "--port", "70000"],
        [str(good), "--timeout", "0"],
        [str(good), "--timeout", "nan"],  # once an immediate "timeout" per message
    ]
    for argv in cases:
        err = io.StringIO()
        assert run_send(parse(argv), stdout=io.StringIO(), stderr=err) == 2, argv
        assert err.getvalue().startswith("passerelle send: ")
    with pytest.raises(SystemExit) as exited:
        parse(["--port", "abc", str(good)])
    assert exited.value.code == 2


def test_send_over_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    from listeners.config import TlsConfig

    path = write(tmp_path / "m.hl7", message("T1"))
    config = TlsConfig(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca)

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, [listener(tls=config)]) as server:
            port = str(port_of(server))
            code, out, err = await send(
                [
                    str(path),
                    "--port",
                    port,
                    "--ca",
                    str(pki.ca),
                    "--cert",
                    str(pki.client_cert),
                    "--key",
                    str(pki.client_key),
                ]
            )
            assert code == 0, err
            assert "MSA|AA|T1" in out
            assert recorder.peers[0].tls_subject == "CN=lab-sender,OU=Lab,O=Passerelle Tests"
            code, _, err = await send([str(path), "--port", port, "--tls", "--ca", str(pki.ca)])
            assert code == 1

    run(scenario())


def test_client_understands_mllp2_commit_blocks() -> None:
    async def mllp2_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader(reader)
        while (payload := await frames.read_frame()) is not None:
            control_id = read_header(payload).control_id
            if control_id == "NAK":
                writer.write(b"\x0b\x15\x1c\r")
            else:
                writer.write(b"\x0b\x06\x1c\r")
                writer.write(frame(Recorder().builder.build(payload)))
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(mllp2_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with MllpClient("127.0.0.1", port, timeout=5) as client:
            ack = await client.send(message("C1"))
            assert parse_ack(ack).acknowledged_id == "C1"
            assert client.last_commit is not None
            with pytest.raises(CommitNakError):
                await client.send(message("NAK"))
            assert not client.connected
            assert parse_ack(await client.send(message("C2"))).code == "AA"  # reconnects
        final = MllpClient("127.0.0.1", port, timeout=5, commit_ack_is_final=True)
        assert await final.send(message("C3")) == b"\x06"
        await final.close()
        server.close()
        await server.wait_closed()

    run(scenario())


def test_client_reports_a_close_without_ack() -> None:
    async def scenario() -> None:
        async with serving(Recorder(outcome=lambda p: None)) as server:
            client = MllpClient("127.0.0.1", port_of(server), timeout=5)
            with pytest.raises(ConnectionClosedError):
                await client.send(message("GONE"))
            await client.close()

    run(scenario())


def test_an_oversized_ack_is_an_error_for_the_client() -> None:
    async def verbose(payload: bytes, peer: PeerInfo) -> bytes | None:
        ack = Recorder().builder.build(payload)
        return ack + b"NTE|1||" + b"x" * 500 + b"\r" if b"|BIG|" in payload else ack

    async def scenario() -> None:
        async with serving(verbose) as server:
            client = MllpClient("127.0.0.1", port_of(server), timeout=5, max_frame_bytes=200)
            with pytest.raises(FrameTooLargeError, match="exceeds the maximum of 200 bytes"):
                await client.send(message("BIG"))
            assert not client.connected  # a late reply must not be read as the next ACK
            assert parse_ack(await client.send(message("SMALL"))).acknowledged_id == "SMALL"
            await client.close()

    run(scenario())


def mllp_send_path() -> str:
    candidate = Path(sys.executable).with_name("mllp_send")
    found = str(candidate) if candidate.exists() else shutil.which("mllp_send")
    assert found, "python-hl7's mllp_send is part of the test dependencies"
    return found


@pytest.mark.parametrize("loose", [False, True])
def test_python_hl7_mllp_send_as_a_client(tmp_path: Path, loose: bool) -> None:
    ids = ["HL7-1", "HL7-2", "HL7-3"]
    path = tmp_path / "messages.hl7"
    if loose:
        write(path, *(message(i) for i in ids), newline=b"\r\n")
    else:
        path.write_bytes(b"".join(frame(message(i)) for i in ids))

    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            process = await asyncio.create_subprocess_exec(
                mllp_send_path(),
                "-p",
                str(port_of(server)),
                "-f",
                str(path),
                *(["--loose"] if loose else []),
                "127.0.0.1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            assert process.returncode == 0, err.decode()
            assert [read_header(p).control_id for p in recorder.payloads] == ids
            acks = [
                parse_ack(frame_.strip(b"\x0b\x1c\r\n"))
                for frame_ in out.split(b"\x1c\r\n")
                if frame_.strip()
            ]
            assert [(a.code, a.acknowledged_id) for a in acks] == [("AA", i) for i in ids]

    run(scenario())


def test_send_follows_msh15_and_does_not_wait_for_acks_that_never_come(tmp_path: Path) -> None:
    from listeners.mllp.ack import wants_accept_ack
    from listeners.mllp.handler import NO_REPLY

    recorder = Recorder()

    async def handler(payload: bytes, peer: PeerInfo) -> bytes | None:
        ack = await recorder(payload, peer)
        # A server honouring MSH-15: no accept ACK for NE, none on success for ER.
        return ack if wants_accept_ack(payload, success=True) else NO_REPLY

    never = write(tmp_path / "ne.hl7", message("NE1", accept_ack="NE"))
    on_error = write(tmp_path / "er.hl7", message("ER1", accept_ack="ER"))
    always = write(tmp_path / "al.hl7", message("AL1", accept_ack="AL"))

    async def scenario() -> None:
        async with serving(handler) as server:
            started = asyncio.get_running_loop().time()
            code, out, err = await send(
                [
                    str(never),
                    str(on_error),
                    str(always),
                    "--port",
                    str(port_of(server)),
                    "--host",
                    "127.0.0.1",
                    "--timeout",
                    "30",
                ]
            )
            elapsed = asyncio.get_running_loop().time() - started
            assert code == 0, err
            assert [read_header(p).control_id for p in recorder.payloads] == ["NE1", "ER1", "AL1"]
            assert "MSA|CA|AL1" in out.splitlines()
            assert "NE: no ACK" in err and "ER: no ACK" in err
            # Nowhere near the 30 s ACK timeout: NE is not waited for, ER only briefly.
            assert elapsed < 15, elapsed

    run(scenario())
