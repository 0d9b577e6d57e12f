"""The converter end to end: overrides, errors, deterministic ids, request modes."""

from __future__ import annotations

import codecs
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from converter.assembly.ids import stable_id
from converter.convert import Conversion, Converter, ConverterConfig, detect_input_type
from converter.errors import (
    CharsetError,
    ConfigurationError,
    MappingError,
    ParseError,
    TemplateError,
)
from converter.hl7v2 import message_digest
from tests.support.hl7_edit import references
from tests.support.r4validator import R4Validator

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"
SAMPLES = REPO / "samples" / "hl7v2"
SAMPLE = (SAMPLES / "ADT_A08_update-patient.hl7").read_bytes()
CONTROL_ID = "CHU-ADT-20240316-000102"
FHIR_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig())


@pytest.fixture(scope="module")
def baseline(converter: Converter) -> dict[str, Any]:
    return converter.convert(SAMPLE)[0].bundle


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def resources(bundle: dict[str, Any], rtype: str | None = None) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle["entry"]
        if rtype is None or e["resource"]["resourceType"] == rtype
    ]


def the(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = resources(bundle, rtype)
    assert len(found) == 1, f"{len(found)} {rtype}"
    return found[0]


def replace_segment(data: bytes, name: bytes, segment: bytes) -> bytes:
    return b"\r".join(segment if s.startswith(name + b"|") else s for s in data.split(b"\r"))


# --- the baseline ---------------------------------------------------------------------------


def test_the_sample_converts_to_a_transaction(converter: Converter) -> None:
    [conversion] = converter.convert(SAMPLE)
    bundle = conversion.bundle
    assert conversion.message_type == "ADT^A08"
    assert conversion.control_id == CONTROL_ID
    assert conversion.root_template == "hl7v2/messages/ADT.j2"
    assert conversion.sender == "SIH-ORCHIDEE^CHU-LYON"
    assert conversion.warnings == ()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert bundle["timestamp"] == "2024-03-16T10:15:44+01:00"
    digest = message_digest(SAMPLE).hex()
    assert bundle["id"] == stable_id(
        "", "Bundle", "\x1f".join(("SIH-ORCHIDEE^CHU-LYON", CONTROL_ID, digest))
    )
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert FHIR_ID.fullmatch(resource["id"])
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        assert entry["request"] == {
            "method": "PUT",
            "url": f"{resource['resourceType']}/{resource['id']}",
        }
        assert not any(key.startswith("_identity") for key in resource)
    assert json.loads(conversion.to_json()) == bundle
    assert json.loads(conversion.to_json(pretty=True)) == bundle


def test_every_reference_resolves_inside_the_bundle(baseline: dict[str, Any]) -> None:
    targets = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in baseline["entry"]}
    found = list(references(baseline))
    assert found
    assert set(found) <= targets


# --- overrides ----------------------------------------------------------------------------------


def test_an_override_template_replaces_the_builtin_one(
    tmp_path: Path, baseline: dict[str, Any]
) -> None:
    builtin = (MAPPINGS / "hl7v2/resources/Patient.j2").read_text(encoding="utf-8")
    anchor = '"resourceType": "Patient",'
    assert builtin.count(anchor) == 1
    write(
        tmp_path, "hl7v2/resources/Patient.j2", builtin.replace(anchor, anchor + ' "active": true,')
    )
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    bundle = converter.convert(SAMPLE)[0].bundle
    patient = the(bundle, "Patient")
    assert patient["active"] is True
    del patient["active"]
    assert bundle == baseline
    assert [
        (info.name, info.path) for info in converter.templates.list("hl7v2") if info.overridden
    ] == [("hl7v2/resources/Patient.j2", tmp_path / "hl7v2/resources/Patient.j2")]
    assert len(converter.templates.list("hl7v2")) == len(list((MAPPINGS / "hl7v2").rglob("*.j2")))


