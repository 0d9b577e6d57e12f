"""An MLLP client (:class:`MllpClient`) and ``passerelle send``.

``passerelle send FILE... --host H --port P [--tls --ca FILE --cert FILE --key FILE]
[--timeout S]`` splits the files into messages (batches, CRLF and BOMs handled), sends
them one at a time on one connection, prints each ACK and a summary. Exit status: 0 when
every message got AA/CA, 1 when any got AE/AR/CE/CR, no ACK or a mismatched MSA-2, 2 on
usage errors (nothing is sent then), 130 on Ctrl-C (after saying how far the run went).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TextIO

from converter.errors import ParseError
from converter.hl7v2.er7 import split_messages
from converter.printable import printable

from ..errors import ServiceError
from .ack import parse_ack, read_header
from .framing import (
    DEFAULT_MAX_FRAME_BYTES,
    CommitAck,
    FrameReader,
    commit_ack,
    frame,
    is_keepalive,
)
from .send_checks import acknowledged_id, acknowledges, control_id, decode_text, terminated
from .tls import client_ssl_context

__all__ = [
    "CommitNakError",
    "ConnectionClosedError",
    "MllpClient",
    "MllpClientError",
    "add_send_command",
    "run_send",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Ctrl-C: 128 + SIGINT, as ``passerelle convert``.
EXIT_INTERRUPTED = 130
#: Control ids of messages sent with MllpClient.send_only remembered per connection.
_UNANSWERED_MAX = 1024


class MllpClientError(ServiceError):
    """The exchange with the MLLP server failed."""


class ConnectionClosedError(MllpClientError):
    """The server closed the connection without acknowledging."""


class CommitNakError(MllpClientError):
    """The server answered with an MLLP release 2 commit NAK (not stored)."""


class MllpClient:
    """Sends framed messages and waits for each acknowledgement, one at a time.

    ``timeout`` bounds connecting and each wait for an ACK; after a timeout or a
    connection error the connection is closed (a late ACK must not be taken for the
    next message's) and the next :meth:`send` reconnects. Keep-alive blocks (empty, or
    only blanks, line ends and NUL bytes) are skipped. MLLP release 2 commit blocks
    are understood: a NAK raises :class:`CommitNakError`; an ACK is recorded in
    :attr:`last_commit` and, unless ``commit_ack_is_final``, the HL7 ACK is awaited.

    A server may acknowledge a message sent with :meth:`send_only` (MSH-15 NE) all the
    same (Mirth's MSH-15 support is optional): an ACK whose MSA-2 names such a message,
    sent earlier on the connection, is passed over by :meth:`send` and counted in
    :attr:`unsolicited_acks`. Taken for the next message's ACK, it put every later ACK
    one message late.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float | None = 30.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        commit_ack_is_final: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self.timeout = timeout
        self._max_frame_bytes = max_frame_bytes
        self._commit_final = commit_ack_is_final
        self._writer: asyncio.StreamWriter | None = None
        self._frames: FrameReader | None = None
        self.last_commit: CommitAck | None = None
        #: ACKs received for messages sent with :meth:`send_only`.
        self.unsolicited_acks = 0
        # Control ids (MSH-10's bytes) sent with send_only on this connection, oldest
        # first; bounded: such ACKs come at once, or never.
        self._unanswered: dict[bytes, None] = {}

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open the connection (TLS handshake included) within ``timeout``."""
        if self.connected:
            return
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=(self._server_hostname or self.host) if self._ssl else None,
                limit=256 * 1024,
            )
        self._writer = writer
        self._frames = FrameReader(reader, max_frame_bytes=self._max_frame_bytes)
        self._unanswered.clear()

    async def send_only(self, payload: bytes) -> None:
        """Send one message that asks for no acknowledgement (MSH-15 NE)."""
        await self.connect()
        assert self._writer is not None
        try:
            async with asyncio.timeout(self.timeout):
                self._writer.write(frame(payload))
                await self._writer.drain()
        except BaseException:
            await self.close()
            raise
        self._unanswered[control_id(payload)] = None
        if len(self._unanswered) > _UNANSWERED_MAX:
            del self._unanswered[next(iter(self._unanswered))]

    async def send(self, payload: bytes, *, timeout: float | None = None) -> bytes:
        """Send one message, return the ACK payload (connects first if needed).

        ``timeout`` overrides the client's own wait for this message.
        """
        await self.connect()
        assert self._writer is not None and self._frames is not None
        writer, frames = self._writer, self._frames
        self.last_commit = None
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                writer.write(frame(payload))
                await writer.drain()
                while True:
                    reply = await frames.read_frame()
                    if reply is None:
                        raise ConnectionClosedError(
                            "the server closed the connection without acknowledging"
                        )
                    if is_keepalive(reply):
                        # A server's keep-alive (an empty or padded block), not the ACK:
                        # taken for it, the ACK that follows answered the next message.
                        continue
                    kind = commit_ack(reply)
                    if kind is CommitAck.NAK:
                        raise CommitNakError("the server did not commit the message (NAK)")
                    if kind is CommitAck.ACK:
                        self.last_commit = kind
                        if self._commit_final:
                            return reply
                        continue
                    if self._unsolicited(reply, payload):
                        continue
                    return reply
        except BaseException:
            await self.close()
            raise

    def _unsolicited(self, reply: bytes, payload: bytes) -> bool:
        """Whether ``reply`` acknowledges a message sent with :meth:`send_only` earlier
        on this connection, not ``payload`` (then forgotten, and counted)."""
        if not self._unanswered:
            return False
        named = acknowledged_id(reply)
        if named is None or named not in self._unanswered or named == control_id(payload):
            return False
        del self._unanswered[named]
        self.unsolicited_acks += 1
        return True

    async def close(self) -> None:
        writer, self._writer, self._frames = self._writer, None, None
        self._unanswered.clear()
        if writer is None:
            return
        writer.close()
        try:
            async with asyncio.timeout(2.0):
                await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# -- passerelle send -------------------------------------------------------------------
def add_send_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``send`` on a parent parser (``handler=run_send`` in its defaults)."""
    send = subparsers.add_parser(
        "send",
        help="send HL7 v2 files to an MLLP server and print the ACKs",
        description="Send the messages of HL7 v2 files (batch files and folders too; '-' "
        "reads stdin) over MLLP, one at a time, printing each ACK. Exit status: 0 when "
        "every message got AA/CA, 1 otherwise, 2 on usage errors, 130 on Ctrl-C (after "
        "naming the message left waiting for its ACK).",
    )
    send.add_argument("paths", nargs="+", metavar="FILE")
    send.add_argument("--host", default="127.0.0.1", help="server (default 127.0.0.1)")
    send.add_argument("--port", type=int, default=2575, help="port (default 2575)")
    send.add_argument(
        "--tls", action="store_true", help="use TLS (implied by --ca, --cert and --key)"
    )
    send.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="CA certificates to verify the server (default: system store)",
    )
    send.add_argument("--cert", type=Path, metavar="FILE", help="client certificate (PEM)")
    send.add_argument("--key", type=Path, metavar="FILE", help="client private key (PEM)")
    send.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for connecting and for each ACK (default 30)",
    )
    send.add_argument(
        "--quiet",
        action="store_true",
        help="print only the summary and the messages not accepted (without their ACK)",
    )
    send.set_defaults(handler=run_send)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    label: str
    payload: bytes
    #: MSH-10 as text, read in the message's charset (MSH-18, else UTF-8).
    control_id: str
    #: MSH-10's bytes as sent: compared with MSA-2 in the ACK's own charset.
    control_id_bytes: bytes


