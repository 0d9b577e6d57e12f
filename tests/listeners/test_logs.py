"""Structured logs: only whitelisted facts reach the output, never message content."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from converter import MappingError
from listeners.logs import (
    SAFE_FIELDS,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    log_fields,
)

PATIENT = "DUPONT^Marie"
SEGMENT = "PID|1||0012345678^^^CHU^MR||DUPONT^Marie||19850312|F"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("passerelle")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    access = logging.getLogger("uvicorn.access").disabled
    httpx_level = logging.getLogger("httpx").level
    last_resort = logging.lastResort
    yield
    logging.lastResort = last_resort
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    logging.getLogger("uvicorn.access").disabled = access
    logging.getLogger("httpx").setLevel(httpx_level)
    for name in ("uvicorn", "uvicorn.error", "py.warnings", "asyncio"):
        other = logging.getLogger(name)
        other.handlers.clear()
        other.propagate = True
    logging.captureWarnings(False)


def record(
    msg: str = "stored", *, exc: BaseException | None = None, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("passerelle.ingest", logging.INFO, __file__, 10, msg, (), None)
    if exc is not None:
        rec.exc_info = (type(exc), exc, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_log_fields_keeps_whitelisted_non_empty_facts() -> None:
    fields = log_fields(control_id="C1", size=12, seq=None, payload=SEGMENT, name=PATIENT)
    assert fields == {"control_id": "C1", "size": 12}
    assert {"control_id", "message_type", "size", "duration_ms", "seq"} <= SAFE_FIELDS
    assert not {"payload", "message", "detail", "patient", "name", "body"} & SAFE_FIELDS


def test_json_formatter_writes_only_safe_fields() -> None:
    line = JsonFormatter().format(
        record(
            "stored",
            control_id="CTL-1",
            message_type="ADT^A01",
            size=321,
            duration_ms=1.5,
            payload=SEGMENT,  # passed by mistake: dropped
            detail="19850312",
        )
    )
    entry = json.loads(line)
    assert entry["message"] == "stored"
    assert entry["level"] == "info" and entry["logger"] == "passerelle.ingest"
    assert entry["control_id"] == "CTL-1" and entry["message_type"] == "ADT^A01"
    assert entry["size"] == 321 and entry["duration_ms"] == 1.5
    assert entry["time"].endswith("Z")
    assert "payload" not in entry and "detail" not in entry
    assert "DUPONT" not in line and "19850312" not in line


def test_exceptions_are_logged_by_type_only() -> None:
    error = MappingError("invalid timestamp", location="PID-7", detail="19850312")
    leaky = ValueError(f"could not parse {SEGMENT}")
    for formatter in (JsonFormatter(), TextFormatter()):
        for exc in (error, leaky):
            line = formatter.format(record("conversion failed", exc=exc, control_id="C2"))
            assert type(exc).__name__ in line
            assert "DUPONT" not in line and "19850312" not in line and "PID|" not in line
            assert "Traceback" not in line


def test_text_formatter_appends_sorted_key_values() -> None:
    line = TextFormatter().format(record("stored", size=10, control_id="C3", secret_name=PATIENT))
    assert line.endswith("passerelle.ingest: stored control_id=C3 size=10")
    assert "DUPONT" not in line


def test_configure_logging_json_to_a_stream(restore_logging: None) -> None:
    stream = io.StringIO()
    logger = configure_logging("json", "info", stream=stream, levels={"passerelle.queue": "ERROR"})
    assert logger.name == "passerelle" and logger.propagate is False
    logging.getLogger("passerelle.ingest").info("stored", extra=log_fields(control_id="C4"))
    logging.getLogger("passerelle.ingest").debug("not shown")
    logging.getLogger("passerelle.queue").warning("below the queue's level")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["stored"]
    assert logging.getLogger("uvicorn.access").disabled
    assert logging.getLogger("httpx").level == logging.WARNING
    # Configuring again replaces the handler instead of duplicating lines.
    configure_logging("text", "INFO", stream=stream)
    logging.getLogger("passerelle.ingest").info("again")
    assert stream.getvalue().count("again") == 1


def test_a_json_log_stream_holds_json_lines_only(restore_logging: None) -> None:
    # uvicorn logs a bad request itself, and libraries warn through `warnings`: before,
    # both reached stderr as bare text lines, breaking a JSON log pipeline.
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
    lines = stream.getvalue().splitlines()
    messages = [json.loads(line)["message"] for line in lines]
    assert messages[0] == "Invalid HTTP request received."
    assert "a library's warning" in messages[1]


def test_configure_logging_rejects_an_unknown_level(restore_logging: None) -> None:
    with pytest.raises(ValueError):
        configure_logging("json", "verbose", stream=io.StringIO())


def test_sender_values_cannot_forge_or_hide_a_log_line() -> None:
    # A CDA id extension may hold "&#10;"; HL7 fields may hold ESC, bidi marks, U+2028.
    forged = "DOC-1\n2026-11-29 07:00:00 INFO    passerelle.ingest: forged"
    values = {"control_id": forged, "sender": "LAB\x1b[2J", "message_type": "ORU\u2028\u202e"}
    text = TextFormatter().format(record("stored", **values))
    assert "\n" not in text and "\x1b" not in text and "\u2028" not in text
    assert "control_id=DOC-1\\x0a2026-11-29" in text and "sender=LAB\\x1b[2J" in text
    assert "message_type=ORU\\u2028\\u202e" in text
    line = JsonFormatter().format(record("stored", **values))
    assert len(line.splitlines()) == 1
    assert not any(ch in line for ch in "\x1b\u2028\u202e")
    entry = json.loads(line)
    assert {key: entry[key] for key in values} == values  # escaped, not altered
