"""Per-patient order: a patient's messages reach the FHIR server in arrival order, even with
several delivery workers, a slow server and other patients' traffic in between."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.listeners.service.support import (
    adt,
    bundle_posts,
    make_config,
    patients,
    running,
    send_mllp,
    wait_until,
)
from tests.support.fhirserver import FhirServer

EVENTS = ("A01", "A08", "A03")


def history_families(fhir: FhirServer, patient_id: str) -> list[str]:
    """The Patient's family name in each version, oldest first."""
    bundle: dict[str, Any] = fhir._json("GET", f"{fhir.base_url}/Patient/{patient_id}/_history")
    versions = [entry["resource"] for entry in bundle.get("entry", [])]
    versions.sort(key=lambda r: r["meta"]["lastUpdated"])
    return [r["name"][0]["family"] for r in versions]


def test_each_patients_messages_are_delivered_in_arrival_order(
    tmp_path: Path, fhir: FhirServer
) -> None:
    workers = 4
    # The first requests (the blockers) hold every worker for 1.5 s while the patients'
    # messages pile up in the queue; after them the server answers slower to earlier requests
    # (800 ms down to 50 ms): were a patient's messages delivered concurrently, a later update
    # would be applied before an earlier one.
    faults = [{"delayMs": 1500, "count": workers}]
    faults += [{"delayMs": max(50, 800 - 150 * i), "count": 1} for i in range(12)]
    fhir.control(faults=faults)
    config = make_config(tmp_path, {"delivery": {"workers": workers}}, fhir_url=fhir.base_url)
    mrns = [f"ORD-{n}" for n in range(4)]
    acks: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def one_patient(mrn: str, port: int) -> None:
        # A01, A08, A03 for one patient on one connection; each version renames the patient
        # so that the server's history tells the order in which the updates were applied.
        messages = [
            adt(f"{mrn}-{i}-{event}", event=event, mrn=mrn, family=f"{mrn}-v{i}")
            for i, event in enumerate(EVENTS, start=1)
        ]
        try:
            acks[mrn] = [a.code for a in send_mllp(port, messages)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with running(config) as service:
        port = service.mllp_port()
        blockers = [adt(f"BLOCK-{n}", mrn=f"BLOCK-{n}") for n in range(workers)]
        assert [a.code for a in service.send(blockers)] == ["AA"] * workers
        wait_until(lambda: len(bundle_posts(fhir)) == workers, what="the workers to be busy")
        # Interleaved traffic: one connection per patient, all at once.
        threads = [threading.Thread(target=one_patient, args=(m, port)) for m in mrns]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert len(bundle_posts(fhir)) == workers, "the patients' messages were not queued"
        service.drained(timeout=30)
        assert service.service.queue.count_dead_letters() == 0

    assert all(codes == ["AA", "AA", "AA"] for codes in acks.values()), acks
    posts = bundle_posts(fhir)
    assert len(posts) == workers + 3 * len(mrns)
    assert all(r["status"] == 200 for r in posts)
    for mrn in mrns:
        found = patients(fhir, mrn)
        assert len(found) == 1
        assert history_families(fhir, found[0]["id"]) == [f"{mrn}-v1", f"{mrn}-v2", f"{mrn}-v3"]
        assert found[0]["name"][0]["family"] == f"{mrn}-v3"


def test_interleaved_patients_are_delivered_concurrently(tmp_path: Path, fhir: FhirServer) -> None:
    """The ordering is per patient, not global: a slow patient does not hold up the others."""
    fhir.delay(1000, count=100)
    config = make_config(tmp_path, {"delivery": {"workers": 4}}, fhir_url=fhir.base_url)
    messages = [adt(f"PAR-{n}", mrn=f"PAR-{n}") for n in range(4)]
    with running(config) as service:
        assert [a.code for a in service.send(messages)] == ["AA"] * 4
        service.drained(timeout=30)
    posts = bundle_posts(fhir)
    assert len(posts) == 4
    # Four independent keys, four workers, 1 s each: the requests overlapped (one after the
    # other, the last would arrive 3 s after the first).
    times = sorted(datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in posts)
    assert (times[-1] - times[0]).total_seconds() < 2.0