def test_an_override_can_wrap_the_builtin_template(
    tmp_path: Path, baseline: dict[str, Any]
) -> None:
    write(
        tmp_path,
        "hl7v2/messages/ADT.j2",
        '{% include "builtin/hl7v2/messages/ADT.j2" %}\n'
        '{% do emit("SiteFlag", patient=emit("Patient", pid=msg.PID, pd1=msg.PD1)) %}\n',
    )
    write(
        tmp_path,
        "hl7v2/resources/SiteFlag.j2",
        '{"resourceType": "Flag", "status": "active", "code": {"text": "site flag"},'
        ' "subject": {{ patient }}}',
    )
    bundle = Converter(ConverterConfig(template_dirs=(tmp_path,))).convert(SAMPLE)[0].bundle
    *entries, flag = bundle["entry"]
    assert entries == baseline["entry"]
    patient = the(baseline, "Patient")
    assert flag["resource"] == {
        "resourceType": "Flag",
        "id": flag["resource"]["id"],
        "status": "active",
        "code": {"text": "site flag"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }


def test_an_override_routes_file_adds_and_replaces_single_entries(
    tmp_path: Path, baseline: dict[str, Any]
) -> None:
    write(tmp_path, "hl7v2/routes.toml", '[events]\n"ADT^A08" = "PatientOnly"\n')
    write(
        tmp_path,
        "hl7v2/messages/PatientOnly.j2",
        '{% do emit("Patient", pid=msg.PID, pd1=msg.PD1) %}',
    )
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    [conversion] = converter.convert(SAMPLE)
    assert conversion.root_template == "hl7v2/messages/PatientOnly.j2"
    assert [r["resourceType"] for r in resources(conversion.bundle)] == [
        "Patient",
        "Practitioner",
    ]
    assert the(conversion.bundle, "Patient") == the(baseline, "Patient")
    # The other built-in routes are untouched.
    a01 = SAMPLE.replace(b"ADT^A08^ADT_A01", b"ADT^A01^ADT_A01")
    assert converter.convert(a01)[0].root_template == "hl7v2/messages/ADT.j2"


def test_an_override_code_map_replaces_the_whole_builtin_map(tmp_path: Path) -> None:
    header = "source_code,source_system,target_code,target_display,target_system,comment\n"
    write(
        tmp_path,
        "codemaps/AdministrativeSex.csv",
        header + "M,,male,Male,http://hl7.org/fhir/administrative-gender,\n",
    )
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    assert converter.codemaps.source_of("AdministrativeSex") == (
        tmp_path / "codemaps/AdministrativeSex.csv"
    )
    # The sample's patient is F: not in the replacing map, so no gender at all.
    assert "gender" not in the(converter.convert(SAMPLE)[0].bundle, "Patient")
    write(
        tmp_path,
        "codemaps/AdministrativeSex.csv",
        header + "F,,other,Other,http://hl7.org/fhir/administrative-gender,\n",
    )
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    assert the(converter.convert(SAMPLE)[0].bundle, "Patient")["gender"] == "other"
    # Other maps still come from the built-in folder.
    assert converter.codemaps.source_of("MaritalStatus") == MAPPINGS / "codemaps/MaritalStatus.csv"


def test_a_missing_override_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Converter(ConverterConfig(template_dirs=(tmp_path / "absent",)))


def test_an_error_in_an_override_names_its_full_path(tmp_path: Path) -> None:
    write(
        tmp_path, "hl7v2/resources/Patient.j2", '{\n"resourceType": "Patient",\n"x": {{ pdi }}\n}'
    )
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    with pytest.raises(TemplateError) as caught:
        converter.convert(SAMPLE)
    assert caught.value.template == f"{tmp_path / 'hl7v2/resources/Patient.j2'}:3"
    assert caught.value.control_id == CONTROL_ID
    assert caught.value.message_type == "ADT^A08"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            '{\n"resourceType": "Patient",\n"x": {{ emit("NoSuch") }}\n}',
            ":3",
            "template not found",
        ),
        ('{\n"resourceType" "Patient"\n}', "", "output line 2"),
        ("{# nothing #}", "", "rendered nothing"),
    ],
    ids=["missing emitted template", "not JSON", "empty"],
)
def test_every_kind_of_override_error_names_the_override_file(
    tmp_path: Path, text: str, line: str, reason: str
) -> None:
    # With several template folders, the logical name (hl7v2/resources/Patient.j2) does
    # not say which file is broken: the override's full path does.
    write(tmp_path, "hl7v2/resources/Patient.j2", text)
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    with pytest.raises(TemplateError, match=reason) as caught:
        converter.convert(SAMPLE)
    assert caught.value.template == f"{tmp_path / 'hl7v2/resources/Patient.j2'}{line}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{\n"resourceType": "Patient",\n"x": {{ pid[5] | fhir_dat }}\n}', "No filter"),
        ('{\n"resourceType": "Patient",\n"x": {% if %}\n}', "syntax error"),
    ],
    ids=["unknown filter", "syntax"],
)
def test_a_broken_override_is_refused_when_the_converter_is_built(
    tmp_path: Path, text: str, reason: str
) -> None:
    # Compiled at start: before, the service started and every message reaching the
    # template became a dead letter.
    write(tmp_path, "hl7v2/resources/Patient.j2", text)
    with pytest.raises(ConfigurationError, match=reason) as caught:
        Converter(ConverterConfig(template_dirs=(tmp_path,)))
    assert str(caught.value).startswith(f"{tmp_path / 'hl7v2/resources/Patient.j2'}:3: ")


