"""Retransmissions end to end: only a true one is dropped (MLLP in, real service, bundles out).

A sender may reuse an MSH-10 for a different message (its counter reset by a restart or a
reinstall, a per-day sequence). That message once got AA and was silently dropped — no
bundle, no dead letter — because duplicate detection compared (sender HD.1, MSH-10) only.
It now compares the content too (MSH-7 aside) and every HD component of MSH-3/MSH-4.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from listeners.config import ServiceConfig
from tests.listeners.service.support import (
    adt,
    bundle_posts,
    make_config,
    patients,
    running,
)
from tests.support.fhirserver import FhirServer


def with_msh7(message: bytes, stamp: str) -> bytes:
    """``message`` with MSH-7 replaced (an engine re-stamping the header on resend)."""
    msh, rest = message.split(b"\r", 1)
    fields = msh.split(b"|")
    fields[6] = stamp.encode()
    return b"|".join(fields) + b"\r" + rest


def delivered_families(config: ServiceConfig) -> list[str]:
    """Patient family names of the bundles the folder sink wrote, sorted."""
    folder = config.destinations["default"].folder
    assert folder is not None
    families = []
    for path in sorted(folder.rglob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Patient":
                families.append(entry["resource"]["name"][0]["family"])
    return sorted(families)


def test_another_message_reusing_a_control_id_is_delivered(
    tmp_path: Path, captured_text_logs: io.StringIO
) -> None:
    config = make_config(tmp_path)
    first = adt("REUSE-1", family="Alphaname", mrn="MRN-ALPHA")
    # The sender restarted, its counter too: another patient, another event, same MSH-10.
    second = with_msh7(
        adt("REUSE-1", event="A08", family="Betaname", given="Bob", mrn="MRN-BETA"),
        "20240315091500+0100",
    )
    with running(config) as service:
        acks = service.send([first]) + service.send([second])
        assert [(a.code, a.acknowledged_id) for a in acks] == [("AA", "REUSE-1")] * 2
        service.drained()
        metrics = service.metrics()
        assert service.service.queue.count_dead_letters() == 0
    assert delivered_families(config) == ["Alphaname", "Betaname"]
    assert metrics.value("passerelle_messages_duplicate_total") == 0
    assert metrics.value("passerelle_bundles_delivered_total") == 2
    # A WARNING naming the sender (in full) and the control id, never the content.
    warnings = [
        line for line in captured_text_logs.getvalue().splitlines() if "control id reused" in line
    ]
    assert len(warnings) == 1, warnings
    assert "WARNING" in warnings[0] and "control_id=REUSE-1" in warnings[0]
    assert "sender=mllp/APP-A|FAC-A" in warnings[0]
    assert not any(value in warnings[0] for value in ("Betaname", "MRN-BETA", "PID"))


def test_a_true_retransmission_is_still_delivered_once(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    message = adt("RETX-2", family="Gammaname", mrn="MRN-GAMMA")
    # Through another engine: LF line ends, and MSH-7 stamped again on resend.
    relayed = with_msh7(message, "20240314090000+0100").replace(b"\r", b"\n")
    with running(config) as service:
        first = service.send([message])[0]
        service.drained()
        again = service.send([message, relayed])  # the sender saw no ACK: on a new connection
        service.drained()
        metrics = service.metrics()
    assert [a.code for a in (first, *again)] == ["AA", "AA", "AA"]
    assert all(a.acknowledged_id == "RETX-2" for a in (first, *again))
    assert delivered_families(config) == ["Gammaname"]
    assert metrics.value("passerelle_messages_duplicate_total") == 2
    assert metrics.value("passerelle_bundles_delivered_total") == 1


def test_facilities_sharing_a_namespace_id_are_different_senders(
    tmp_path: Path, captured_text_logs: io.StringIO
) -> None:
    """MSH-4 ``FAC^1.2.3^ISO`` and ``FAC^9.9.9^ISO``: HD.1 alike, universal ids not."""
    config = make_config(tmp_path)
    one = adt("HD-1", facility="FAC^1.2.3^ISO", family="Deltaname", mrn="MRN-DELTA")
    other = with_msh7(
        adt("HD-1", facility="FAC^9.9.9^ISO", family="Epsilonname", mrn="MRN-EPS"),
        "20240314083513+0100",
    )
    with running(config) as service:
        acks = service.send([one, other])
        assert [a.code for a in acks] == ["AA", "AA"]
        service.drained()
        metrics = service.metrics()
    assert delivered_families(config) == ["Deltaname", "Epsilonname"]
    assert metrics.value("passerelle_messages_duplicate_total") == 0
    # Not one sender reusing a control id: two senders, no warning.
    assert "control id reused" not in captured_text_logs.getvalue()


def test_a_message_without_msh10_is_rejected_and_the_feed_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running(config) as service:
        rejected, accepted = service.send([adt("", mrn="MRN-NOID"), adt("AFTER-1", mrn="MRN-OK")])
        assert (rejected.code, rejected.acknowledged_id, rejected.error_codes) == (
            "AR",
            "",
            ("101",),
        )
        assert any(s.startswith("ERR||MSH^1^10|101^") for s in rejected.segments), rejected.segments
        assert (accepted.code, accepted.acknowledged_id) == ("AA", "AFTER-1")
        service.drained()
        # Nothing stored for it: neither delivered nor dead-lettered.
        assert service.service.queue.count_dead_letters() == 0
        metrics = service.metrics()
    assert metrics.value("passerelle_messages_acknowledged_total", code="AR") == 1
    assert metrics.value("passerelle_bundles_delivered_total") == 1


def test_two_messages_in_one_mllp_block_are_rejected_and_the_feed_goes_on(
    tmp_path: Path,
) -> None:
    # One ACK would name the first message only: the second's control id would never be
    # acknowledged, its failure never reported, its resend never recognised.
    config = make_config(tmp_path)
    with running(config) as service:
        block = adt("TWO-1", mrn="MRN-TWO-1") + adt("TWO-2", mrn="MRN-TWO-2")
        rejected, accepted = service.send([block, adt("ONE-1", mrn="MRN-ONE")])
        assert (rejected.code, rejected.acknowledged_id, rejected.error_codes) == (
            "AR",
            "TWO-1",
            ("100",),
        )
        assert any("second MSH at segment 5" in text for text in rejected.texts), rejected.texts
        assert (accepted.code, accepted.acknowledged_id) == ("AA", "ONE-1")
        service.drained()
        assert service.service.queue.count_dead_letters() == 0
        metrics = service.metrics()
    assert metrics.value("passerelle_bundles_delivered_total") == 1


def test_both_messages_reach_the_fhir_server(tmp_path: Path, fhir: FhirServer) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    first = adt("REUSE-F", family="Zetaname", mrn="MRN-ZETA")
    second = with_msh7(adt("REUSE-F", family="Etaname", mrn="MRN-ETA"), "20240316101010+0100")
    with running(config) as service:
        acks = service.send([first, second, first])  # the last: a true retransmission
        assert [a.code for a in acks] == ["AA", "AA", "AA"]
        service.drained()
    assert len(bundle_posts(fhir)) == 2
    assert len(patients(fhir, "MRN-ZETA")) == 1 and len(patients(fhir, "MRN-ETA")) == 1
