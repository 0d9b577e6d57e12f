"""The service end to end: MLLP in, durable queue, conversion processes, FHIR server / folder out.

Everything is real: the service's listeners on ephemeral ports, MLLP clients (``MllpClient``,
python-hl7's ``mllp_send``, ``passerelle send``), the Medplum-based FHIR server, SQLite files.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from listeners.mllp import AckInfo, parse_ack
from listeners.mllp.framing import FrameReader, frame
from tests.listeners.service.support import (
    PASSERELLE,
    SAMPLES,
    adt,
    bundle_posts,
    control_id_of,
    make_config,
    mllp_send_cli,
    passerelle,
    patients,
    run,
    running,
    sample,
    wait_until,
)
from tests.support.fhirserver import FhirServer

#: Samples whose sender asks for an accept ACK (MSH-15 AL): all but VXU (ER) and the batch.
ACKED_SAMPLES = sorted(
    p.name for p in SAMPLES.glob("*.hl7") if not p.name.startswith(("VXU", "batch"))
)
SAMPLE_PATIENT = ("urn:oid:1.2.250.1.999.1.1", "0012345678")  # PID-3 of the CHU-LYON samples


def assert_accepted(ack: AckInfo, message: bytes) -> None:
    assert ack.code in ("AA", "CA"), (ack.code, ack.texts)
    assert ack.acknowledged_id == control_id_of(message)


def queued_control_ids(queue_path: Path) -> set[str]:
    """Control ids stored in the queue file, read through a separate SQLite connection."""
    with sqlite3.connect(queue_path, timeout=30) as conn:
        return {row[0] for row in conn.execute("SELECT control_id FROM messages")}


def test_samples_are_acknowledged_after_commit_and_land_in_the_fhir_server(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    messages = [sample(name) for name in ACKED_SAMPLES]
    with running(config) as service:
        acks = service.send(messages)
        for ack, message in zip(acks, messages, strict=True):
            assert_accepted(ack, message)
            # Enhanced mode (MSH-15 AL): the accept ACK is CA, with a fresh MSH-10.
            assert ack.code == "CA"
            assert ack.header.control_id != control_id_of(message)
        # Each ACK meant "committed": another connection to the file sees every message.
        assert queued_control_ids(config.queue.path) >= {control_id_of(m) for m in messages}
        service.drained()
        absent = service.metrics().value("passerelle_deletes_not_found_total")
    posts = bundle_posts(fhir)
    assert len([r for r in posts if r["status"] == 200]) == len(messages)
    # The MFN^M02 sample's MDL DELETEs a PractitionerRole no earlier sample wrote: the
    # server answers that transaction 404 and the service delivers the rest of it again
    # (README "Delivering").
    assert [r["status"] for r in posts if r["status"] != 200] == [404]
    assert absent == 1
    found = fhir.search_by_identifier("Patient", *SAMPLE_PATIENT)
    assert len(found) == 1
    assert found[0]["name"][0]["family"] == "DUPONT"
    assert fhir.count("DiagnosticReport") >= 2  # the two ORU^R01 samples
    # MDM^T02 discharge summary; the imaging report (T02, then its T11 cancel: one);
    # the T01 notification of a dictated report. The T03 writes none.
    assert fhir.count("DocumentReference") == 3


def test_no_ack_before_the_message_is_committed(tmp_path: Path) -> None:
    """While another process holds the queue file's write lock, the ACK must wait."""
    config = make_config(tmp_path)
    with running(config) as service:
        assert service.send([adt("WARM-1")])[0].code == "AA"
        blocker = sqlite3.connect(config.queue.path, isolation_level=None, timeout=30)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            result: dict[str, object] = {}

            def send() -> None:
                result["ack"] = service.send([adt("BLOCKED-1")])[0]
                result["at"] = time.monotonic()

            sender = threading.Thread(target=send)
            sender.start()
            time.sleep(1.0)
            assert "ack" not in result, "ACK sent although the message could not be committed"
            released = time.monotonic()
            blocker.execute("COMMIT")
            sender.join(timeout=20)
        finally:
            blocker.close()
        ack = result["ack"]
        assert isinstance(ack, AckInfo)
        assert ack.code == "AA" and ack.acknowledged_id == "BLOCKED-1"
        assert float(result["at"]) >= released  # type: ignore[arg-type]
        assert "BLOCKED-1" in queued_control_ids(config.queue.path)