class _UsageError(Exception):
    pass


def run_send(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run ``passerelle send``; returns the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        messages = list(_read_inputs(args.paths))
        context = _ssl_context(args)
        if not 0 < args.port < 65536:
            raise _UsageError(f"invalid port {args.port}")
        if args.timeout is not None and not args.timeout > 0:  # nan too
            raise _UsageError("--timeout must be positive")
    except _UsageError as exc:
        print(f"passerelle send: {exc}", file=err)
        return EXIT_USAGE
    client = MllpClient(args.host, args.port, ssl_context=context, timeout=args.timeout)
    progress = _Progress(total=len(messages))
    try:
        asyncio.run(_send_all(client, messages, progress, out, err, quiet=bool(args.quiet)))
    except KeyboardInterrupt:
        # Ctrl-C: say how far the run went, or the whole file is sent again and every
        # message the server already took arrives twice.
        print(f"interrupted after {progress.done} of {progress.total} messages", file=err)
        if progress.in_flight is not None:
            sent = progress.in_flight
            line = f"{sent.label} MSH-10 {sent.control_id}: sent, no ACK yet (it may be stored)"
            print(printable(line), file=err)
        _print_summary(progress, client, err)
        return EXIT_INTERRUPTED
    _print_summary(progress, client, err)
    return EXIT_OK if progress.failed == 0 else EXIT_FAILED


@dataclass(slots=True)
class _Progress:
    """What a run has done so far, kept outside its event loop: Ctrl-C cancels the loop,
    and the summary is still printed from it."""

    total: int
    done: int = 0
    #: Messages written to a connection (not those it could not be opened for).
    sent: int = 0
    failed: int = 0
    in_flight: _Outgoing | None = None
    codes: Counter[str] = field(default_factory=Counter)


#: How long to listen for an ACK that MSH-15 (ER, SU) says may not come.
_SILENCE_WAIT = 2.0


async def _send_all(
    client: MllpClient,
    messages: Sequence[_Outgoing],
    progress: _Progress,
    out: TextIO,
    err: TextIO,
    *,
    quiet: bool,
) -> None:
    try:
        for message in messages:
            await _send_one(client, message, progress, out, err, quiet=quiet)
            progress.in_flight = None
            progress.done += 1
    finally:
        await client.close()


async def _send_one(
    client: MllpClient,
    message: _Outgoing,
    progress: _Progress,
    out: TextIO,
    err: TextIO,
    *,
    quiet: bool,
) -> None:
    codes = progress.codes
    started = time.perf_counter()
    try:
        await client.connect()
    except (OSError, TimeoutError) as exc:  # refused, unreachable, TLS refused, no answer
        # Not sent at all: said apart from "no ACK", where the server may have stored it.
        codes["not sent"] += 1
        progress.failed += 1
        why = (
            f"no connection within {client.timeout:g}s"
            if isinstance(exc, TimeoutError)
            else _error_text(exc)
        )
        print(printable(f"{message.label}: no ACK: not sent ({why})"), file=err)
        return
    progress.sent += 1
    progress.in_flight = message
    # Enhanced mode: MSH-15 says whether an accept ACK will come at all.
    accept = read_header(message.payload).accept_ack_type
    if accept == "NE":
        try:
            await client.send_only(message.payload)
        except (OSError, TimeoutError) as exc:  # the connection dropped while writing
            codes["send failed"] += 1
            progress.failed += 1
            line = f"{message.label}: the connection failed while sending ({_error_text(exc)})"
            print(printable(line), file=err)
            return
        codes["sent (NE: no ACK)"] += 1
        return
    try:
        wait = (
            min(client.timeout or _SILENCE_WAIT, _SILENCE_WAIT) if accept in ("ER", "SU") else None
        )
        unsolicited = client.unsolicited_acks
        try:
            reply = await client.send(message.payload, timeout=wait)
        finally:
            if passed_over := client.unsolicited_acks - unsolicited:
                codes["NE: acknowledged anyway"] += passed_over
    except TimeoutError:
        if accept == "ER":  # acknowledged only on error: silence is success
            codes["accepted (ER: no ACK)"] += 1
            return
        codes["timeout"] += 1
        progress.failed += 1
        print(printable(f"{message.label}: no ACK within {wait or client.timeout:g}s"), file=err)
        return
    except (OSError, MllpClientError) as exc:
        codes["no ACK"] += 1
        progress.failed += 1
        print(printable(f"{message.label}: no ACK ({_error_text(exc)})"), file=err)
        return
    elapsed = (time.perf_counter() - started) * 1000
    info = parse_ack(reply)
    code = info.code or "no MSA"
    codes[code] += 1
    problem = ""
    if not acknowledges(info, message.control_id_bytes):
        problem = f" — MSA-2 {info.acknowledged_id!r} does not match MSH-10"
    heading = f"{message.label} MSH-10 {message.control_id}: {code}"
    if not info.success or problem:
        progress.failed += 1
        if quiet:
            # Which messages to look at or send again; the ACK's text (ERR-8, MSA-3 may
            # quote the patient) only when asked for, without --quiet.
            print(printable(heading + problem), file=err)
    if not quiet:
        print(printable(f"# {heading} in {elapsed:.1f} ms{problem}"), file=out)
        # The ACK is the server's text: its control characters are shown escaped.
        for segment in info.segments:
            print(printable(segment), file=out)
        print(file=out)


def _print_summary(progress: _Progress, client: MllpClient, err: TextIO) -> None:
    summary = ", ".join(f"{name} {count}" for name, count in sorted(progress.codes.items()))
    summary = summary or "no answer"
    sent = (
        f"{progress.sent} message(s)"
        if progress.sent == progress.total
        else f"{progress.sent} of {progress.total} message(s)"
    )
    print(
        f"{sent} sent to {client.host}:{client.port}: {summary}; {progress.failed} not accepted",
        file=err,
    )


def _read_inputs(paths: Sequence[str]) -> Iterator[_Outgoing]:
    for name, data in _files(paths):
        try:
            raws = split_messages(data)
        except ParseError as exc:
            raise _UsageError(f"{name}: {exc}") from None
        for raw in raws:
            label = name if len(raws) == 1 else f"{name}[{raw.index}]"
            sent_id = control_id(raw.data)
            text = decode_text(sent_id, read_header(raw.data).codec)
            yield _Outgoing(label, terminated(raw.data), text, sent_id)


def _files(paths: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    for name in paths:
        if name == "-":
            yield "<stdin>", sys.stdin.buffer.read()
            continue
        path = Path(name)
        targets = (
            sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if path.is_dir()
            else [path]
        )
        for target in targets:
            try:
                yield str(target), target.read_bytes()
            except OSError as exc:
                raise _UsageError(f"cannot read {target}: {exc.strerror}") from None


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.ca or args.cert or args.key):
        return None
    if args.key and not args.cert:
        raise _UsageError("--key needs --cert")
    try:
        return client_ssl_context(ca=args.ca, cert=args.cert, key=args.key)
    except (OSError, ssl.SSLError) as exc:
        raise _UsageError(f"cannot load TLS files: {exc}") from None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
