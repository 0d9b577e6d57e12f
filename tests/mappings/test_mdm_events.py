"""Medical document notifications without content (MDM^T01, T03, T05, T07, T09, T11;
structure MDM_T01, HL7 v2 chapter 9) beside those with content (T02 … T10, MDM_T02).

A bundle PUTs whole resources, so a DocumentReference written from a notification would
replace the content a T02 stored with a placeholder. The root writes it only when that
loses nothing still valid: for a new document (T01, T05, T09, a T07 with its own number)
and for a cancel (T11, TXA-19 CA), which makes the stored DocumentReference — same identity,
TXA-12 — entered-in-error. A status change of a stored document (T03) is not written, with
a warning. Until these events were routed, every message here was refused (AR 201)."""

from __future__ import annotations

from typing import Any

import pytest

from converter import Converter, MappingError
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import segment
from tests.support.r4validator import R4Validator

CHU = "CHU-LYON&1.2.250.1.999.1.1&ISO"
RIS = "RIS-HELIOS^1.2.250.1.999.1.50^ISO"
DUMAS = "10110234566^DUMAS^Isabelle^^^Dr^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS"
#: Synthetic unique document numbers (invented): a report and the one it relates to.
REPORT = f"CR-RAD-2024-0918-0215^{RIS}"
PARENT = f"CR-RAD-2024-0911-0102^{RIS}"
CONTENT_EVENTS = ("T02", "T04", "T06", "T08", "T10")
ALTERNATE = "http://hl7.org/fhir/StructureDefinition/alternate-codes"


def txa(**fields: str) -> dict[int, str]:
    """The TXA of an imaging report; ``t19="CA"`` sets TXA-19, an empty value clears it."""
    base = {
        1: "1",
        2: "DI^Imagerie diagnostique^HL70270",
        3: "TX",
        4: "20240918094500+0200",
        5: DUMAS,
        6: "20240918110000+0200",
        9: DUMAS,
        12: REPORT,
        17: "AU",
        18: "U",
        19: "AV",
        25: "Scanner thoracique",
    }
    base.update({int(key[1:]): value for key, value in fields.items()})
    return {k: v for k, v in base.items() if v}


def message(event: str, fields: dict[int, str] | None = None, *, control_id: str = "") -> bytes:
    """An MDM (v2.6) about an invented patient; the events with content carry two TX OBX."""
    structure = "MDM_T02" if event in CONTENT_EVENTS else "MDM_T01"
    lines = [
        "MSH|^~\\&|RIS-HELIOS|CHU-LYON^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT|20240918143512+0200||"
        f"MDM^{event}^{structure}|{control_id or 'MDM-' + event}|P|2.6|||AL|NE|FRA|UNICODE UTF-8",
        f"EVN|{event}|20240918143512+0200",
        segment("PID", {1: "1", 3: f"0012398810^^^{CHU}^MR", 5: "GIRARD^Chloé^^^Mme^^L", 8: "F"}),
        segment("PV1", {1: "1", 2: "O", 19: f"2024009215^^^{CHU}^VN"}),
        segment("TXA", fields if fields is not None else txa()),
    ]
    if event in CONTENT_EVENTS:
        code = "18748-4^Diagnostic imaging study^LN"
        lines += [
            f"OBX|1|TX|{code}||Scanner thoracique sans injection.||||||F",
            f"OBX|2|TX|{code}||Nodule de 6 mm, d'allure bénigne.||||||F",
        ]
    return ("\r".join(lines) + "\r").encode("utf-8")


def convert(
    converter: Converter, r4validator: R4Validator, data: bytes
) -> tuple[dict[str, Any], tuple[str, ...]]:
    conversion = converter.convert_message(data)
    assert conversion.root_template == "hl7v2/messages/MDM_T02.j2"
    assert r4validator.validate(conversion.bundle) == []
    # Inside a Bundle the validator skips each resource's own invariants: check entries too.
    for entry in conversion.bundle["entry"]:
        assert r4validator.validate(entry["resource"]) == [], entry["resource"]["resourceType"]
    return conversion.bundle, conversion.warnings


def documents(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    ]


def stored_report(converter: Converter, r4validator: R4Validator) -> dict[str, Any]:
    """The DocumentReference a T02 of the report writes (with its content)."""
    (document,) = documents(convert(converter, r4validator, message("T02"))[0])
    assert document["content"][0]["attachment"]["data"]
    return document


# --- a notification about a new document is written -----------------------------------------

