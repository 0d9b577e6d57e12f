"""``ack_after = "delivery"``: the ACK waits for the FHIR server's answer."""

from __future__ import annotations

import time
from pathlib import Path

from listeners.config import ServiceConfig
from listeners.mllp import AckInfo
from tests.listeners.service.support import (
    adt,
    bundle_posts,
    make_config,
    patients,
    running,
    wait_until,
)
from tests.support.fhirserver import FhirServer


def delivery_config(tmp_path: Path, fhir: FhirServer, timeout: float = 10.0) -> ServiceConfig:
    return make_config(
        tmp_path,
        {"mllp": {"ack_after": "delivery", "delivery_ack_timeout": timeout}},
        fhir_url=fhir.base_url,
    )


def test_aa_only_once_the_server_accepted_the_bundle(tmp_path: Path, fhir: FhirServer) -> None:
    fhir.delay(700, count=1)
    with running(delivery_config(tmp_path, fhir)) as service:
        started = time.monotonic()
        ack = service.send([adt("DLV-OK-1", mrn="MRN-DLV-OK")])[0]
        elapsed = time.monotonic() - started
        # Checked right after the ACK, without waiting: the server already has the patient.
        assert patients(fhir, "MRN-DLV-OK")
        assert ack.code == "AA" and ack.acknowledged_id == "DLV-OK-1"
        assert elapsed >= 0.6  # the ACK waited for the slow server
        assert [r["status"] for r in bundle_posts(fhir)] == [200]


def test_ae_carries_the_servers_operation_outcome_when_it_rejects(
    tmp_path: Path, fhir: FhirServer
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "business-rule",
                "diagnostics": "Encounter rejected: ward CARDIO is closed",
            }
        ],
    }
    fhir.fail(422, outcome=outcome)
    with running(delivery_config(tmp_path, fhir)) as service:
        ack = service.send([adt("DLV-REJ-1", mrn="MRN-DLV-REJ")])[0]
        assert ack.code == "AE"
        assert ack.acknowledged_id == "DLV-REJ-1"
        assert ack.error_codes == ("207",)
        assert any("Encounter rejected: ward CARDIO is closed" in t for t in ack.texts), ack.texts
        letters = service.service.queue.list_dead_letters()
        assert [letter.envelope.control_id for letter in letters] == ["DLV-REJ-1"]
        metrics = service.metrics()
        assert metrics.value("passerelle_messages_acknowledged_total", code="AE") == 1
    assert patients(fhir, "MRN-DLV-REJ") == []


def test_ae_when_the_conversion_fails(tmp_path: Path, fhir: FhirServer) -> None:
    with running(delivery_config(tmp_path, fhir)) as service:
        ack = service.send([adt("DLV-CONV-1", birth_date="20241341")])[0]
    assert ack.code == "AE"
    # A data type error at its place (ERR-2 PID^1^7, ERR-3 102), as the dead letter says.
    assert ack.error_codes == ("102",)
    assert any(s.startswith("ERR||PID^1^7|102^") for s in ack.segments), ack.segments
    assert any("MappingError" in t and "timestamp" in t for t in ack.texts), ack.texts
    assert not any("20241341" in t for t in ack.texts)
    assert bundle_posts(fhir) == []


def test_ae_after_the_timeout_then_delivered_anyway(tmp_path: Path, fhir: FhirServer) -> None:
    fhir.delay(2500, count=1)
    with running(delivery_config(tmp_path, fhir, timeout=0.5)) as service:
        started = time.monotonic()
        ack = service.send([adt("DLV-SLOW-1", mrn="MRN-DLV-SLOW")])[0]
        elapsed = time.monotonic() - started
        assert ack.code == "AE" and ack.acknowledged_id == "DLV-SLOW-1"
        assert ack.error_codes == ("207",)
        assert any("not confirmed in time" in t for t in ack.texts)
        assert 0.4 <= elapsed < 2.4  # before the server answered (2.5 s)
        # Stored all the same: delivered once the server answers.
        wait_until(lambda: patients(fhir, "MRN-DLV-SLOW"), what="the late delivery")
    assert len(bundle_posts(fhir)) == 1


def test_transient_failures_then_aa(tmp_path: Path, fhir: FhirServer) -> None:
    fhir.fail(503, count=2)
    with running(delivery_config(tmp_path, fhir)) as service:
        ack = service.send([adt("DLV-RETRY-1", mrn="MRN-DLV-RETRY")])[0]
    assert ack.code == "AA"
    assert [r["status"] for r in bundle_posts(fhir)] == [503, 503, 200]


