"""A converter bug (an exception that is not a ConversionError) dead-letters the message
instead of retrying it forever in front of the messages queued after it.

No real bug is at hand, so one is planted: conversions run in threads of this process
(``use_threads``) and ``Converter.convert`` raises a KeyError quoting patient data for
one control id. Everything else is real: MLLP, the SQLite queue, the FHIR server.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from converter import Converter
from tests.listeners.service.support import adt, make_config, running, wait_until
from tests.support.fhirserver import FhirServer

SECRET = "Xylophagou 19430917"


@pytest.fixture
def planted_bug(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = Converter.convert

    def convert(self: Converter, data: bytes, **kwargs: Any) -> Any:
        if b"|BUG-1|" in data:
            raise KeyError(SECRET)
        return original(self, data, **kwargs)

    monkeypatch.setattr(Converter, "convert", convert)
    yield


def test_a_converter_bug_dead_letters_the_message_and_the_next_one_goes_through(
    tmp_path: Path,
    fhir: FhirServer,
    planted_bug: None,
    captured_text_logs: io.StringIO,
) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    with running(config, use_threads=True) as service:
        acks = service.send([adt("BUG-1"), adt("OK-2")])  # the same patient: one order
        assert [ack.code for ack in acks] == ["AA", "AA"]
        wait_until(lambda: fhir.count("Patient") == 1, what="the second message delivered")
        service.drained()
        (letter,) = service.service.queue.list_dead_letters(limit=10, offset=0)
        # The HTTP API answers a bug with a 500, not a 422 blaming the input.
        answer = httpx.post(f"{service.http_url}/convert", content=adt("BUG-1"), timeout=30)
        assert answer.status_code == 500, answer.text
        assert SECRET not in answer.text
    assert letter.envelope is not None and letter.envelope.control_id == "BUG-1"
    assert letter.error["kind"] == "InternalError"
    assert "KeyError" in letter.error["reason"]
    assert letter.error["location"].startswith("test_converter_bugs.py:")
    assert SECRET in letter.error["detail"]  # shown only with dead-letters show --payload
    text = captured_text_logs.getvalue()
    assert "error_kind=InternalError" in text
    assert "unexpected KeyError in the converter (a bug) at test_converter_bugs.py:" in text
    assert SECRET not in text


def test_a_bug_reading_the_header_is_an_ar_not_a_closed_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured_text_logs: io.StringIO
) -> None:
    """Closing without an ACK makes the sender resend the same message for ever: a bug
    in reading the header (before the message is stored) is answered AR 207, logged
    without the message's content, and the next message goes through."""
    import listeners.ingest

    original = listeners.ingest.peek_header

    def peek_header(payload: bytes, **options: Any) -> Any:
        if b"|BUG-H|" in payload:
            raise ValueError(SECRET)
        return original(payload, **options)

    monkeypatch.setattr(listeners.ingest, "peek_header", peek_header)
    with running(make_config(tmp_path), use_threads=True) as service:
        bad, good = service.send([adt("BUG-H"), adt("OK-H")])
        assert (bad.code, bad.acknowledged_id, bad.error_codes) == ("AR", "BUG-H", ("207",))
        assert good.code == "AA"
    text = captured_text_logs.getvalue()
    assert "reading the message header failed: ValueError at test_converter_bugs.py:" in text
    assert SECRET not in text
