"""ORU^R01 / OUL results as laboratory systems send them (Observation.j2, DiagnosticReport.j2,
Specimen.j2, datatypes/observation_values.j2, the ORU_R01 and OUL roots), on small messages
built here.

- OBX-2 NM whose OBX-5 is not a plain number: a comparator before the number (``<5``,
  ``>60``) is read as SN would be (valueQuantity with its comparator, IG SN[Quantity]);
  any other text (``5,4``, ``Négatif``) is kept as valueString with its OBX-6 unit (the
  IG's text row), with a warning. The whole report used to be refused in strict mode
  (and the number dropped, leaving a unit alone, in lenient mode). SN numbers that are not
  numbers take the same text row.
- OBX-11 codes the IG's map leaves empty (I, O, R, S, V, B, U) and OBR-25 A get a status
  through Passerelle's supplements, the v2 code kept beside it; they were all unknown. An
  OBX-11 U without OBX-5 is not rewritten (the report lists the stored Observation): it
  replaced the stored value with nothing.
- The NTEs after an OBR are also the report's note (R5 DiagnosticReport.note extension).
- ED values: a content type whatever ED.2/ED.3 hold (R4 att-1), Base64 without its line
  breaks, invalid Base64 left out with a warning, ED.4 A (text) encoded instead of dropped.
- OBX-7 of one bound (``<5``, ``>=60``) gives referenceRange.high / low.
- Two OBRs under one order number with different OBR-4 (one request number for every test)
  are two DiagnosticReports; they shared one id, the second report being dropped.
- OBX-18 (the analyser) is Observation.device by identifier (IG OBX-18).
- OBR-15 written as a CE (``SER^Sérum^HL70070``) is the specimen type, not an additive
  "Sérum" with a note "HL70070".
"""

from __future__ import annotations

from typing import Any

from converter import Converter, ConverterConfig
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import convert_one, message, resources, segment
from tests.support.r4validator import R4Validator

LAB = "SIL-GLYCINE^1.2.250.1.999.1.20^ISO"
HIS = "SIH-ORCHIDEE^1.2.250.1.999.1.10^ISO"
HEADER = [
    "MSH|^~\\&|SIL-GLYCINE|CHU-NANTES^1.2.250.1.999.1.3^ISO|PASSERELLE|GHT|20240520101500+0200||"
    "ORU^R01^ORU_R01|LAB-ORU-20240520-0050|P|2.5.1|||AL|NE||UNICODE UTF-8",
    "PID|1||0045100230^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^MR||LEROUX^Maëlle||19850612|F",
    "PV1|1|I|MED-INF^CH12^2^CHU-NANTES||||||||||||||||2024005501^^^CHU-NANTES&1.2.250.1.999.1.3&ISO^VN",
    segment("ORC", {1: "RE", 2: f"BIO-01^{HIS}", 3: f"LAB2405200050^{LAB}", 5: "CM"}),
    segment(
        "OBR",
        {
            1: "1",
            2: f"BIO-01^{HIS}",
            3: f"LAB2405200050^{LAB}",
            4: "BIOCHIM^Biochimie^L",
            7: "20240520070000+0200",
            22: "20240520100000+0200",
            24: "CH",
            25: "F",
        },
    ),
]


def _observations(obx: list[str], converter: Converter) -> tuple[list[dict[str, Any]], list[str]]:
    bundle, warnings = convert_one(converter, message([*HEADER, *obx]))
    return resources(bundle, "Observation"), warnings


def _values(observation: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in observation.items() if k.startswith("value")}


