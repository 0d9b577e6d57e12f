"""Session 21: the MLLP listener's acknowledgements, on real sockets with real clients.

A control id (MSH-10) that is present but reads empty once unescaped (``\\H\\``,
``\\X20\\``) is no control id: AR 101 at ``MSH^1^10``, nothing stored — as HAPI and Mirth
answer. It used to get AA: stored with no control id (a resend never recognised) or " "
(two messages taken for one reused id).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from converter import Converter, ConverterConfig
from listeners.mllp.ack import read_header
from tests.listeners.service.support import (
    RunningService,
    adt,
    make_config,
    mllp_send_cli,
    running,
)

from ._support import message

#: MSH-10 values not blank as written, each of which unescapes to blanks or nothing.
EMPTY_ONCE_UNESCAPED = [
    "\\H\\",  # start highlighting: a formatting command, no text
    "\\H\\\\N\\",
    "\\X20\\",  # a space
    "\\H\\ \\N\\",
    "\\.in+2\\",  # indent: no text either
]


def stored(service: RunningService) -> list[tuple[int, str | None]]:
    with sqlite3.connect(service.config.queue.path, timeout=30) as conn:
        return list(conn.execute("SELECT seq, control_id FROM messages ORDER BY seq"))


def err_fields(segments: tuple[str, ...]) -> list[str]:
    [err] = [s for s in segments if s.startswith("ERR|")]
    return err.split("|")


def test_a_control_id_empty_once_unescaped_gets_ar_101_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    bodies = [adt(cid) for cid in EMPTY_ONCE_UNESCAPED]
    enhanced = adt("\\H\\", accept_ack="AL", application_ack="NE")
    with running(make_config(tmp_path)) as service:
        acks = service.send([*bodies, enhanced, adt("CID-OK")])
        assert [(a.code, a.acknowledged_id) for a in acks] == [
            *(("AR", cid) for cid in EMPTY_ONCE_UNESCAPED),  # MSA-2: MSH-10 as sent
            ("CR", "\\H\\"),
            ("AA", "CID-OK"),
        ]
        for ack in acks[:-1]:
            assert ack.error_codes == ("101",)
            err = err_fields(ack.segments)
            assert err[2] == "MSH^1^10"  # ERR-2
            assert err[3] == "101^Required field missing^HL70357"  # ERR-3
            assert err[4] == "E"  # ERR-4
        assert stored(service) == [(1, "CID-OK")]


def test_python_hl7_mllp_send_gets_the_same_ar(tmp_path: Path) -> None:
    with running(make_config(tmp_path)) as service:
        [ack] = mllp_send_cli(service.mllp_port(), [adt("\\H\\")], tmp_path)
        assert (ack.code, ack.error_codes) == ("AR", ("101",))
        assert stored(service) == []


@pytest.mark.parametrize(
    ("control_id", "charset"),
    [
        ("\\X41\\", ""),  # "A"
        ("\\E\\", ""),  # the escape character itself
        ("\\F\\", ""),  # the field separator
        ("C\\H\\1", ""),
        # Shift_JIS "◆" is 0x81 0x9F: both bytes read as C1 controls in Latin-1.
        ("◆", "SHIFT_JIS"),
    ],
)
def test_a_control_id_with_text_once_unescaped_is_kept(control_id: str, charset: str) -> None:
    payload = message(control_id, charset=charset)
    if charset:
        payload = payload.decode("utf-8").encode("shift_jis")
    header = read_header(payload)
    assert header.readable, header.problem


# -- MSH-15/16 written as HL7's explicit null ---------------------------------------------
def test_msh15_and_msh16_explicitly_null_are_original_mode(tmp_path: Path) -> None:
    # ``""`` is no acknowledgement type: an engine writing it in every empty field is in
    # original mode. It was answered CA (commit accept), which an original-mode sender
    # takes for a failure and resends; and with ack_after = "delivery" it got no
    # delivery outcome either.
    null_both = adt("NULL-1", accept_ack='""', application_ack='""')
    null_accept = adt("NULL-2", accept_ack='""', application_ack="AL")
    with running(make_config(tmp_path)) as service:
        acks = service.send([null_both, null_accept])
        # MSH-16 valued: enhanced mode, and an empty MSH-15 asks for the accept ACK (AL).
        assert [(a.code, a.acknowledged_id) for a in acks] == [("AA", "NULL-1"), ("CA", "NULL-2")]
        assert stored(service) == [(1, "NULL-1"), (2, "NULL-2")]


# -- a batch sent over MLLP ---------------------------------------------------------------
@pytest.mark.parametrize(
    "opening", ["FHS|^~\\&|APP-A|FAC-A\rBHS|^~\\&|APP-A|FAC-A\r", "BHS|^~\\&\r"]
)
def test_a_batch_gets_ar_100_saying_it_is_a_batch(tmp_path: Path, opening: str) -> None:
    batch = (
        opening.encode() + adt("IN-BATCH") + b"BTS|1\r" + (b"FTS|1\r" if "FHS" in opening else b"")
    )
    with running(make_config(tmp_path)) as service:
        [ack, after] = service.send([batch, adt("AFTER")])
        assert (ack.code, ack.error_codes) == ("AR", ("100",))
        assert ack.texts == (
            "a batch (FHS/BHS) is not accepted over MLLP: send one message per block",
        )
        assert err_fields(ack.segments)[2] == f"{opening[:3]}^1"  # ERR-2: the batch header
        assert after.code == "AA"
        assert stored(service) == [(1, "AFTER")]


@pytest.mark.parametrize("control_id", [*EMPTY_ONCE_UNESCAPED, "\\X00\\", "\\X0D0A\\", "\\.sp\\"])
def test_read_header_finds_no_control_id_in_them(control_id: str) -> None:
    header = read_header(message(control_id))
    assert (header.problem_code, header.problem_location) == ("101", "MSH-10")
    assert header.control_id == control_id  # MSA-2 still echoes it as sent


# -- MSH-18 written "" -----------------------------------------------------------------------
def _with_msh18(message: bytes, value: str) -> bytes:
    head, _, rest = message.partition(b"\r")
    fields = head.decode().split("|")
    fields += [""] * (18 - len(fields))
    fields[17] = value
    return "|".join(fields).encode() + b"\r" + rest


def test_msh18_explicitly_null_is_the_default_charset(tmp_path: Path) -> None:
    # An engine writing "" in every empty field wrote it in MSH-18 too: the listener
    # answered AR 103 (unsupported character set) and the converter refused the message,
    # for a message in the default charset.
    message = _with_msh18(adt("NULL-18"), '""')
    converted = Converter(ConverterConfig()).convert(message)
    assert converted[0].bundle["resourceType"] == "Bundle"
    with running(make_config(tmp_path)) as service:
        [ack] = service.send([message])
        assert (ack.code, ack.error_codes) == ("AA", ())
        assert stored(service) == [(1, "NULL-18")]