def test_without_a_fhir_url_bundles_go_to_the_output_folder(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    messages = [
        adt("FOLDER-1", mrn="F-1"),
        adt("FOLDER-2", mrn="F-2", event="A08"),
        sample("ORU_R01_lab-results.hl7"),
    ]
    with running(config) as service:
        # python-hl7's mllp_send, a third-party client, on one connection.
        acks = mllp_send_cli(service.mllp_port(), messages, tmp_path)
        assert [a.code for a in acks] == ["AA", "AA", "CA"]
        assert [a.acknowledged_id for a in acks] == [control_id_of(m) for m in messages]
        service.drained()
    out = config.destinations["default"].folder
    assert out == tmp_path / "data" / "out"
    files = sorted(out.rglob("*.json"))
    assert len(files) == 3
    by_message = {f.name.split("-", 2)[0] + "-" + f.name.split("-", 2)[1]: f for f in files}
    assert set(by_message) == {"FOLDER-1", "FOLDER-2", "LAB-ORU"}
    for path in files:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        # <folder>/<UTC day of reception>/<MSH-10>-<bundle id>.json
        assert path.parent.name == datetime.now(UTC).date().isoformat()
        assert path.name.endswith(f"-{bundle['id']}.json")
    first = json.loads(by_message["FOLDER-1"].read_text(encoding="utf-8"))
    patient = next(
        e["resource"] for e in first["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert patient["identifier"][0]["value"] == "F-1"


def test_passerelle_send_splits_a_batch_file_and_prints_the_acks(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    messages = [adt(f"BATCH-{i}", mrn=f"MRN-BATCH-{i}") for i in range(1, 4)]
    batch = tmp_path / "batch.hl7"
    batch.write_bytes(
        b"FHS|^~\\&|APP-A|FAC-A\rBHS|^~\\&|APP-A|FAC-A\r" + b"".join(messages) + b"BTS|3\rFTS|1\r"
    )
    with running(config) as service:
        result = passerelle("send", str(batch), "--port", str(service.mllp_port()))
        assert result.returncode == 0, result.stderr
        for i in range(1, 4):
            assert f"MSH-10 BATCH-{i}: AA" in result.stdout
            assert f"MSA|AA|BATCH-{i}" in result.stdout
        assert "3 message(s) sent" in result.stderr and "0 not accepted" in result.stderr
        service.drained()
    assert len(bundle_posts(fhir)) == 3
    assert all(patients(fhir, f"MRN-BATCH-{i}") for i in range(1, 4))


def test_a_retransmission_is_acknowledged_again_but_delivered_once(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    message = adt("RETX-1", mrn="RETX")
    other_sender = adt("RETX-1", mrn="RETX-B", application="APP-B", facility="FAC-B")
    with running(config) as service:
        first = service.send([message])[0]
        service.drained()
        # The sender did not see the ACK and sends again, on a new connection.
        again = service.send([message])[0]
        # Same MSH-10 from another sender: a different message.
        other = service.send([other_sender])[0]
        service.drained()
        metrics = service.metrics()
    for ack in (first, again, other):
        assert ack.code == "AA" and ack.acknowledged_id == "RETX-1"
    assert len(bundle_posts(fhir)) == 2
    assert len(patients(fhir, "RETX")) == 1 and len(patients(fhir, "RETX-B")) == 1
    assert metrics.value("passerelle_messages_duplicate_total") == 1
    assert metrics.value("passerelle_bundles_delivered_total") == 2


@pytest.mark.parametrize(
    ("msh9", "version", "code"),
    [
        ("ZZZ^Z01^ZZZ_Z01", "2.5.1", "200"),  # unknown message type
        ("ADT^A20^ADT_A20", "2.5.1", "201"),  # known type, trigger event not routed
        ("ADT^A01^ADT_A01", "9.9", "203"),  # unsupported version
    ],
)
def test_unsupported_messages_are_rejected_with_ar(
    tmp_path: Path, msh9: str, version: str, code: str
) -> None:
    config = make_config(tmp_path)
    message = adt("UNSUP-1", msh9=msh9, version=version)
    with running(config) as service:
        ack = service.send([message])[0]
        assert ack.code == "AR"
        assert ack.acknowledged_id == "UNSUP-1"
        assert ack.error_codes == (code,)
        assert any(segment.startswith("ERR|") for segment in ack.segments)
        # Nothing stored, nothing dead-lettered.
        assert service.depth() == 0
        assert service.service.queue.count_dead_letters() == 0
        assert service.metrics().value("passerelle_messages_acknowledged_total", code="AR") == 1
    listing = passerelle("dead-letters", "list", "--config", str(tmp_path / "passerelle.toml"))
    assert listing.returncode == 0 and listing.stdout.startswith("0 dead letter(s)")


def with_charset(message: bytes, charset: bytes) -> bytes:
    """``message`` with MSH-18 set to ``charset``."""
    msh, rest = message.split(b"\r", 1)
    fields = msh.split(b"|")
    fields += [b""] * (18 - len(fields))
    fields[17] = charset
    return b"|".join(fields) + b"\r" + rest


@pytest.mark.parametrize("charset", [b"KLINGON", b"UNDEFINED"])
def test_an_unusable_charset_is_rejected_with_ar_and_the_feed_goes_on(
    tmp_path: Path, charset: bytes
) -> None:
    # "UNDEFINED" (Python's codec that refuses everything) once raised inside the
    # listener: no ACK, the connection closed, and the sender would re-send forever.
    config = make_config(tmp_path)
    with running(config) as service:
        rejected, accepted = service.send([with_charset(adt("CS-1"), charset), adt("CS-2")])
        assert (rejected.code, rejected.acknowledged_id, rejected.error_codes) == (
            "AR",
            "CS-1",
            ("103",),
        )
        assert_accepted(accepted, adt("CS-2"))
        assert service.service.queue.count_dead_letters() == 0


def test_unsupported_as_dead_letters_then_list_show_retry_purge(tmp_path: Path) -> None:
    config_path = tmp_path / "passerelle.toml"
    config = make_config(tmp_path, {"mllp": {"on_unsupported": "dead-letter"}})
    assert config.mllp.on_unsupported == "dead-letter"
    message = adt("DL-UNSUP-1", msh9="ZZZ^Z01^ZZZ_Z01", family="Quillebeuf", given="Ombeline")
    with running(config) as service:
        ack = service.send([message])[0]
        assert ack.code == "AA" and ack.acknowledged_id == "DL-UNSUP-1"
        assert (
            service.metrics().value("passerelle_messages_dead_lettered_total", reason="unsupported")
            == 1
        )

        cfg = ("--config", str(config_path))
        listing = passerelle("dead-letters", "list", *cfg)
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.startswith("1 dead letter(s)")
        assert "control-id=DL-UNSUP-1" in listing.stdout
        assert "UnsupportedMessageError" in listing.stdout
        letter_id = listing.stdout.splitlines()[1].split()[0]

        shown = passerelle("dead-letters", "show", letter_id, *cfg)
        assert shown.returncode == 0, shown.stderr
        info = json.loads(shown.stdout)
        assert info["control_id"] == "DL-UNSUP-1"
        assert info["error"]["kind"] == "UnsupportedMessageError"
        assert info["error"]["hl7_error_code"] == "200"
        assert info["size"] == len(message)
        assert "Quillebeuf" not in shown.stdout and "PID|" not in shown.stdout

        with_payload = passerelle("dead-letters", "show", letter_id, "--payload", *cfg)
        assert with_payload.returncode == 0
        assert "Quillebeuf^Ombeline" in with_payload.stdout

        missing = passerelle("dead-letters", "show", "999999", *cfg)
        assert missing.returncode == 1 and "no dead letter" in missing.stderr

        retried = passerelle("dead-letters", "retry", letter_id, *cfg)
        assert retried.returncode == 0, retried.stderr
        # Queued again: the service takes it, fails to convert it again, dead-letters it anew.
        wait_until(
            lambda: (
                (letters := service.service.queue.list_dead_letters())
                and letters[0].id != int(letter_id)
            ),
            what="the retried message to come back as a new dead letter",
        )
        again = service.service.queue.list_dead_letters()
        assert len(again) == 1 and again[0].envelope.control_id == "DL-UNSUP-1"
        assert again[0].error["stage"] == "conversion"

        # A bare purge deletes nothing: it needs --older-than-days or an explicit --all.
        assert passerelle("dead-letters", "purge", *cfg).returncode == 2
        purged = passerelle("dead-letters", "purge", "--all", *cfg)
        assert purged.returncode == 0 and purged.stdout.startswith("1 dead letter(s) purged")
        assert passerelle("dead-letters", "list", *cfg).stdout.startswith("0 dead letter(s)")


def test_a_conversion_error_becomes_a_dead_letter_with_its_location(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    bad = adt("BAD-DOB-1", birth_date="19711341", family="Brindejonc")
    good = adt("GOOD-DOB-1", mrn="MRN-GOOD")
    with running(config) as service:
        acks = service.send([bad, good])
        # Commit mode: stored, so accepted; conversion happens afterwards.
        assert [a.code for a in acks] == ["AA", "AA"]
        service.drained()
        letters = service.service.queue.list_dead_letters()
        metrics = service.metrics()
    assert [letter.envelope.control_id for letter in letters] == ["BAD-DOB-1"]
    error = letters[0].error
    assert error["stage"] == "conversion"
    assert error["kind"] == "MappingError"
    assert error["location"] == "PID-7"
    assert error["template"].startswith("hl7v2/resources/Patient.j2:")
    assert metrics.value("passerelle_messages_dead_lettered_total", reason="conversion") == 1
    assert metrics.value("passerelle_bundles_delivered_total") == 1

    shown = passerelle(
        "dead-letters", "show", str(letters[0].id), "--config", str(tmp_path / "passerelle.toml")
    )
    info = json.loads(shown.stdout)
    assert info["error"]["location"] == "PID-7"
    assert "Patient.j2:" in info["error"]["template"]
    # The offending value (a birth date) and the message stay out of it without --payload.
    assert "19711341" not in shown.stdout and "Brindejonc" not in shown.stdout


def test_transient_fhir_failures_are_retried_after_retry_after(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    fhir.fail(503, count=2, retry_after="0.5")
    with running(config) as service:
        assert service.send([adt("TRANSIENT-1", mrn="MRN-T")])[0].code == "AA"
        wait_until(lambda: patients(fhir, "MRN-T"), what="the retried delivery")
        metrics = service.metrics()
    posts = bundle_posts(fhir)
    assert [r["status"] for r in posts] == [503, 503, 200]
    times = [datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in posts]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.45 for gap in gaps), gaps  # Retry-After honoured (backoff is 0.05 s)
    assert metrics.value("passerelle_deliveries_retried_total", reason="503") == 2
    assert metrics.value("passerelle_bundles_delivered_total") == 1


def test_a_rejected_bundle_is_dead_lettered_and_retry_delivers_it(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "business-rule", "diagnostics": "ward closed"}],
    }
    fhir.fail(422, outcome=outcome)
    cfg = ("--config", str(tmp_path / "passerelle.toml"))
    with running(config) as service:
        assert service.send([adt("REJ-1", mrn="MRN-REJ")])[0].code == "AA"
        service.drained()
        letters = service.service.queue.list_dead_letters()
        assert len(letters) == 1
        assert letters[0].error["stage"] == "delivery"
        assert letters[0].error["status"] == 422
        # The server's diagnostics may quote patient data: in the outcome (shown with
        # --payload), not in the reason that listings print.
        assert letters[0].error["reason"] == "destination default: HTTP 422 Unprocessable Entity"
        assert letters[0].error["outcome"] == outcome
        assert patients(fhir, "MRN-REJ") == []
        listing = passerelle("dead-letters", "list", *cfg)
        assert "RejectedDeliveryError" in listing.stdout and "HTTP 422" in listing.stdout
        assert "ward closed" not in listing.stdout

        retried = passerelle("dead-letters", "retry", "--all", *cfg)
        assert retried.returncode == 0 and "1 dead letter(s) queued again" in retried.stdout
        wait_until(lambda: patients(fhir, "MRN-REJ"), what="delivery of the retried message")
        assert service.service.queue.count_dead_letters() == 0


def test_dead_letters_cli_without_a_queue_is_a_usage_error(tmp_path: Path) -> None:
    config_path = tmp_path / "passerelle.toml"
    config_path.write_text('data_dir = "nowhere"\n')
    result = passerelle("dead-letters", "list", "--config", str(config_path))
    assert result.returncode == 2
    assert "no queue at" in result.stderr
    assert Path(PASSERELLE).name == "passerelle"


def test_enhanced_mode_sends_the_accept_ack_only_when_asked(
    tmp_path: Path, fhir: FhirServer
) -> None:
    """VXU sample: MSH-15 ER (accept ACK on errors only). Stored and delivered, no ACK."""
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    vxu = sample("VXU_V04_immunization.hl7")
    asks = adt("ENH-AL-1", mrn="MRN-ENH", accept_ack="AL", application_ack="NE")

    async def exchange(port: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = FrameReader(reader)
        writer.write(frame(vxu) + frame(asks))
        await writer.drain()
        replies = [await asyncio.wait_for(frames.read_frame(), 10)]
        with contextlib.suppress(TimeoutError):
            replies.append(await asyncio.wait_for(frames.read_frame(), 0.5))
        writer.close()
        return [r for r in replies if r is not None]

    with running(config) as service:
        replies = run(exchange(service.mllp_port()))
        service.drained()
        metrics = service.metrics()
    assert len(replies) == 1
    ack = parse_ack(replies[0])
    assert ack.code == "CA" and ack.acknowledged_id == "ENH-AL-1"
    assert fhir.count("Immunization") >= 1
    assert metrics.value("passerelle_messages_received_total") == 2
    # Counted: acknowledgements actually sent.
    assert metrics.value("passerelle_messages_acknowledged_total") == 1
    assert metrics.value("passerelle_ack_seconds_count") == 1