def test_nm_with_a_comparator_is_a_quantity_with_its_comparator(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = message(
        [
            *HEADER,
            "OBX|1|NM|1988-5^CRP^LN||<5|mg/L^^UCUM|<5|N|||F",
            "OBX|2|NM|33914-3^DFG CKD-EPI^LN||>=60|mL/min/{1.73_m2}^^UCUM|||||F",
        ]
    )
    bundle, warnings = convert_one(converter, data)
    crp, dfg = resources(bundle, "Observation")
    mg = {"unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"}
    assert _values(crp) == {"valueQuantity": {"value": 5, "comparator": "<", **mg}}
    assert dfg["valueQuantity"]["value"] == 60
    assert dfg["valueQuantity"]["comparator"] == ">="
    assert not [w for w in warnings if "OBX" in w], warnings
    assert r4validator.validate(bundle) == []


def test_nm_that_is_not_a_number_is_kept_as_text_not_refused(
    converter: Converter, r4validator: R4Validator
) -> None:
    """A decimal comma (French systems) and a word: the report converts, the value and its
    unit are kept as text; a warning names the field, not the value."""
    data = message(
        [
            *HEADER,
            "OBX|1|NM|2345-7^Glucose^LN||5,4|mmol/L^^UCUM|3,9-5,5|N|||F",
            "OBX|2|NM|5196-1^HBs Ag^LN||Négatif||||||F",
            "OBX|3|NM|718-7^Hémoglobine^LN||13.2|g/dL^^UCUM|12.0-16.0|N|||F",
        ]
    )
    bundle, warnings = convert_one(converter, data)
    glucose, hbs, hemoglobin = resources(bundle, "Observation")
    assert _values(glucose) == {"valueString": "5,4 mmol/L"}
    assert _values(hbs) == {"valueString": "Négatif"}
    assert str(hemoglobin["valueQuantity"]["value"]) == "13.2"
    not_numbers = [w for w in warnings if "is not a number (OBX-2 NM)" in w]
    assert len(not_numbers) == 2, warnings
    assert "OBX-5" in not_numbers[0] and "OBX[2]-5" in not_numbers[1]
    assert not [w for w in warnings if "5,4" in w or "gatif" in w]
    assert len(resources(bundle, "DiagnosticReport")[0]["result"]) == 3
    assert r4validator.validate(bundle) == []


def test_nm_not_a_number_is_not_dropped_in_lenient_mode() -> None:
    lenient = Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=False))
    [glucose], _ = _observations(["OBX|1|NM|2345-7^Glucose^LN||5,4|mmol/L^^UCUM|||||F"], lenient)
    assert _values(glucose) == {"valueString": "5,4 mmol/L"}


def test_repeated_nm_components_read_each_value(converter: Converter) -> None:
    [observation], _ = _observations(
        ["OBX|1|NM|8480-6^Pression^LN||<90~12,5|mm[Hg]^^UCUM|||||F"], converter
    )
    first, second = observation["component"]
    assert first["valueQuantity"]["comparator"] == "<"
    assert second["valueString"] == "12,5 mm[Hg]"


def test_sn_numbers_that_are_not_numbers_are_kept_as_text(converter: Converter) -> None:
    observations, warnings = _observations(
        [
            "OBX|1|SN|2345-7^Glucose^LN||^5,4|mmol/L^^UCUM|||||F",
            "OBX|2|SN|5048-4^Titre^LN||^1^:^2,5||||||F",
            "OBX|3|SN|2345-7^Glucose^LN||<^5|mmol/L^^UCUM|||||F",
        ],
        converter,
    )
    assert [_values(o) for o in observations[:2]] == [
        {"valueString": "5,4 mmol/L"},
        {"valueString": "1 : 2,5"},
    ]
    assert observations[2]["valueQuantity"]["comparator"] == "<"
    assert len([w for w in warnings if "(OBX-2 SN)" in w]) == 2


def _status_extension(resource: dict[str, Any]) -> list[str]:
    return [
        coding["code"]
        for ext in resource.get("_status", {}).get("extension", [])
        for coding in ext["valueCodeableConcept"]["coding"]
    ]


