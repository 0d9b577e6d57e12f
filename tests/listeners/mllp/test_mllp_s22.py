"""Session 22: the MLLP listener, on real sockets.

* A block holding two messages gets AR 100 whose ERR-2 is ``MSH^2``: ERL.2 (segment
  sequence) is the occurrence of the segment in the message, so the location points at
  the second MSH, where the second message starts. It used to be ``MSH^1``, the
  block's own (valid) header.
* A message asking for application acknowledgements (MSH-16 AL/ER/SU), which this
  service never sends, draws one WARNING per connection naming the sender (MSH-3/MSH-4)
  and the remedy (original mode with ``mllp.ack_after = "delivery"``), never content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import time
from pathlib import Path

import pytest

from listeners.config import MllpConfig, TlsConfig
from listeners.logs import JsonFormatter
from listeners.mllp import (
    AckInfo,
    MllpClient,
    MllpClientError,
    MllpServer,
    client_ssl_context,
    parse_ack,
)
from listeners.mllp.app_ack import SENDER_INTERVAL, ApplicationAckNotice
from listeners.mllp.framing import START_BLOCK
from listeners.mllp.header import read_header
from tests.listeners.service.support import RunningService, adt, make_config, running
from tests.support.certs import Pki

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


def stored(service: RunningService) -> list[tuple[int, str | None]]:
    with sqlite3.connect(service.config.queue.path, timeout=30) as conn:
        return list(conn.execute("SELECT seq, control_id FROM messages ORDER BY seq"))


def segment(ack: AckInfo, name: str) -> list[str]:
    [found] = [s for s in ack.segments if s.startswith(name + "|")]
    return found.split("|")


# -- two messages in one block ----------------------------------------------------------------
def test_two_messages_in_one_block_get_an_ar_pointing_at_the_second_msh(tmp_path: Path) -> None:
    block = adt("TWO-1", mrn="MRN-TWO-1") + adt("TWO-2", mrn="MRN-TWO-2")
    three = adt("THREE-1") + adt("THREE-2") + adt("THREE-3")
    # Before v2.5 the location is ERR-1 (ELD): segment, sequence, field, code.
    old = adt("OLD-1", version="2.4") + adt("OLD-2", version="2.4")
    with running(make_config(tmp_path)) as service:
        acks = service.send([block, three, old, adt("ONE-1")])
        assert [(a.code, a.acknowledged_id, a.error_codes) for a in acks] == [
            ("AR", "TWO-1", ("100",)),
            ("AR", "THREE-1", ("100",)),
            ("AR", "OLD-1", ("100",)),
            ("AA", "ONE-1", ()),
        ]
        for ack in acks[:2]:
            err = segment(ack, "ERR")
            assert err[2] == "MSH^2"  # ERR-2: the second MSH, where the second message starts
            assert err[3] == "100^Segment sequence error^HL70357"
            assert err[4] == "E"
        assert acks[0].texts == (
            "one message per MLLP block: a second MSH at segment 5 (send batches and "
            "multi-message files with passerelle convert or POST /convert)",
        )
        assert segment(acks[2], "ERR")[1] == "MSH^2^^100&Segment sequence error&HL70357"
        assert stored(service) == [(1, "ONE-1")]


@pytest.mark.parametrize(
    ("block", "segment_number"),
    [
        (adt("A") + adt("B"), 5),
        # LF line ends, as some engines write them.
        ((adt("A") + adt("B")).replace(b"\r", b"\n"), 5),
        # Blank lines are no segments: the count is the one a segment list shows.
        (adt("A") + b"\r\r" + adt("B"), 5),
        (b"\r\n" + adt("A").replace(b"\r", b"\r\n") + adt("B"), 5),
        # MSH alone, then an empty PID line: the second MSH is the second segment.
        (message("A", pid="") + message("B"), 2),
    ],
)
def test_read_header_locates_the_second_msh(block: bytes, segment_number: int) -> None:
    header = read_header(block)
    assert (header.problem_code, header.problem_location) == ("100", "MSH[2]")
    assert f"a second MSH at segment {segment_number} " in (header.problem or "")
    assert header.control_id == "A"  # MSA-2 still names the block's first message


@pytest.mark.parametrize(
    "body",
    [
        adt("ONE"),
        # "MSH" inside a segment, or as a segment name's start, is no second message.
        adt("ONE") + b"NTE|1||see MSH|x\r",
        adt("ONE") + b"ZMSH|1\r",
        adt("ONE") + b"MSHX|1\r",
    ],
)
def test_one_message_is_not_taken_for_two(body: bytes) -> None:
    assert read_header(body).readable


def test_a_header_problem_of_the_first_message_is_reported_first() -> None:
    # No MSH-10: the first message's own problem, at its place, as before.
    header = read_header(adt("") + adt("B"))
    assert (header.problem_code, header.problem_location) == ("101", "MSH-10")


# -- MSH-16: application acknowledgements asked for -------------------------------------------
def warnings_about_application_acks(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [
        r
        for r in records
        if r.levelno == logging.WARNING and "application acknowledgements" in r.getMessage()
    ]


def test_msh16_al_draws_one_warning_per_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="passerelle")
    asking = [
        adt("AL-1", accept_ack="AL", application_ack="AL", family=PATIENT_NAME.split("^")[0]),
        adt("AL-2", accept_ack="AL", application_ack="AL", family=PATIENT_NAME.split("^")[0]),
    ]
    with running(make_config(tmp_path)) as service:
        # Not asking: original mode, and enhanced mode with MSH-16 NE.
        quiet = service.send([adt("ORIG-1"), adt("NE-1", accept_ack="AL", application_ack="NE")])
        assert [a.code for a in quiet] == ["AA", "CA"]
        assert warnings_about_application_acks(caplog.records) == []
        acks = service.send(asking)
        assert [(a.code, a.acknowledged_id) for a in acks] == [("CA", "AL-1"), ("CA", "AL-2")]
        [warning] = warnings_about_application_acks(caplog.records)
        # A second connection is warned about again (another sender process, a restart).
        service.send([adt("ER-1", accept_ack="AL", application_ack="ER", application="APP-B")])
        first, second = warnings_about_application_acks(caplog.records)
        assert stored(service) == [
            (1, "ORIG-1"),
            (2, "NE-1"),
            (3, "AL-1"),
            (4, "AL-2"),
            (5, "ER-1"),
        ]
    assert first is warning
    text = warning.getMessage()
    assert "sender APP-A/FAC-A asks for application acknowledgements (MSH-16 AL)" in text
    assert 'mllp.ack_after = "delivery"' in text
    assert "MSH-16 ER" in second.getMessage() and "APP-B/FAC-A" in second.getMessage()
    assert "its delivery errors are never reported to it" in second.getMessage()
    assert "a sender waiting for one waits for ever" in text
    assert (warning.listener, warning.sender, warning.control_id) == (  # type: ignore[attr-defined]
        "mllp",
        "APP-A/FAC-A",
        "AL-1",
    )
    logged = caplog.text + JsonFormatter().format(warning)
    assert PATIENT_NAME.split("^")[0] not in logged
    assert "MRN-0001" not in logged


def test_the_warning_says_original_mode_when_ack_after_is_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # MllpServer.from_config, as the service builds its listener; any handler.
    logger = logging.getLogger("passerelle.mllp.test_s22")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    config = MllpConfig(listeners=(listener(),), ack_after="delivery")
    recorder = Recorder()

    async def scenario() -> None:
        server = MllpServer.from_config(config, recorder, logger=logger)
        async with server:
            conn = await RawConnection.open(port_of(server))
            try:
                for cid, app_ack in [("SU-1", "SU"), ("SU-2", "SU"), ("ACK-1", "AL")]:
                    msh9 = "ACK^A01^ACK" if cid.startswith("ACK") else "ADT^A01^ADT_A01"
                    payload = message(
                        cid,
                        accept_ack="NE",
                        application_ack=app_ack,
                        msh9=msh9,
                        sending=("LABÔ", "HÔPITAL"),  # UTF-8, MSH-18 empty
                    )
                    reply = await conn.exchange(payload)
                    assert reply is not None and parse_ack(reply).code == "CA"
            finally:
                await conn.close()

    run(scenario())
    assert len(recorder.payloads) == 3  # the handler still gets every message
    [warning] = warnings_about_application_acks(caplog.records)
    text = warning.getMessage()
    assert "sender LABÔ/HÔPITAL asks for application acknowledgements (MSH-16 SU)" in text
    assert "the sender should leave MSH-15 and MSH-16 empty" in text
    # The second one on the connection: DEBUG; an ACK's MSH-16 is never about this.
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "again" in r.getMessage()]
    assert len(debug) == 1


def test_a_sender_opening_a_connection_per_message_is_warned_about_every_10_minutes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One WARNING per connection would be one per message from an engine that connects
    for each message (Mirth's LLP sender with "keep connection open" off)."""
    logger = logging.getLogger("passerelle.mllp.test_s22c")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    now = [1000.0]
    notice = ApplicationAckNotice(logger, clock=lambda: now[0])

    async def one_connection(port: int, cid: str, application: str = "LABAPP") -> None:
        conn = await RawConnection.open(port)
        try:
            payload = message(
                cid, accept_ack="AL", application_ack="AL", sending=(application, "F")
            )
            assert await conn.exchange(payload) is not None
        finally:
            await conn.close()

    async def scenario() -> list[int]:
        counts = []
        async with serving(notice.wrap(Recorder())) as server:
            port = port_of(server)
            for cid in ("C-1", "C-2", "C-3"):
                await one_connection(port, cid)
            counts.append(len(warnings_about_application_acks(caplog.records)))
            await one_connection(port, "OTHER-1", application="OTHERAPP")  # another sender
            counts.append(len(warnings_about_application_acks(caplog.records)))
            now[0] += SENDER_INTERVAL + 1
            await one_connection(port, "C-4")
            counts.append(len(warnings_about_application_acks(caplog.records)))
        return counts

    assert run(scenario()) == [1, 2, 3]
    texts = [r.getMessage() for r in warnings_about_application_acks(caplog.records)]
    assert ["LABAPP/F" in texts[0], "OTHERAPP/F" in texts[1], "LABAPP/F" in texts[2]] == [
        True,
        True,
        True,
    ]
    assert "for 10 minutes" in texts[0]


