"""MDM^T02 (root MDM_T02.j2, resource DocumentReference.j2): what a review found.

- TXA-14 placer / TXA-15 filler order numbers name the order a document answers, not the
  document: every document of one order (a report, its addendum) carries them. They were
  DocumentReference.identifier, the identifier a conditional request matches on, so in the
  conditional modes the addendum overwrote the report (conditional-update) or was dropped
  (conditional-create). They are now context.related, by identifier (IG MDM_T02 row 8:
  DocumentReference.context.related → the order's ServiceRequest).
- The COMMON_ORDER groups (v2.6+, ORC + OBR + TQ1 + NTE) were dropped without a word; the IG
  maps them to ServiceRequest (MDM_T02 rows 7.1-7.4, ORC/OBR/TQ1/NTE[ServiceRequest]) and the
  document's context.related to it (row 8). The ServiceRequest is the one an ORM or ORU
  gives that order number.
"""

from __future__ import annotations

from converter import Converter, ConverterConfig
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, message, resources
from tests.support.r4validator import R4Validator

DPI = "DPI-CARDIO^1.2.250.1.999.2.10^ISO"
RIS = "RIS-HELIOS^1.2.250.1.999.2.20^ISO"
PATIENT = "PID|1||PE00458712^^^HOP-EST&1.2.250.1.999.2.1&ISO^MR||LEFÈVRE^Françoise||19400207|F"


def _mdm(
    control: str,
    document: str,
    title: str,
    *,
    event: str = "T02",
    order: list[str] | None = None,
    version: str = "2.6",
) -> bytes:
    return message(
        [
            f"MSH|^~\\&|DPI-CARDIO|HOP-EST^1.2.250.1.999.2.1^ISO|PASSERELLE|GHT|20240712160512+0200||"
            f"MDM^{event}^MDM_T02|{control}|P|{version}|||AL|NE||UNICODE UTF-8",
            f"EVN|{event}|20240712160512+0200",
            PATIENT,
            "PV1|1|O|ECHO^^^HOP-EST",
            *(order or []),
            f"TXA|1|CN^Consult note^HL70270|TX|20240712150000+0200||20240712150000+0200|||||"
            f"|{document}^{DPI}||ECHO-2024-0042^{DPI}|EXA-77^{RIS}||AU||AV",
            f"OBX|1|TX|11522-0^Echocardiography study^LN||{title}||||||F",
        ]
    )


def _document(bundle: dict) -> dict:
    [document] = resources(bundle, "DocumentReference")
    return document


def test_order_numbers_are_the_documents_context_not_its_identifier(converter: Converter) -> None:
    document = _document(convert_one(converter, _mdm("M1", "CR-1", "Compte rendu"))[0])
    assert "identifier" not in document
    assert document["masterIdentifier"]["value"] == "CR-1"
    related = document["context"]["related"]
    assert [(r["type"], r["identifier"]["value"]) for r in related] == [
        ("ServiceRequest", "ECHO-2024-0042")
    ]
    assert related[0]["identifier"]["type"]["coding"][0]["code"] == "PLAC"


def test_two_documents_of_one_order_in_conditional_mode(fhir_server: FhirServer) -> None:
    """The report then its addendum, both naming the order in TXA-14/15: two
    DocumentReferences on the server, the report's content untouched."""
    conditional = Converter(
        ConverterConfig(
            default_timezone="Europe/Paris",
            request_modes=(("DocumentReference", "conditional-update"),),
        )
    )
    report, _ = convert_one(conditional, _mdm("M1", "CR-1", "Compte rendu"))
    addendum, _ = convert_one(conditional, _mdm("M2", "CR-2", "Addendum", event="T06"))
    urls = {
        e["request"]["url"]
        for bundle in (report, addendum)
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    }
    assert len(urls) == 2, urls
    fhir_server.transact(report)
    fhir_server.transact(addendum)
    [patient] = resources(report, "Patient")
    found = fhir_server.search("DocumentReference", subject=f"Patient/{patient['id']}")
    masters = sorted(e["resource"]["masterIdentifier"]["value"] for e in found["entry"])
    assert masters == ["CR-1", "CR-2"]


ORDER = [
    f"ORC|SC|ECHO-2024-0042^{DPI}|EXA-77^{RIS}||CM||||20240712100000+0200",
    "TQ1|1||||||20240712140000+0200",
    f"OBR|1|ECHO-2024-0042^{DPI}|EXA-77^{RIS}|11522-0^Echocardiography study^LN"
    "|||20240712140000+0200",
    "NTE|1|L|Patiente sous anticoagulants.",
]


def test_common_order_is_the_orders_service_request(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle, _ = convert_one(converter, _mdm("M3", "CR-3", "Compte rendu", order=ORDER))
    [request] = resources(bundle, "ServiceRequest")
    assert request["code"]["coding"][0]["code"] == "11522-0"
    assert request["note"][0]["text"] == "Patiente sous anticoagulants."
    assert {i["value"] for i in request["identifier"]} == {"ECHO-2024-0042", "EXA-77"}
    document = _document(bundle)
    assert document["context"]["related"] == [{"reference": f"ServiceRequest/{request['id']}"}]
    # The ServiceRequest an ORM placing that order writes.
    orm = message(
        [
            "MSH|^~\\&|DPI-CARDIO|HOP-EST^1.2.250.1.999.2.1^ISO|RIS|GHT|20240712100000+0200||"
            "ORM^O01^ORM_O01|O1|P|2.5",
            PATIENT,
            f"ORC|NW|ECHO-2024-0042^{DPI}||||||||||||20240712100000+0200",
            f"OBR|1|ECHO-2024-0042^{DPI}||11522-0^Echocardiography study^LN",
        ]
    )
    [ordered] = resources(convert_one(converter, orm)[0], "ServiceRequest")
    assert ordered["id"] == request["id"]
    assert r4validator.validate(bundle) == []


def test_an_edit_in_place_does_not_replace_itself(
    converter: Converter, r4validator: R4Validator
) -> None:
    """A T08 naming its own number as parent (TXA-13 = TXA-12) wrote relatesTo "replaces"
    itself; an edit with a number of its own still replaces its parent."""
    in_place = _mdm("M8", "CR-8", "Compte rendu corrigé", event="T08").replace(
        b"|CR-8^DPI-CARDIO^1.2.250.1.999.2.10^ISO||",
        b"|CR-8^DPI-CARDIO^1.2.250.1.999.2.10^ISO|CR-8^DPI-CARDIO^1.2.250.1.999.2.10^ISO|",
    )
    bundle, _ = convert_one(converter, in_place)
    assert "relatesTo" not in _document(bundle)
    assert r4validator.validate(bundle) == []
    new_number = in_place.replace(b"|CR-8^DPI", b"|CR-9^DPI", 1)
    [relation] = _document(convert_one(converter, new_number)[0])["relatesTo"]
    assert relation["code"] == "replaces"
    assert relation["target"]["identifier"]["value"] == "CR-8"