NEW_DOCUMENT_CASES = [
    # (event, TXA overrides, relatesTo code, why)
    ("T01", {}, None, "original document notification: nothing stored yet"),
    ("T01", {"t13": PARENT}, "appends", "an original document grouped under a parent"),
    ("T05", {"t13": PARENT}, "appends", "addendum: a new document appended to its parent"),
    ("T09", {"t13": PARENT}, "replaces", "replacement: a new document, its parent obsolete"),
    ("T09", {}, None, "a replacement naming no parent is still a new document"),
    ("T07", {"t13": PARENT}, "replaces", "edit with its own number: replaces the original"),
]


@pytest.mark.parametrize(
    ("event", "fields", "relation", "why"),
    NEW_DOCUMENT_CASES,
    ids=[f"{c[0]}-{'parent' if c[1] else 'no-parent'}" for c in NEW_DOCUMENT_CASES],
)
def test_a_new_document_is_written_with_a_placeholder_content(
    converter: Converter,
    r4validator: R4Validator,
    event: str,
    fields: dict[str, str],
    relation: str | None,
    why: str,
) -> None:
    bundle, warnings = convert(converter, r4validator, message(event, txa(**fields)))
    (document,) = documents(bundle)
    assert not warnings, why
    # Same identity as the document a content message of TXA-12 writes.
    assert document["id"] == stored_report(converter, r4validator)["id"]
    assert document["masterIdentifier"] == {
        "system": "urn:oid:1.2.250.1.999.1.50",
        "value": "CR-RAD-2024-0918-0215",
    }
    assert document["status"] == "current"
    assert document["docStatus"] == "final"
    # One attachment describing the document: TXA-3 type, TXA-25 title, TXA-6 creation.
    assert document["content"] == [
        {
            "attachment": {
                "contentType": "text/plain",
                "title": "Scanner thoracique",
                "creation": "2024-09-18T11:00:00+02:00",
            }
        }
    ]
    related = [r["code"] for r in document.get("relatesTo", [])]
    assert related == ([relation] if relation else []), why


# --- a cancel is written on the stored document's identity ----------------------------------

CANCEL_CASES = [
    # (event, TXA-19, status, v2 code kept beside it, why)
    ("T11", "CA", "entered-in-error", "CA", "cancel notification, TXA-19 canceled"),
    ("T11", "UN", "entered-in-error", None, "the event states it, whatever TXA-19 says"),
    ("T11", "", "entered-in-error", None, "a cancel without TXA-19"),
    ("T03", "CA", "entered-in-error", "CA", "a status change to canceled"),
    ("T07", "CA", "entered-in-error", "CA", "an edit notification that cancels"),
]


@pytest.mark.parametrize(
    ("event", "availability", "status", "v2_code", "why"),
    CANCEL_CASES,
    ids=[f"{c[0]}-{c[1] or 'empty'}" for c in CANCEL_CASES],
)
def test_a_cancel_makes_the_stored_document_entered_in_error(
    converter: Converter,
    r4validator: R4Validator,
    event: str,
    availability: str,
    status: str,
    v2_code: str | None,
    why: str,
) -> None:
    stored = stored_report(converter, r4validator)
    bundle, warnings = convert(converter, r4validator, message(event, txa(t19=availability)))
    (document,) = documents(bundle)
    assert document["id"] == stored["id"], why
    assert document["status"] == status, why
    codes = [
        coding["code"]
        for extension in document.get("_status", {}).get("extension", [])
        if extension["url"] == ALTERNATE
        for coding in extension["valueCodeableConcept"]["coding"]
    ]
    assert codes == ([v2_code] if v2_code else []), why
    # The message has no content: the stored one is replaced, and a warning says so.
    assert "data" not in document["content"][0]["attachment"]
    assert any("cancels the document" in w and "entered-in-error" in w for w in warnings)
    # Everything else is the stored document's description.
    for element in ("masterIdentifier", "type", "subject", "date", "author", "description"):
        assert document[element] == stored[element], element


def test_a_cancel_without_document_number_is_refused(converter: Converter) -> None:
    with pytest.raises(MappingError) as caught:
        converter.convert_message(message("T11", txa(t12="", t19="CA")))
    assert caught.value.reason.endswith("of the document to cancel is missing")
    assert caught.value.location == "TXA-12"
    assert caught.value.hl7_error_code == "101"


# --- a status change of a stored document is not written ------------------------------------

KEPT_CASES = [
    # (event, TXA overrides, why)
    ("T03", {"t17": "LA"}, "status change (legal authentication): the content is kept"),
    ("T03", {"t18": "R", "t13": PARENT}, "confidentiality change of an addendum"),
    ("T03", {"t19": "OB"}, "obsolete: its content stays history, its replacement says so"),
    ("T07", {}, "edit notification without a number of its own"),
    ("T09", {"t13": REPORT}, "a replacement naming itself as its parent"),
    ("T05", {"t13": REPORT}, "an addendum naming itself as its parent"),
]