def test_unreadable_first_segment_draws_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("passerelle.mllp.test_s22b")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    config = MllpConfig(listeners=(listener(),))

    async def scenario() -> None:
        async with MllpServer.from_config(config, Recorder(), logger=logger) as server:
            conn = await RawConnection.open(port_of(server))
            try:
                await asyncio.wait_for(conn.exchange(b"PID|1||X\r"), 10)
            finally:
                await conn.close()

    run(scenario())
    assert warnings_about_application_acks(caplog.records) == []


# -- frame_timeout and a large message on a slow link ------------------------------------------
def _big_message(control_id: str, size: int) -> bytes:
    """An ORU whose OBX-5 holds a document (an embedded PDF, Base64) of ``size`` bytes."""
    return message(
        control_id,
        msh9="ORU^R01^ORU_R01",
        pid="PID|1\rOBR|1\rOBX|1|ED|PDF^Report||^AP^PDF^Base64^" + "QUJD" * (size // 4),
    )


def test_a_large_frame_arriving_steadily_is_not_cut_off_by_frame_timeout() -> None:
    """A fixed deadline asked 10 MB in 60 s (1.4 Mbit/s) by default: a report with its
    PDF sent over a slower link was closed without an ACK each time, re-sent for ever,
    the sender's feed stalled behind it. Scaled: 300 KB at about 150 KB/s, 1 s timeout."""

    async def scenario() -> tuple[str, float, int]:
        recorder = Recorder()
        async with serving(recorder, frame_timeout=1.0, idle_timeout=5.0) as server:
            conn = await RawConnection.open(port_of(server))
            data = START_BLOCK + _big_message("BIG-1", 300_000) + b"\x1c\r"
            started = time.monotonic()
            try:
                for at in range(0, len(data), 15_000):
                    await conn.send_raw(data[at : at + 15_000])
                    await asyncio.sleep(0.1)
                ack = await conn.read(timeout=5)
            finally:
                await conn.close()
            assert ack is not None
            return parse_ack(ack).code, time.monotonic() - started, server.stats().frame_timeouts

    code, elapsed, timeouts = run(scenario())
    assert elapsed > 1.5  # well past frame_timeout
    assert (code, timeouts) == ("AA", 0)


def test_an_endless_frame_is_still_closed(caplog: pytest.LogCaptureFixture) -> None:
    """The extension stops at max_frame_bytes: a peer streaming a frame that never ends
    (here 32 KiB, 2 s at 16 KiB/s, past a 0.5 s frame_timeout) is closed all the same."""

    async def scenario() -> tuple[float, int]:
        async with serving(
            Recorder(), frame_timeout=0.5, idle_timeout=5.0, max_frame_bytes=32 * 1024
        ) as server:
            conn = await RawConnection.open(port_of(server))
            started = time.monotonic()
            await conn.send_raw(START_BLOCK + message("ENDLESS-1"))
            try:
                while time.monotonic() - started < 10:
                    await conn.send_raw(b"OBX|1|TX|||" + b"x" * 4000 + b"\r")
                    await asyncio.sleep(0.05)
                    if conn.reader.at_eof():
                        break
            except ConnectionError:
                pass
            closed = await conn.closed_by_server(timeout=3)
            await conn.close()
            assert closed
            return time.monotonic() - started, server.stats().frame_timeouts

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        elapsed, timeouts = run(scenario())
    assert timeouts == 1
    assert 2.0 < elapsed < 5.0
    [warning] = [r.getMessage() for r in caplog.records if "frame_timeout" in r.getMessage()]
    assert "frame not complete 0.5s after its start block, plus 1s per 16 KiB received" in warning


# -- TLS handshake failures say what they mean ------------------------------------------------
def test_tls_handshake_failures_say_what_to_fix(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    """``TLS handshake failed: WRONG_VERSION_NUMBER`` was all an interface engineer got for
    a sender speaking plain MLLP to a TLS port; a foreign client certificate did not say
    why it was refused."""
    tls = TlsConfig(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca)

    async def attempt(port: int, context: ssl.SSLContext) -> None:
        client = MllpClient("127.0.0.1", port, ssl_context=context, timeout=5)
        with contextlib.suppress(OSError, MllpClientError):
            await client.send(message("REFUSED"))
        await client.close()

    async def scenario() -> None:
        async with serving(Recorder(), [listener(tls=tls)]) as server:
            port = port_of(server)
            conn = await RawConnection.open(port)
            await conn.send_raw(START_BLOCK + message("PLAIN") + b"\x1c\r")
            assert await conn.closed_by_server()
            await conn.close()
            await attempt(port, client_ssl_context(ca=pki.ca))  # no client certificate
            foreign = client_ssl_context(
                ca=pki.ca, cert=pki.other_client_cert, key=pki.other_client_key
            )
            await attempt(port, foreign)
            await asyncio.sleep(0.2)  # the server logs after the client saw the refusal
            assert server.stats().tls_handshake_failures == 3

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        run(scenario())
    failures = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) == 3
    assert "the peer does not speak TLS (plain MLLP?)" in failures[0]
    assert "the peer sent no client certificate; this listener requires one" in failures[1]
    assert "CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate)" in failures[2]