# --- invalid values -----------------------------------------------------------------------------

BAD_BIRTH = SAMPLE.replace(b"|19850312|", b"|20241341|")


def test_a_bad_value_fails_with_its_hl7_path_and_template_line() -> None:
    assert BAD_BIRTH != SAMPLE
    converter = Converter(ConverterConfig())
    with pytest.raises(MappingError) as caught:
        converter.convert(BAD_BIRTH)
    error = caught.value
    assert error.location == "PID-7"
    match = re.fullmatch(r"hl7v2/resources/Patient\.j2:(\d+)", error.template or "")
    assert match is not None, error.template
    line = (MAPPINGS / "hl7v2/resources/Patient.j2").read_text().splitlines()[int(match[1]) - 1]
    assert "pid[7]" in line
    assert error.control_id == CONTROL_ID
    assert error.detail == "20241341"
    assert "20241341" not in str(error)
    assert str(error).startswith("invalid timestamp: ")
    assert f"at PID-7 in template {error.template} (MSH-10 {CONTROL_ID})" in str(error)


def test_a_cda_error_names_the_document_not_msh10() -> None:
    ccd = (REPO / "samples" / "cda" / "CCD_lefevre-camille.xml").read_bytes()
    broken = ccd.replace(b'<effectiveTime value="20240312143000+0100"/>', b"", 1)
    assert broken != ccd, "fixture assumption: the document's effectiveTime"
    with pytest.raises(MappingError) as caught:
        Converter(ConverterConfig()).convert(broken)
    assert caught.value.control_id == "1.2.250.1.999.3.1^CCD-2024-000123"
    assert str(caught.value).endswith("(document 1.2.250.1.999.3.1^CCD-2024-000123)")
    assert "MSH-10" not in str(caught.value)


def test_lenient_mode_drops_a_bad_value_with_a_warning(baseline: dict[str, Any]) -> None:
    converter = Converter(ConverterConfig(strict_values=False))
    [conversion] = converter.convert(BAD_BIRTH)
    assert len(conversion.warnings) == 1
    assert "PID-7" in conversion.warnings[0]
    assert "20241341" not in conversion.warnings[0]
    patient = the(conversion.bundle, "Patient")
    assert "birthDate" not in patient
    expected = dict(the(baseline, "Patient"))
    del expected["birthDate"]
    assert patient == expected


#: A raw ESC in the family name and a \\X07\\ (BEL) escape in an allergy reaction.
CONTROLS = SAMPLE.replace(b"|DUPONT^Marie^", b"|DUP\x1bONT^Marie^").replace(
    b"|Urticaire g", b"|Urti\\X07\\caire g"
)


def test_control_characters_fail_with_their_place_and_lenient_mode_replaces_them(
    r4validator: R4Validator,
) -> None:
    assert CONTROLS.count(b"\x1b") == 1 and b"\\X07\\" in CONTROLS, "fixture assumption"
    with pytest.raises(MappingError) as caught:
        Converter(ConverterConfig()).convert(CONTROLS)
    assert caught.value.location == "PID-5.1" and "U+001B" in str(caught.value)
    assert "DUP" not in str(caught.value)
    [conversion] = Converter(ConverterConfig(strict_values=False)).convert(CONTROLS)
    text = json.dumps(conversion.bundle, ensure_ascii=False)
    assert "DUP\ufffdONT" in text and "Urti\ufffdcaire" in text
    assert "\\u001b" not in text and "\\u0007" not in text
    assert any("PID-5.1" in w for w in conversion.warnings)
    # Value.text (the whole field, used for the reaction) is a plain string: no HL7
    # place, so the warning names the template line that wrote it.
    reaction = [w for w in conversion.warnings if "U+0007" in w]
    assert reaction, conversion.warnings
    match = re.search(r" in (hl7v2/resources/AllergyIntolerance\.j2):(\d+); replaced$", reaction[0])
    assert match is not None, reaction[0]
    line = (MAPPINGS / match[1]).read_text().splitlines()[int(match[2]) - 1]
    assert "reaction.text" in line
    # The R4 check Medplum makes (a server refuses such strings) now passes.
    assert r4validator.validate_all(conversion.bundle) == []