def test_obx11_codes_the_ig_leaves_empty_get_a_status(
    converter: Converter, r4validator: R4Validator
) -> None:
    """Table 0085 I, O (pending), R, S (unverified, partial), V (verified), B (appended):
    a warehouse filtering on status saw them all as unknown. The v2 code stays beside the
    status (our reading, not the IG's); N stays unknown."""
    codes = ["I", "O", "R", "S", "V", "B", "U", "N", "F", "C"]
    obx = [
        f"OBX|{n}|NM|2345-7^Glucose^LN|{n}|{'' if code in 'IO' else '5.4'}|mmol/L^^UCUM|||||{code}"
        for n, code in enumerate(codes, 1)
    ]
    bundle, _ = convert_one(converter, message([*HEADER, *obx]))
    observations = resources(bundle, "Observation")
    assert [o["status"] for o in observations] == [
        "registered",
        "registered",
        "preliminary",
        "preliminary",
        "final",
        "amended",
        "final",
        "unknown",
        "final",
        "corrected",
    ]
    assert [_status_extension(o) for o in observations] == [
        ["I"],
        ["O"],
        ["R"],
        ["S"],
        ["V"],
        ["B"],
        ["U"],
        ["N"],
        [],
        [],
    ]
    assert r4validator.validate(bundle) == []


def test_obr25_a_some_results_available_is_a_partial_report(converter: Converter) -> None:
    data = message(
        [*HEADER[:4], HEADER[4].replace("|CH|F", "|CH|A"), "OBX|1|NM|2345-7^Glucose^LN||5.4|||||F"]
    )
    bundle, _ = convert_one(converter, data)
    [report] = resources(bundle, "DiagnosticReport")
    assert report["status"] == "partial"
    assert _status_extension(report) == ["A"]


def _attachment(observation: dict[str, Any]) -> dict[str, Any] | None:
    found = [
        ext["valueAttachment"]
        for ext in observation.get("extension", [])
        if ext["url"].endswith("extension-Observation.valueAttachment")
    ]
    return found[0] if found else None


def test_ed_report_keeps_a_content_type_and_ascii_data(
    converter: Converter, r4validator: R4Validator
) -> None:
    """A PDF whose type is written in ED.2 alone had no contentType (R4 att-1: data needs
    one); Base64 broken over lines kept its line breaks; ED.4 A (ASCII text) was dropped."""
    observations, warnings = _observations(
        [
            "OBX|1|ED|PDF^Compte rendu^L||SIL^PDF^^Base64^JVBERi0x\\.br\\LjQK||||||F",
            "OBX|2|ED|TXT^Texte^L||SIL^TEXT^plain^A^Résultat normal||||||F",
            "OBX|3|ED|PDF^Compte rendu^L||SIL^AP^PDF^Base64^JVBERi0xLjQK?!||||||F",
        ],
        converter,
    )
    pdf, text, broken = observations
    assert _attachment(pdf) == {"contentType": "application/pdf", "data": "JVBERi0xLjQK"}
    assert _attachment(text) == {
        "contentType": "text/plain",
        "data": "UsOpc3VsdGF0IG5vcm1hbA==",
    }
    assert _attachment(broken) is None
    assert [w for w in warnings if "OBX[3]-5.5 is not valid Base64" in w], warnings
    bundle, _ = convert_one(
        converter, message([*HEADER, "OBX|1|ED|PDF^CR^L||SIL^PDF^^Base64^JVBERi0xLjQK||||||F"])
    )
    assert r4validator.validate(bundle) == []


def test_reference_range_of_one_bound_gives_low_or_high(
    converter: Converter, r4validator: R4Validator
) -> None:
    """OBX-7 "<5" / ">=60" was text only: a warehouse comparing values to their ranges saw
    no range. The text keeps the sign; a ratio range stays text."""
    data = message(
        [
            *HEADER,
            "OBX|1|NM|1988-5^CRP^LN||3|mg/L^^UCUM|<5|N|||F",
            "OBX|2|NM|33914-3^DFG^LN||75|mL/min^^UCUM|>=60|N|||F",
            "OBX|3|SN|5048-4^Titre AAN^LN||^1^:^40||<1:80|N|||F",
        ]
    )
    bundle, _ = convert_one(converter, data)
    crp, dfg, titer = resources(bundle, "Observation")
    mg = {"unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"}
    assert crp["referenceRange"] == [{"high": {"value": 5, **mg}, "text": "<5"}]
    [dfg_range] = dfg["referenceRange"]
    assert dfg_range["low"]["value"] == 60 and "high" not in dfg_range
    assert dfg_range["text"] == ">=60"
    assert titer["referenceRange"] == [{"text": "<1:80"}]
    assert r4validator.validate(bundle) == []


