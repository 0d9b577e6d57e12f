"""Routes: senders routed to their own destination, template overrides and id namespace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from converter import Converter, ConverterConfig
from tests.listeners.service.support import (
    adt,
    bundle_posts,
    make_config,
    patients,
    running,
)
from tests.support.fhirserver import FhirServer

HEADER = "source_code,source_system,target_code,target_display,target_system,comment\n"
GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"


def gender_override(directory: Path, female_as: str) -> Path:
    """An override directory whose AdministrativeSex map turns F into ``female_as``."""
    maps = directory / "codemaps"
    maps.mkdir(parents=True)
    (maps / "AdministrativeSex.csv").write_text(
        HEADER + f"F,HL70001,{female_as},{female_as.title()},{GENDER_SYSTEM},\n",
        encoding="utf-8",
    )
    return directory


def bundles_in(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.rglob("*.json"))]


def patient_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )


def test_two_senders_two_destinations_never_mix(tmp_path: Path, fhir: FhirServer) -> None:
    lab_maps = gender_override(tmp_path / "maps-lab", "other")
    clinic_maps = gender_override(tmp_path / "maps-clinic", "unknown")
    routes = f"""
[destinations.lab]
url = "{fhir.base_url}"
timeout = 10

[destinations.clinic]
folder = "clinic-out"

[[routes]]
name = "lab"
sending_facility = "FAC-LAB"
destination = "lab"
converter = {{ templates = ["{lab_maps}"], id_namespace = "lab" }}

[[routes]]
name = "clinic"
sending_facility = "FAC-CLINIC"
destination = "clinic"
converter = {{ templates = ["{clinic_maps}"], id_namespace = "clinic" }}
"""
    config = make_config(tmp_path, extra=routes)
    assert [r.name for r in config.routes] == ["lab", "clinic"]
    # The same MRN (same assigning authority) from both senders, plus sender-specific ones.
    lab = [
        adt("LAB-1", mrn="SHARED-1", application="LIS", facility="FAC-LAB"),
        adt("LAB-2", mrn="LAB-ONLY", application="LIS", facility="FAC-LAB"),
    ]
    clinic = [
        adt("CLI-1", mrn="SHARED-1", application="EHR", facility="FAC-CLINIC"),
        adt("CLI-2", mrn="CLINIC-ONLY", application="EHR", facility="FAC-CLINIC"),
    ]
    unrouted = [adt("OTHER-1", mrn="OTHER-ONLY", application="X", facility="FAC-OTHER")]
    with running(config) as service:
        acks = service.send([lab[0], clinic[0], unrouted[0], lab[1], clinic[1]])
        assert [a.code for a in acks] == ["AA"] * 5
        service.drained()
        assert service.service.queue.count_dead_letters() == 0
        metrics = service.metrics()
    assert metrics.value("passerelle_bundles_delivered_total", destination="lab") == 2
    assert metrics.value("passerelle_bundles_delivered_total", destination="clinic") == 2
    assert metrics.value("passerelle_bundles_delivered_total", destination="default") == 1

    # The FHIR server has the lab's messages only, converted with the lab's code map.
    assert len(bundle_posts(fhir)) == 2
    assert patients(fhir, "CLINIC-ONLY") == [] and patients(fhir, "OTHER-ONLY") == []
    (lab_shared,) = patients(fhir, "SHARED-1")
    assert len(patients(fhir, "LAB-ONLY")) == 1
    assert lab_shared["gender"] == "other"

    # The clinic's folder has the clinic's messages only, with the clinic's code map.
    clinic_bundles = bundles_in(tmp_path / "clinic-out")
    assert sorted(patient_of(b)["identifier"][0]["value"] for b in clinic_bundles) == [
        "CLINIC-ONLY",
        "SHARED-1",
    ]
    assert {patient_of(b)["gender"] for b in clinic_bundles} == {"unknown"}
    # The unrouted sender: default destination (the data folder), built-in code map.
    default_bundles = bundles_in(config.destinations["default"].folder)
    assert [patient_of(b)["identifier"][0]["value"] for b in default_bundles] == ["OTHER-ONLY"]
    assert patient_of(default_bundles[0])["gender"] == "female"

    # Same MRN, two senders: two different Patient ids (the routes' id namespaces) ...
    clinic_shared = next(
        patient_of(b)
        for b in clinic_bundles
        if patient_of(b)["identifier"][0]["value"] == "SHARED-1"
    )
    assert clinic_shared["id"] != lab_shared["id"]
    # ... where, without them, the assigning authority alone would have merged them.
    plain = Converter(ConverterConfig(validate=False))
    ids = {patient_of(plain.convert(m)[0].bundle)["id"] for m in (lab[0], clinic[0])}
    assert len(ids) == 1 and lab_shared["id"] not in ids