def test_retransmissions_get_the_same_answer_and_are_not_delivered_again(
    tmp_path: Path, fhir: FhirServer
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": "bad coding"}],
    }
    fhir.fail(422, outcome=outcome)
    rejected = adt("DLV-DUP-REJ", mrn="MRN-DLV-DUP-REJ")
    accepted = adt("DLV-DUP-OK", mrn="MRN-DLV-DUP-OK")
    with running(delivery_config(tmp_path, fhir)) as service:
        first = service.send([rejected, accepted])
        # The sender did not get (or did not trust) the answers and sends both again.
        again = service.send([rejected, accepted])
        metrics = service.metrics()
    assert [a.code for a in first] == ["AE", "AA"]
    # A rejected message stays rejected: an AA would tell the sender it was delivered.
    assert [a.code for a in again] == ["AE", "AA"]
    assert any("bad coding" in t for t in again[0].texts)
    assert metrics.value("passerelle_messages_duplicate_total") == 2
    assert [r["status"] for r in bundle_posts(fhir)] == [422, 200]


def test_a_retransmitted_conversion_failure_names_the_field_again(
    tmp_path: Path, fhir: FhirServer
) -> None:
    # The original's AE says where the fault is (ERR-2); the retransmission's answer is
    # rebuilt from the dead letter and used to drop it, leaving the sender's team a code
    # without a place.
    failing = adt("DLV-DUP-LOC", birth_date="20241341")
    with running(delivery_config(tmp_path, fhir)) as service:
        first = service.send([failing])[0]
        again = service.send([failing])[0]

    def err2(ack: AckInfo) -> list[str]:
        return [s.split("|")[2] for s in ack.segments if s.startswith("ERR|")]

    assert (first.code, again.code) == ("AE", "AE")
    assert err2(first) == ["PID^1^7"], first.segments
    assert err2(again) == err2(first), again.segments


def test_enhanced_mode_gets_ca_once_stored_without_waiting_for_delivery(
    tmp_path: Path, fhir: FhirServer
) -> None:
    # Table 0008: CA committed, CE not committed. An enhanced-mode ACK is an accept ACK,
    # about the commit, whatever ack_after says: a CE for a stored message would make the
    # sender send it again, and each resend wait for the delivery again.
    fhir.delay(3000, count=1)
    with running(delivery_config(tmp_path, fhir, timeout=0.5)) as service:
        slow = adt("DLV-ENH-1", mrn="MRN-DLV-ENH1", accept_ack="AL", application_ack="NE")
        [ack] = service.send([slow])
        assert (ack.code, ack.acknowledged_id, ack.error_codes) == ("CA", "DLV-ENH-1", ())
        # Answered before the server had it (it answers after 3 s).
        assert patients(fhir, "MRN-DLV-ENH1") == []
        wait_until(lambda: patients(fhir, "MRN-DLV-ENH1"), what="the delivery")
        # A message that will fail for good is committed too (it becomes a dead letter).
        failing = adt("DLV-ENH-2", birth_date="20241341", accept_ack="AL", application_ack="NE")
        assert [a.code for a in service.send([failing])] == ["CA"]
        wait_until(lambda: service.service.queue.count_dead_letters() == 1, what="the dead letter")
        # Resent: the same answer, not a CE.
        assert [a.code for a in service.send([failing])] == ["CA"]


def test_original_mode_unsupported_dead_letter_is_not_an_aa(
    tmp_path: Path, fhir: FhirServer
) -> None:
    # on_unsupported = "dead-letter" stores the message, but it will never be delivered:
    # with ack_after = "delivery" an AA would say the FHIR server has it.
    config = make_config(
        tmp_path,
        {"mllp": {"ack_after": "delivery", "on_unsupported": "dead-letter"}},
        fhir_url=fhir.base_url,
    )
    unsupported = adt("DLV-UNSUP-1", msh9="ZZZ^Z01^ZZZ_Z01")
    with running(config) as service:
        [ack] = service.send([unsupported])
        assert (ack.code, ack.error_codes) == ("AE", ("200",))
        assert any("dead letter" in t for t in ack.texts), ack.texts
        assert service.service.queue.count_dead_letters() == 1
        # A retransmission gets the same answer.
        [again] = service.send([unsupported])
        assert (again.code, again.error_codes) == ("AE", ("200",))
    assert bundle_posts(fhir) == []