#: One request number for two tests (a blood count, final; an ionogram, preliminary), as
#: many laboratory systems send it; each test has a comment OBX with the same code.
SHARED_NUMBER = [
    *HEADER[:3],
    segment("ORC", {1: "RE", 2: f"BIO-02^{HIS}", 3: f"LAB2405200051^{LAB}", 5: "CM"}),
    segment(
        "OBR",
        {1: "1", 2: f"BIO-02^{HIS}", 3: f"LAB2405200051^{LAB}", 4: "NFS^Hémogramme^L", 25: "F"},
    ),
    "OBX|1|NM|718-7^Hémoglobine^LN||13.2|g/dL^^UCUM|12.0-16.0|N|||F",
    "OBX|2|TX|COM^Commentaire^L||Pas d'anomalie morphologique.||||||F",
    segment("ORC", {1: "RE", 2: f"BIO-02^{HIS}", 3: f"LAB2405200051^{LAB}", 5: "IP"}),
    segment(
        "OBR",
        {1: "2", 2: f"BIO-02^{HIS}", 3: f"LAB2405200051^{LAB}", 4: "IONO^Ionogramme^L", 25: "P"},
    ),
    "OBX|1|NM|2951-2^Sodium^LN||139|mmol/L^^UCUM|136-145|N|||P",
    "OBX|2|TX|COM^Commentaire^L||Contrôle demandé.||||||P",
]


def test_two_tests_under_one_order_number_are_two_reports(
    converter: Converter, r4validator: R4Validator
) -> None:
    """They had one id: the ionogram's report (code, preliminary status) was dropped, its
    results listed in the blood count's, and its comment overwrote the blood count's."""
    bundle, warnings = convert_one(converter, message(SHARED_NUMBER))
    assert not [w for w in warnings if "emitted twice" in w], warnings
    reports = {r["code"]["coding"][0]["code"]: r for r in resources(bundle, "DiagnosticReport")}
    assert {code: r["status"] for code, r in reports.items()} == {
        "NFS": "final",
        "IONO": "preliminary",
    }
    observations = {o["id"]: o for o in resources(bundle, "Observation")}
    assert len(observations) == 4
    texts = {
        code: [
            observations[ref["reference"].split("/")[1]].get("valueString", "-")
            for ref in report["result"]
        ]
        for code, report in reports.items()
    }
    assert texts == {
        "NFS": ["-", "Pas d'anomalie morphologique."],
        "IONO": ["-", "Contrôle demandé."],
    }
    # One order: the request the first OBR writes; the second report is based on it.
    [request] = resources(bundle, "ServiceRequest")
    assert reports["IONO"]["basedOn"] == [{"reference": f"ServiceRequest/{request['id']}"}]
    # The number stays the first report's (conditional requests match on it).
    assert {i["value"] for i in reports["NFS"]["identifier"]} == {"LAB2405200051", "BIO-02"}
    assert "identifier" not in reports["IONO"]
    assert r4validator.validate(bundle) == []


def test_the_first_test_keeps_its_ids_and_the_same_test_twice_is_one_report(
    converter: Converter,
) -> None:
    alone, _ = convert_one(converter, message(SHARED_NUMBER[:7]))
    both, _ = convert_one(converter, message(SHARED_NUMBER))
    assert {r["id"] for r in resources(alone, "DiagnosticReport")} < {
        r["id"] for r in resources(both, "DiagnosticReport")
    }
    assert {o["id"] for o in resources(alone, "Observation")} < {
        o["id"] for o in resources(both, "Observation")
    }
    twice = [*SHARED_NUMBER[:7], *SHARED_NUMBER[3:5], "OBX|3|NM|777-3^Plaquettes^LN||250||||||F"]
    bundle, warnings = convert_one(converter, message(twice))
    [report] = resources(bundle, "DiagnosticReport")
    assert len(report["result"]) == 3 and warnings == []


