"""Structured logging that never carries message content.

Log records take facts through ``extra=`` (control id, sender, message type, sizes,
durations, error kinds and locations). The JSON formatter writes only the message and
the whitelisted fields; a payload passed by mistake under another name is dropped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from converter.errors import ConversionError
from converter.printable import printable, printable_json

from .errors import ServiceError

__all__ = [
    "SAFE_FIELDS",
    "JsonFormatter",
    "LogSetup",
    "TextFormatter",
    "code_place",
    "configure_logging",
    "current_setup",
    "describe_exception",
    "error_fields",
    "log_fields",
]

#: The only ``extra`` fields a record may carry to the output.
SAFE_FIELDS = frozenset(
    {
        "control_id",
        "sender",
        "message_type",
        "listener",
        "peer",
        "connection",
        "seq",
        "size",
        "duration_ms",
        "ack_code",
        "error_kind",
        "error_code",
        "location",
        "template",
        "destination",
        "status",
        "attempt",
        "delay_s",
        "route",
        "depth",
        "count",
        "port",
        "tls_subject",
        "correlation_id",
        "message_id",
        "event",
    }
)

_LOGGER_NAME = "passerelle"


def log_fields(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call, dropping None values and anything not whitelisted."""
    return {k: v for k, v in fields.items() if v is not None and k in SAFE_FIELDS}


def error_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """``extra=`` fields of a stored error record (a dead letter's): kind, HL7 error
    code, location, template, HTTP status, attempts — never its detail or outcome."""
    return log_fields(
        error_kind=record.get("kind"),
        error_code=record.get("hl7_error_code"),
        location=record.get("location"),
        template=record.get("template"),
        status=record.get("status"),
        attempt=record.get("attempts"),
    )


def describe_exception(exc: BaseException) -> str:
    """Type and place of an unexpected exception, for a log line: its text only when it
    is one of ours (known to carry no message content), since a library's exception
    text may quote the data it choked on."""
    text = f"{type(exc).__name__} at {code_place(exc)}"
    if isinstance(exc, ConversionError | ServiceError):
        text += f" ({exc})"
    return text


def code_place(exc: BaseException) -> str:
    """Where an exception was raised: ``file.py:123 in function`` (``?`` when unknown)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno} in {last.name}"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k in SAFE_FIELDS and v is not None}


#: The longest exception text a log line carries.
_EXCEPTION_TEXT_LIMIT = 300


def _exception_text(record: logging.LogRecord) -> str | None:
    """The text of a logged exception when it is one of ours (it names what failed and
    why, never message content: ``queue storage failed while storing: database or disk
    is full``); None for any other. Without it the line said only ``QueueError``: the
    operator could not tell a full disk from a read-only volume or a locked file."""
    if not record.exc_info:
        return None
    exc = record.exc_info[1]
    if not isinstance(exc, ConversionError | ServiceError):
        return None
    text = str(exc).strip()
    return text[:_EXCEPTION_TEXT_LIMIT] or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the safe fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only, and the text of ours: a library's exception text
            # may quote message content.
            entry["exception"] = record.exc_info[0].__name__
            text = _exception_text(record)
            if text is not None:
                entry["exception_text"] = text
        return printable_json(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value …`` for terminals."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in sorted(_fields(record).items()))
        line = f"{stamp} {record.levelname:7} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[0] is not None:
            line += f" exception={record.exc_info[0].__name__}"
            text = _exception_text(record)
            if text is not None:
                line += f" ({text})"
        # Values come from senders: no control character may forge or hide a line.
        return printable(f"{line} {extra}".rstrip())


def configure_logging(
    fmt: str, level: str, stream: TextIO | None = None, levels: Mapping[str, str] | None = None
) -> logging.Logger:
    """Route the ``passerelle`` loggers to ``stream`` (stderr) in the chosen format."""
    logger = logging.getLogger(_LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    # A record of a logger nobody configured (a library's WARNING: aio-pika losing its
    # connection, concurrent.futures) went to Python's last-resort handler: a bare line,
    # and its exception's traceback, text and all, in the middle of a JSON stream.
    fallback = logging.StreamHandler(stream or sys.stderr)
    fallback.setFormatter(handler.formatter)
    fallback.setLevel(logging.WARNING)
    logging.lastResort = fallback
    for name, value in (levels or {}).items():
        logging.getLogger(name).setLevel(value.upper())
    # uvicorn's own lines ("Invalid HTTP request received.") and Python warnings go out
    # in the same format: a JSON log stream must hold JSON lines only.
    # asyncio logs a failed accept (file descriptors exhausted) with a traceback each time.
    for name in ("uvicorn", "uvicorn.error", "py.warnings", "asyncio"):
        other = logging.getLogger(name)
        other.handlers = [handler]
        other.propagate = False
    logging.captureWarnings(True)
    # Third-party access logs would print request lines; keep them quiet.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return logger


@dataclass(frozen=True, slots=True)
class LogSetup:
    """How :func:`configure_logging` set up this process's logs: the processes the
    service starts (conversion) write to the same stderr in the same format, else a
    JSON log pipeline mis-parses their lines."""

    fmt: str
    level: str

    def apply(self) -> None:
        """Configure this process's logging (to its stderr) this way."""
        configure_logging(self.fmt, self.level)


def current_setup() -> LogSetup | None:
    """The setup :func:`configure_logging` gave this process, read from the ``passerelle``
    logger; None when it was not called (the converter used as a library, a test):
    processes started from here then keep Python's defaults."""
    logger = logging.getLogger(_LOGGER_NAME)
    for handler in logger.handlers:
        formatter = handler.formatter
        if isinstance(formatter, JsonFormatter | TextFormatter):
            fmt = "json" if isinstance(formatter, JsonFormatter) else "text"
            return LogSetup(fmt, logging.getLevelName(logger.getEffectiveLevel()))
    return None