@pytest.mark.parametrize(
    ("event", "fields", "why"), KEPT_CASES, ids=[f"{c[0]}-{c[2][:24]}" for c in KEPT_CASES]
)
def test_a_status_change_without_content_keeps_the_stored_document(
    converter: Converter,
    r4validator: R4Validator,
    event: str,
    fields: dict[str, str],
    why: str,
) -> None:
    bundle, warnings = convert(converter, r4validator, message(event, txa(**fields)))
    assert documents(bundle) == [], why
    (warning,) = [w for w in warnings if "DocumentReference" in w]
    assert warning.startswith(f"MDM^{event} without content (OBX): the DocumentReference of")
    assert "is not applied" in warning
    # The rest of the message is converted as usual.
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"MessageHeader", "Patient", "Encounter", "Provenance"} <= kinds


def test_a_notification_that_carries_content_is_written_whole(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = message("T03", txa(t17="LA")) + (
        b"OBX|1|TX|18748-4^Diagnostic imaging study^LN||Scanner thoracique sans injection.||||||F\r"
    )
    bundle, warnings = convert(converter, r4validator, data)
    (document,) = documents(bundle)
    assert document["docStatus"] == "final"
    assert document["content"][0]["attachment"]["contentType"] == "text/plain; charset=utf-8"
    assert not warnings


# --- events with content keep their mapping -------------------------------------------------


@pytest.mark.parametrize(
    ("event", "relation"),
    [
        ("T02", "appends"),
        ("T04", "appends"),
        ("T06", "appends"),
        ("T08", "replaces"),
        ("T10", "replaces"),
    ],
)
def test_events_with_content_relate_to_their_parent(
    converter: Converter, r4validator: R4Validator, event: str, relation: str
) -> None:
    bundle, _ = convert(converter, r4validator, message(event, txa(t13=PARENT)))
    (document,) = documents(bundle)
    assert [r["code"] for r in document["relatesTo"]] == [relation]
    assert document["relatesTo"][0]["target"]["identifier"]["value"] == "CR-RAD-2024-0911-0102"
    assert document["status"] == "current"


# --- the placeholder ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "attachment"),
    [
        (
            {"t25": "", "t16": "CR_0012398810.rtf", "t3": "AP"},
            {"contentType": "application/octet-stream", "title": "CR_0012398810.rtf"},
        ),
        ({"t25": "", "t3": "FT"}, {"contentType": "text/plain", "title": "Imagerie diagnostique"}),
        (
            {"t25": "", "t3": "", "t6": "", "t2": "DI"},
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                        "valueCode": "unknown",
                    }
                ]
            },
        ),
    ],
    ids=["file-name", "document-type-text", "nothing-known"],
)
def test_placeholder_describes_what_txa_gives(
    converter: Converter,
    r4validator: R4Validator,
    fields: dict[str, str],
    attachment: dict[str, Any],
) -> None:
    bundle, _ = convert(converter, r4validator, message("T01", txa(**fields)))
    (document,) = documents(bundle)
    found = dict(document["content"][0]["attachment"])
    found.pop("creation", None)
    assert found == attachment


# --- on a FHIR server: updated, not erased --------------------------------------------------


def deliver(converter: Converter, server: FhirServer, data: bytes) -> None:
    bundle = converter.convert_message(data).bundle
    server.transact(bundle)


def test_on_a_fhir_server_a_status_change_keeps_the_content_and_a_cancel_marks_it(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    deliver(converter, fhir_server, message("T02", txa(t17="PA", t19="UN"), control_id="S-1"))
    (stored,) = fhir_server.search("DocumentReference")["entry"]
    document_id = stored["resource"]["id"]
    content = stored["resource"]["content"]
    assert content[0]["attachment"]["data"]
    # T03: not written, so the stored content (and status) stay as they were.
    deliver(converter, fhir_server, message("T03", txa(t17="AU", t19="UN"), control_id="S-2"))
    after_t03 = fhir_server.read("DocumentReference", document_id)
    assert after_t03 is not None
    assert after_t03["content"] == content
    assert after_t03["docStatus"] == "preliminary"
    # T11: the same DocumentReference, now entered-in-error (its content a placeholder).
    deliver(converter, fhir_server, message("T11", txa(t17="PA", t19="CA"), control_id="S-3"))
    cancelled = fhir_server.read("DocumentReference", document_id)
    assert cancelled is not None
    assert cancelled["status"] == "entered-in-error"
    assert "data" not in cancelled["content"][0]["attachment"]
    assert fhir_server.count("DocumentReference") == 1