def test_two_tests_under_one_order_number_in_conditional_mode() -> None:
    conditional = Converter(
        ConverterConfig(default_timezone="Europe/Paris", request_mode="conditional-create")
    )
    bundle, _ = convert_one(conditional, message(SHARED_NUMBER))
    methods = {
        e["resource"]["code"]["coding"][0]["code"]: e["request"]["method"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    }
    assert methods == {"NFS": "POST", "IONO": "PUT"}


def test_oul_two_tests_under_one_order_number_are_two_reports(converter: Converter) -> None:
    msh = HEADER[0].replace("ORU^R01^ORU_R01", "OUL^R22^OUL_R22")
    spm = "SPM|1|PRL-01&SIH-ORCHIDEE^LAB2405200051-S1&SIL-GLYCINE||SER^Sérum^HL70487"
    orders = [line for line in SHARED_NUMBER[3:] if not line.startswith("ORC")]
    bundle, warnings = convert_one(converter, message([msh, *HEADER[1:3], spm, *orders]))
    assert not [w for w in warnings if "emitted twice" in w], warnings
    reports = {r["code"]["coding"][0]["code"]: r for r in resources(bundle, "DiagnosticReport")}
    assert {code: r["status"] for code, r in reports.items()} == {
        "NFS": "final",
        "IONO": "preliminary",
    }
    assert len(resources(bundle, "Observation")) == 4
    assert all(len(r["result"]) == 2 for r in reports.values())


def test_obx18_equipment_is_the_device_by_identifier(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG OBX[Observation] OBX-18 → device(Device.identifier): the analyser was dropped."""
    bundle, _ = convert_one(
        converter,
        message(
            [
                *HEADER,
                "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^^UCUM|||||F|||||||"
                "COBAS-8000-01^LAB-EQUIP^1.2.250.1.999.1.21^ISO",
            ]
        ),
    )
    [observation] = resources(bundle, "Observation")
    assert observation["device"] == {
        "type": "Device",
        "identifier": {"system": "urn:oid:1.2.250.1.999.1.21", "value": "COBAS-8000-01"},
    }
    assert r4validator.validate(bundle) == []


def test_obr15_written_as_a_ce_is_the_specimen_type_only(
    converter: Converter, r4validator: R4Validator
) -> None:
    """OBR-15 (SPS) sent as a CE, `SER^Sérum^HL70070`, gave a Specimen with the additive
    "Sérum" and the note "HL70070". A real SPS (sub-components) reads as before."""

    def obr(number: str, source: str) -> str:
        return segment(
            "OBR",
            {
                1: "1",
                2: f"{number}^{HIS}",
                3: f"L{number}^{LAB}",
                4: "NFS^Hémogramme^L",
                15: source,
                25: "F",
            },
        )

    data = message(
        [
            *HEADER[:3],
            segment("ORC", {1: "RE", 2: f"B-10^{HIS}", 3: f"LB-10^{LAB}"}),
            obr("B-10", "SER^Sérum^HL70070"),
            "OBX|1|NM|718-7^Hb^LN||13.2|g/dL^^UCUM|||||F",
            segment("ORC", {1: "RE", 2: f"B-11^{HIS}", 3: f"LB-11^{LAB}"}),
            obr("B-11", "BLD&Sang total&HL70070^EDTA&EDTA&HL70371^Ponction veineuse"),
            "OBX|1|NM|718-7^Hb^LN||13.2|g/dL^^UCUM|||||F",
        ]
    )
    bundle, _ = convert_one(converter, data)
    ce_style, sps = resources(bundle, "Specimen")
    assert ce_style["type"]["coding"][1] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0070",
        "code": "SER",
        "display": "Sérum",
    }
    assert "container" not in ce_style and "note" not in ce_style
    assert sps["type"]["coding"][1]["display"] == "Sang total"
    assert sps["container"][0]["additiveCodeableConcept"]["coding"][0]["code"] == "EDTA"
    assert sps["note"] == [{"text": "Ponction veineuse"}]
    assert r4validator.validate(bundle) == []


def test_obx11_u_without_its_value_does_not_erase_the_stored_one(converter: Converter) -> None:
    """U: made final without retransmitting the value sent as preliminary. Its Observation,
    written without OBX-5, replaced the stored value with nothing (status unknown). The
    report now lists the stored Observation, which is not rewritten."""
    preliminary = message([*HEADER, "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^^UCUM|||||P"])
    first, _ = convert_one(converter, preliminary)
    [stored] = resources(first, "Observation")
    final = message([*HEADER, "OBX|1|NM|2345-7^Glucose^LN|||mmol/L^^UCUM|||||U"])
    bundle, warnings = convert_one(converter, final)
    assert resources(bundle, "Observation") == []
    [report] = resources(bundle, "DiagnosticReport")
    assert report["result"] == [{"reference": f"Observation/{stored['id']}"}]
    assert [w for w in warnings if "OBX-11 U without OBX-5" in w], warnings
    # In an OUL as well.
    oul = final.replace(b"ORU^R01^ORU_R01", b"OUL^R22^OUL_R22")
    bundle, _ = convert_one(converter, oul)
    assert resources(bundle, "Observation") == []
    [report] = resources(bundle, "DiagnosticReport")
    assert report["result"] == [{"reference": f"Observation/{stored['id']}"}]


def _report_notes(report: dict[str, Any]) -> list[str]:
    return [
        ext["valueAnnotation"]["text"]
        for ext in report.get("extension", [])
        if ext["url"]
        == "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note"
    ]


def test_the_reports_comment_is_its_note(converter: Converter, r4validator: R4Validator) -> None:
    """The NTE after an OBR (the laboratory's comment on the report) was only the order's
    note, and lost for a second test under the same order number, whose order is not
    rewritten. It is now the report's note (R5 DiagnosticReport.note, cross-version
    extension) as well."""
    data = message(
        [
            *SHARED_NUMBER[:5],
            "NTE|1|L|Prélèvement hémolysé.",
            *SHARED_NUMBER[5:9],
            "NTE|1|L|Ionogramme à contrôler.",
            *SHARED_NUMBER[9:],
        ]
    )
    bundle, warnings = convert_one(converter, data)
    reports = {r["code"]["coding"][0]["code"]: r for r in resources(bundle, "DiagnosticReport")}
    assert _report_notes(reports["NFS"]) == ["Prélèvement hémolysé."]
    assert _report_notes(reports["IONO"]) == ["Ionogramme à contrôler."]
    [request] = resources(bundle, "ServiceRequest")
    assert request["note"] == [{"text": "Prélèvement hémolysé."}]
    assert [w for w in warnings if "are the report's note only" in w], warnings
    assert r4validator.validate(bundle) == []


def test_u_and_two_tests_under_one_number_on_the_server(
    converter: Converter, fhir_server: FhirServer
) -> None:
    """The preliminary results, then the final message whose glucose is OBX-11 U without
    its value and which carries a second test under the same number: the server keeps the
    glucose value, and holds two reports."""
    preliminary = message([*HEADER, "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L^^UCUM|||||P"])
    first, _ = convert_one(converter, preliminary)
    fhir_server.transact(first)
    final = message(
        [
            *HEADER[:4],
            HEADER[4],
            "OBX|1|NM|2345-7^Glucose^LN|||mmol/L^^UCUM|||||U",
            HEADER[3],
            HEADER[4].replace("BIOCHIM^Biochimie^L", "CRP^Protéine C réactive^L"),
            "OBX|1|NM|1988-5^CRP^LN||<5|mg/L^^UCUM|<5|N|||F",
        ]
    )
    bundle, _ = convert_one(converter, final)
    fhir_server.transact(bundle)
    [stored] = resources(first, "Observation")
    glucose = fhir_server.read("Observation", stored["id"])
    assert glucose is not None and str(glucose["valueQuantity"]["value"]) == "5.4"
    [patient] = resources(bundle, "Patient")
    assert fhir_server.count("DiagnosticReport", subject=f"Patient/{patient['id']}") == 2