#: "Renée" written ``Ren\\XE9\\e``: E9 is é in ISO 8859-1, no character in this UTF-8 message.
UNDECODABLE_ESCAPE = SAMPLE.replace(b"|DUPONT^Marie^", b"|Ren\\XE9\\e^Marie^")


def test_an_undecodable_hex_escape_fails_at_its_field_or_is_replaced_in_lenient_mode(
    r4validator: R4Validator,
) -> None:
    """Once ``Ren\\XE9\\e`` landed in Patient.name as written, silently, while the same
    byte written raw is a located CharsetError (HL7 v2.5 §2.7: \\Xdddd\\ is data in the
    message's character set)."""
    assert UNDECODABLE_ESCAPE != SAMPLE, "fixture assumption"
    with pytest.raises(CharsetError) as caught:
        Converter(ConverterConfig()).convert(UNDECODABLE_ESCAPE)
    error = caught.value
    assert error.location == "PID-5"
    assert error.reason == "hexadecimal escape is not valid utf-8"
    assert error.control_id == CONTROL_ID and error.hl7_error_code == "102"
    assert error.detail == "escape \\XE9\\"
    assert "XE9" not in str(error) and "Ren" not in str(error)
    [conversion] = Converter(ConverterConfig(strict_values=False)).convert(UNDECODABLE_ESCAPE)
    families = [name.get("family") for name in the(conversion.bundle, "Patient")["name"]]
    assert families[0] == "Ren\ufffde"
    assert "XE9" not in json.dumps(conversion.bundle)
    # Said once per place read (the templates read PID-5 and PID-5.1), never the value.
    assert set(conversion.warnings) == {
        "hexadecimal escape is not valid utf-8 at PID-5; replaced by U+FFFD",
        "hexadecimal escape is not valid utf-8 at PID-5.1; replaced by U+FFFD",
    }
    assert r4validator.validate_all(conversion.bundle) == []


def test_a_bom_before_each_concatenated_message_and_a_charset_it_overrides(
    converter: Converter,
) -> None:
    """Files saved with a UTF-8 BOM then concatenated: each message converts (once the
    second BOM line was glued to the first message), read as UTF-8 even when MSH-18 says
    8859/1 (once "Marié(e)" came out as "MariÃ©(e)")."""
    bom = b"\xef\xbb\xbf"
    declared_latin1 = SAMPLE.replace(b"|UNICODE UTF-8|", b"|8859/1|", 1)
    assert declared_latin1 != SAMPLE, "fixture assumption: MSH-18 is UNICODE UTF-8"
    second = declared_latin1.replace(CONTROL_ID.encode(), b"X2")
    conversions = converter.convert(bom + SAMPLE + b"\r\n" + bom + second + b"\r\n")
    assert [c.control_id for c in conversions] == [CONTROL_ID, "X2"]
    for conversion in conversions:
        marital = the(conversion.bundle, "Patient")["maritalStatus"]
        assert "Marié(e)" in json.dumps(marital, ensure_ascii=False)


def test_a_utf16_cda_document_is_detected(converter: Converter) -> None:
    document = (REPO / "samples" / "cda" / "ProcedureNote_bonnet-elise.xml").read_bytes()
    text = document.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"', 1)
    for codec in ("utf-16", "utf-16-be"):  # LE with its BOM, then BE with one
        utf16 = text.encode(codec) if codec == "utf-16" else b"\xfe\xff" + text.encode(codec)
        assert detect_input_type(utf16) == "cda"
        converted, original = converter.convert(utf16)[0].bundle, converter.convert(document)[0]
        assert the(converted, "Patient") == the(original.bundle, "Patient")
        assert len(converted["entry"]) == len(original.bundle["entry"])
    assert detect_input_type(b"\xef\xbb\xbf \r\n<ClinicalDocument/>") == "cda"
    with pytest.raises(ParseError, match="HL7 v2 in UTF-16 is not supported"):
        detect_input_type(SAMPLE.decode("utf-8").encode("utf-16"))
    with pytest.raises(ParseError, match="neither HL7 v2"):
        detect_input_type("hello".encode("utf-16"))


