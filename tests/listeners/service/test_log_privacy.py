"""The running service's logs never carry patient data, in text or JSON.

Messages with distinctive names, identifiers and birth dates go through every path —
delivered, retransmitted, unconvertible, rejected by the FHIR server, unsupported (AR), the
HTTP API — with logs at DEBUG; none of those values may appear in any log line, while
control ids, message types, sizes and durations do.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx

from tests.listeners.service.support import (
    ServeProcess,
    adt,
    make_config,
    passerelle,
    running,
    wait_until,
    write_config,
)
from tests.support.fhirserver import FhirServer

FAMILY, GIVEN = "Xylophagou", "Quetzalinda"
MRN = "PRIV-93571"
BIRTH = "19430917"
BAD_BIRTH = "19431341"  # month 13: a conversion error whose value must not be logged
FORBIDDEN = (FAMILY, GIVEN, MRN, BIRTH, BAD_BIRTH, "1943-09-17", "PID|")


def private_messages(prefix: str) -> list[bytes]:
    def message(control_id: str, birth_date: str = BIRTH, **kwargs: str) -> bytes:
        return adt(
            f"{prefix}-{control_id}",
            family=FAMILY,
            given=GIVEN,
            mrn=MRN,
            birth_date=birth_date,
            **kwargs,
        )

    return [
        message("OK-1"),
        message("OK-1"),  # a retransmission
        message("A08-2", event="A08"),
        message("BAD-3", birth_date=BAD_BIRTH),
        message("REJ-4"),
        message("UNSUP-5", msh9="ZZZ^Z01^ZZZ_Z01"),
    ]


def reject_the_third_bundle(fhir: FhirServer) -> None:
    """OK-1 and A08-2 go through, REJ-4 (the third bundle) is refused with an outcome that
    quotes the patient — the service must keep that out of its logs too."""
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": f"{FAMILY} {BIRTH}"}],
    }
    fhir.control(faults=[{"count": 2}, {"status": 422, "outcome": outcome}])


def assert_private(text: str) -> None:
    leaks = [value for value in FORBIDDEN if value in text]
    assert not leaks, f"patient data in the logs: {leaks}"


def test_text_logs_in_process(
    tmp_path: Path, fhir: FhirServer, captured_text_logs: io.StringIO
) -> None:
    reject_the_third_bundle(fhir)
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    with running(config) as service:
        acks = service.send(private_messages("TXT"))
        assert [a.code for a in acks] == ["AA", "AA", "AA", "AA", "AA", "AR"]
        service.drained()
        assert service.service.queue.count_dead_letters() == 2
        # The HTTP API too: a conversion and a failing one.
        for body in (private_messages("HTTP")[0], private_messages("HTTP")[3]):
            httpx.post(f"{service.http_url}/convert", content=body, timeout=30)
    text = captured_text_logs.getvalue()
    assert_private(text)
    # What the logs are for is there: control ids, types, sizes, durations, locations.
    for expected in ("TXT-OK-1", "TXT-BAD-3", "TXT-REJ-4", "TXT-UNSUP-5", "ADT^A01", "PID-7"):
        assert expected in text, expected
    assert re.search(r"size=\d+", text)
    assert re.search(r"\d+\.\d+ ?m?s\b", text)
    assert "status=422" in text


def test_json_logs_of_passerelle_serve(tmp_path: Path, fhir: FhirServer) -> None:
    reject_the_third_bundle(fhir)
    config = write_config(tmp_path, {"destinations.default": {"url": fhir.base_url}})
    with ServeProcess(config) as serve:
        port = serve.mllp_ports["mllp"]
        files = []
        for i, message in enumerate(private_messages("JSN")):
            path = tmp_path / f"m{i}.hl7"
            path.write_bytes(message)
            files.append(str(path))
        sent = passerelle("send", *files, "--port", str(port))
        assert sent.returncode == 1  # the AR
        assert sent.stdout.count(": AA in ") == 5
        wait_until(
            lambda: sum(e.get("message") == "delivered" for e in serve.entries()) == 2,
            what="the deliveries",
        )
        wait_until(
            lambda: (
                any("dead-lettered" in str(e.get("message")) for e in serve.entries())
                and sum("dead-lettered" in str(e.get("message")) for e in serve.entries()) == 2
            ),
            what="the dead letters",
        )
        assert serve.terminate() == 0
    lines = [line for line in serve.log if line.strip()]
    # Every line is a JSON object: nothing unstructured (tracebacks, stray prints) escapes.
    entries = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) and "message" in e for e in entries)
    assert_private("\n".join(lines))
    stored = [e for e in entries if e["message"] == "stored"]
    assert {e["control_id"] for e in stored} == {"JSN-OK-1", "JSN-A08-2", "JSN-BAD-3", "JSN-REJ-4"}
    assert all(e["size"] > 0 and e["message_type"].startswith("ADT^") for e in stored)
    failed = next(e for e in entries if e["message"].startswith("conversion failed"))
    assert failed["location"] == "PID-7" and failed["template"].startswith("hl7v2/resources/")
    assert any(e["message"].startswith("retransmission") for e in entries)
    assert any(e["message"] == "unsupported message rejected" for e in entries)


def test_text_logs_show_a_senders_control_characters_escaped(
    tmp_path: Path, fhir: FhirServer, captured_text_logs: io.StringIO
) -> None:
    # MSH-10 with an ESC sequence (clears a terminal showing the logs) and a BEL; FHIR
    # text cannot hold them, so the message is dead-lettered: logged twice.
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    with running(config) as service:
        (ack,) = service.send([adt("ESC\x1b[2J\x07-1")])
        assert ack.code == "AA"
        service.drained()
        assert service.service.queue.count_dead_letters() == 1
    text = captured_text_logs.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert text.count("control_id=ESC\\x1b[2J\\x07-1") >= 2
    assert "error_kind=MappingError" in text and "location=MSH-10" in text
