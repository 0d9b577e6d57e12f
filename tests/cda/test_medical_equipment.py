"""The Medical Equipment section: supplied devices → DeviceUseStatement + Device."""

from __future__ import annotations

from typing import Any

from converter import Converter, ConverterConfig

from ._support import cda

SUPPLY = (
    '<supply classCode="SPLY" moodCode="{mood}">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.50" extension="2014-06-09"/>'
    '<id root="1.2.250.1.999.6" extension="{n}"/>'
    '<statusCode code="{status}"/>{time}<quantity value="1"/>{device}</supply>'
)
DEVICE = (
    '<participant typeCode="PRD"><participantRole classCode="MANU">'
    '<templateId root="2.16.840.1.113883.10.20.22.4.37"/>'
    '<id root="2.16.840.1.113883.3.3719" extension="(01)0088{n}"/>'
    '<playingDevice><code code="{code}" codeSystem="2.16.840.1.113883.6.96" '
    'displayName="{name}"/></playingDevice>'
    "<scopingEntity><desc>Bon Appareil SA</desc></scopingEntity>"
    "</participantRole></participant>"
)


def supply(
    n: int,
    code: str,
    name: str,
    *,
    mood: str = "EVN",
    status: str = "completed",
    time: str = "",
    device: bool = True,
) -> str:
    return SUPPLY.format(
        n=n,
        mood=mood,
        status=status,
        time=time,
        device=DEVICE.format(n=n, code=code, name=name) if device else "",
    )


def section(entries: str) -> str:
    return (
        '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.23" '
        'extension="2014-06-09"/><code code="46264-8" codeSystem="2.16.840.1.113883.6.1"/>'
        "<title>Medical equipment</title><text>Devices</text>"
        f"{entries}</section></component>"
    )


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_supplies_become_device_use_statements_of_their_devices() -> None:
    organizer = (
        '<entry><organizer classCode="CLUSTER" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.135"/>'
        '<code code="40388003" codeSystem="2.16.840.1.113883.6.96" displayName="Implant"/>'
        '<statusCode code="completed"/>'
        "<component>"
        + supply(1, "14106009", "cardiac pacemaker", time='<effectiveTime value="20240102"/>')
        + "</component><component>"
        + supply(
            2,
            "303406003",
            "upper GI prosthesis",
            status="aborted",
            time='<effectiveTime xsi:type="IVL_TS"><low value="20230101"/>'
            '<high value="20240101"/></effectiveTime>',
        )
        + "</component></organizer></entry>"
    )
    procedure = (
        '<entry><procedure classCode="PROC" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
        '<id root="1.2.250.1.999.7" extension="P1"/>'
        '<code code="103716009" codeSystem="2.16.840.1.113883.6.96" displayName="Stent"/>'
        '<statusCode code="completed"/><effectiveTime value="20240512"/></procedure></entry>'
    )
    body = section(
        organizer
        + "<entry>"
        + supply(3, "87405001", "cane")
        + "</entry>"
        + procedure
        + "<entry>"
        + supply(4, "58938008", "wheelchair", mood="INT")
        + "</entry>"
        + "<entry>"
        + supply(5, "", "", device=False)
        + "</entry>"
    )
    conversion = Converter(ConverterConfig()).convert_document(cda(body=body).encode())
    bundle = conversion.bundle

    devices = {d["id"]: d for d in resources(bundle, "Device")}
    statements = resources(bundle, "DeviceUseStatement")
    (patient,) = resources(bundle, "Patient")
    assert [s["identifier"][0]["value"] for s in statements] == ["1", "2", "3"]
    assert [s["status"] for s in statements] == ["completed", "stopped", "completed"]
    assert statements[0]["timingDateTime"] == "2024-01-02"
    assert statements[1]["timingPeriod"] == {"start": "2023-01-01", "end": "2024-01-01"}
    assert "timingDateTime" not in statements[2] and "timingPeriod" not in statements[2]
    used = [devices[s["device"]["reference"].split("/")[1]] for s in statements]
    assert [d["type"]["coding"][0]["code"] for d in used] == ["14106009", "303406003", "87405001"]
    assert used[0]["manufacturer"] == "Bon Appareil SA"
    assert used[0]["udiCarrier"] == [
        {"carrierHRF": "(01)00881", "issuer": "http://hl7.org/fhir/NamingSystem/fda-udi"}
    ]
    assert all(s["subject"] == {"reference": f"Patient/{patient['id']}"} for s in statements)
    (stent,) = resources(bundle, "Procedure")
    assert stent["code"]["coding"][0]["code"] == "103716009"

    (composition,) = resources(bundle, "Composition")
    (listed,) = [s for s in composition["section"] if s["code"]["coding"][0]["code"] == "46264-8"]
    assert [ref["reference"] for ref in listed["entry"]] == [
        *(f"DeviceUseStatement/{s['id']}" for s in statements),
        f"Procedure/{stent['id']}",
    ]
    warnings = "\n".join(conversion.warnings)
    assert "entry supply" in warnings and "moodCode INT" in warnings
    assert "names no device" in warnings