# --- deterministic ids -------------------------------------------------------------------------


def test_converting_twice_gives_identical_bundles(converter: Converter) -> None:
    first = converter.convert(SAMPLE)[0].to_json()
    assert converter.convert(SAMPLE)[0].to_json() == first
    assert Converter(ConverterConfig()).convert(SAMPLE)[0].to_json() == first


def test_two_messages_sharing_control_id_and_msh7_keep_their_own_ids(
    converter: Converter,
) -> None:
    # A sender reusing MSH-10 within MSH-7's precision: without the content in the key,
    # the second bundle (same id) would overwrite the first's MessageHeader, Provenance
    # and every resource without a business identifier.
    other = SAMPLE.replace(b"DUPONT", b"DURAND")
    assert other != SAMPLE
    first, second = (converter.convert(data)[0].bundle for data in (SAMPLE, other))
    assert first["id"] != second["id"]
    assert the(first, "MessageHeader")["id"] != the(second, "MessageHeader")["id"]
    # A retransmission re-stamped with another MSH-7 or other line ends is the same.
    restamped = SAMPLE.replace(b"20240316101544+0100", b"20240316101545+0100", 1)
    assert restamped != SAMPLE
    assert converter.convert(restamped)[0].bundle["id"] == first["id"]


def test_ids_are_stable_across_processes(converter: Converter) -> None:
    code = (
        "import sys\n"
        "from converter.convert import Converter, ConverterConfig\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "print(Converter(ConverterConfig(validate=False)).convert(data)[0].to_json())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "TZ": "Pacific/Auckland"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(SAMPLES / "ADT_A08_update-patient.hl7")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == converter.convert(SAMPLE)[0].bundle


def test_a_resent_message_with_a_new_control_id_keeps_patient_and_visit_ids(
    converter: Converter, baseline: dict[str, Any]
) -> None:
    resent = converter.convert(SAMPLE.replace(CONTROL_ID.encode(), b"CHU-ADT-20240316-000999"))
    bundle = resent[0].bundle
    assert the(bundle, "Patient")["id"] == the(baseline, "Patient")["id"]
    assert the(bundle, "Encounter")["id"] == the(baseline, "Encounter")["id"]
    assert the(bundle, "Patient") == the(baseline, "Patient")
    # What describes the message itself is new.
    assert bundle["id"] != baseline["id"]
    assert the(bundle, "MessageHeader")["id"] != the(baseline, "MessageHeader")["id"]


def test_the_id_namespace_changes_every_id(baseline: dict[str, Any]) -> None:
    other = Converter(ConverterConfig(id_namespace="site-2")).convert(SAMPLE)[0].bundle
    before = {r["id"] for r in resources(baseline)} | {baseline["id"]}
    after = {r["id"] for r in resources(other)} | {other["id"]}
    assert len(after) == len(before)
    assert not before & after
    assert [r["resourceType"] for r in resources(other)] == [
        r["resourceType"] for r in resources(baseline)
    ]
    for ref in references(other):
        assert ref.split("/", 1)[1] in after


def _patient_message(facility: bytes, cx: bytes) -> bytes:
    message = SAMPLE.replace(
        b"|CHU-LYON^1.2.250.1.999.1.1^ISO|PASSERELLE", b"|" + facility + b"|PASSERELLE"
    )
    return replace_segment(message, b"PID", b"PID|1||" + cx + b"||DOE^JOHN||19800101|M")


@pytest.mark.parametrize(
    ("cx", "same"),
    [
        (b"12345^^^^MR", False),  # no assigning authority: scoped by the sender
        (b"12345^^^CENTRAL-MPI^MR", True),  # same authority namespace
        (b"12345^^^&1.2.3.4&ISO^MR", True),  # same authority OID
    ],
)
def test_identifier_scope_across_sending_facilities(
    converter: Converter, cx: bytes, same: bool
) -> None:
    first = the(converter.convert(_patient_message(b"HOSP-A", cx))[0].bundle, "Patient")
    second = the(converter.convert(_patient_message(b"HOSP-B", cx))[0].bundle, "Patient")
    assert first["identifier"] == second["identifier"]
    assert (first["id"] == second["id"]) is same


@pytest.mark.parametrize(
    ("facility_a", "facility_b", "same"),
    [
        # One namespace id, two OIDs: two hospitals (a data-engineer probe found their
        # patients "555000" merged into one Patient when only HD.1 scoped them).
        (b"CH^1.2.250.1.999.90.1^ISO", b"CH^1.2.250.1.999.90.2^ISO", False),
        # One OID written with two namespace ids: one facility.
        (b"CH-NORD^1.2.250.1.999.90.1^ISO", b"CHN^1.2.250.1.999.90.1^ISO", True),
        (b"HOSP-A", b"HOSP-A", True),
    ],
)
def test_unqualified_identifiers_are_scoped_by_the_facilitys_universal_id(
    converter: Converter, facility_a: bytes, facility_b: bytes, same: bool
) -> None:
    cx = b"12345^^^^MR"
    first = the(converter.convert(_patient_message(facility_a, cx))[0].bundle, "Patient")
    second = the(converter.convert(_patient_message(facility_b, cx))[0].bundle, "Patient")
    assert (first["id"] == second["id"]) is same


# --- request modes -------------------------------------------------------------------------------


def test_request_modes_per_type_write_those_types_conditionally_and_the_rest_by_id() -> None:
    config = ConverterConfig(request_modes=(("Patient", "conditional-create"),))
    bundle = Converter(config).convert(SAMPLE)[0].bundle
    requests = {e["resource"]["resourceType"]: e["request"] for e in bundle["entry"]}
    assert requests["Patient"] == {
        "method": "POST",
        "url": "Patient",
        "ifNoneExist": "identifier=urn:oid:1.2.250.1.999.1.1|0012345678",
    }
    assert requests["Encounter"]["url"].startswith("Encounter/")
    # One conditional entry: every reference goes through the urn:uuid fullUrls.
    full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
    assert set(references(bundle)) <= full_urls
    plain = Converter(ConverterConfig(request_modes=(("Patient", "put"),))).convert(SAMPLE)[0]
    assert not any(ref.startswith("urn:uuid:") for ref in references(plain.bundle))


@pytest.mark.parametrize(
    ("modes", "message"),
    [
        ((("Patient", "upsert"),), "unknown request mode 'upsert'"),
        ((("patient", "put"),), "'patient' is not a FHIR resource type name"),
    ],
)
def test_request_modes_are_checked(modes: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ConverterConfig(request_modes=modes)


@pytest.mark.parametrize("mode", ["conditional-create", "conditional-update"])
def test_conditional_modes_reference_by_urn_and_match_on_identifiers(
    mode: str, baseline: dict[str, Any]
) -> None:
    bundle = Converter(ConverterConfig(request_mode=mode)).convert(SAMPLE)[0].bundle  # type: ignore[arg-type]
    full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
    refs = list(references(bundle))
    assert refs
    assert set(refs) <= full_urls
    patient_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    search = "identifier=urn:oid:1.2.250.1.999.1.1|0012345678"
    if mode == "conditional-create":
        assert patient_entry["request"] == {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": search,
        }
    else:
        assert patient_entry["request"] == {"method": "PUT", "url": f"Patient?{search}"}
    assert the(bundle, "Encounter")["subject"] == {
        "reference": f"urn:uuid:{the(baseline, 'Patient')['id']}"
    }
    # Same ids as in put mode (in the fullUrls); conditionally written resources carry no
    # id in their body, since the server chooses or keeps it.
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        f"urn:uuid:{r['id']}" for r in resources(baseline)
    ]
    for entry in bundle["entry"]:
        conditional = "?" in entry["request"]["url"] or entry["request"]["method"] == "POST"
        assert ("id" in entry["resource"]) is not conditional
    provenance = the(bundle, "Provenance")
    assert "identifier" not in provenance  # no identifier: falls back to PUT Type/id
    provenance_entry = next(
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"
    )
    assert provenance_entry["request"] == {
        "method": "PUT",
        "url": f"Provenance/{provenance['id']}",
    }


# --- configuration and input --------------------------------------------------------------------


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        ConverterConfig(request_mode="post")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Converter(ConverterConfig(default_timezone="Mars/Olympus"))
    # The default charset follows MSH-18's rules: unknown, or not ASCII-compatible.
    for charset in ("nope", "utf-16", "rot13"):
        with pytest.raises(ConfigurationError, match="default_charset"):
            ConverterConfig(default_charset=charset)
    assert codecs.lookup(ConverterConfig(default_charset="8859/1").default_charset).name == (
        "iso8859-1"
    )


def test_input_detection_and_unsupported_cda(converter: Converter) -> None:
    assert detect_input_type(b"\xef\xbb\xbf\x0bMSH|^~\\&|") == "hl7v2"
    assert detect_input_type(b"  <ClinicalDocument/>") == "cda"
    with pytest.raises(ParseError):
        detect_input_type(b"hello")
    with pytest.raises(ParseError):
        converter.convert(b"<ClinicalDocument/>")


def test_a_batch_converts_every_message(converter: Converter) -> None:
    conversions = converter.convert(SAMPLE + b"\r" + SAMPLE.replace(CONTROL_ID.encode(), b"X2"))
    assert [c.control_id for c in conversions] == [CONTROL_ID, "X2"]
    assert [c.index for c in conversions] == [1, 2]
    assert all(isinstance(c, Conversion) for c in conversions)


def test_lenient_warnings_reach_the_result_from_imported_macros(tmp_path: Path) -> None:
    # A datatype macro module is imported without the render context; its invalid values
    # must still become warnings of the conversion, not vanish.
    macros = tmp_path / "hl7v2" / "datatypes"
    macros.mkdir(parents=True)
    (macros / "dates.j2").write_text("{% macro Born(v) %}{{ v | fhir_date }}{% endmacro %}")
    resources_dir = tmp_path / "hl7v2" / "resources"
    resources_dir.mkdir(parents=True)
    (resources_dir / "Patient.j2").write_text(
        '{% import "hl7v2/datatypes/dates.j2" as d %}'
        '{"resourceType": "Patient", "active": true, "birthDate": {{ d.Born(pid[7]) }}}'
    )
    bad = SAMPLE.replace(b"|19850312|", b"|19851312|")
    assert bad != SAMPLE
    config = ConverterConfig(template_dirs=(tmp_path,), strict_values=False)
    [conversion] = Converter(config).convert(bad)
    patient = the(conversion.bundle, "Patient")
    assert "birthDate" not in patient
    assert any("PID-7" in warning for warning in conversion.warnings), conversion.warnings


@pytest.mark.parametrize(
    ("original", "bad", "location", "kind"),
    [
        (b"|19850312|", b"|1985-03-12|", "PID-7", "date"),
        (b"|20240314083000+0100\r", b"|14/03/2024\r", "PV1-44", "date"),
        (b"PID|1|", b"PID|one|", "PID-1", "SI"),
    ],
)
def test_strict_hl7_mode_names_a_bad_datatype_without_its_value(
    original: bytes, bad: bytes, location: str, kind: str
) -> None:
    # hl7apy reports these as a bare ValueError quoting the value and not its place.
    message = SAMPLE.replace(original, bad)
    assert message != SAMPLE
    Converter(ConverterConfig(strict_values=False)).convert(message)  # lenient: converts
    with pytest.raises(ParseError) as refused:
        Converter(ConverterConfig(strict_hl7=True)).convert(message)
    assert refused.value.location == location
    assert refused.value.hl7_error_code == "102"
    assert refused.value.control_id == "CHU-ADT-20240316-000102"
    assert f"a valid {kind} value" in str(refused.value)
    assert bad.strip(b"|\r").split(b"|")[-1].decode() not in str(refused.value)


def test_strict_hl7_mode_refuses_what_breaks_the_version_definition() -> None:
    missing_pid3 = re.sub(rb"\rPID\|1\|\|[^|]*\|", b"\rPID|1|||", SAMPLE)
    assert missing_pid3 != SAMPLE
    # Tolerant by default: the message converts (the Patient simply has no identifier).
    Converter(ConverterConfig()).convert(missing_pid3)
    strict = Converter(ConverterConfig(strict_hl7=True))
    strict.convert(SAMPLE)  # a valid message passes
    with pytest.raises(ParseError) as refused:
        strict.convert(missing_pid3)
    assert refused.value.location == "PID-3"
    assert refused.value.hl7_error_code == "101"
    assert refused.value.control_id == "CHU-ADT-20240316-000102"
