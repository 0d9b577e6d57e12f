"""What an interface engineer writing or overriding templates meets, with the real converter.

A broken override fails the converter's construction (the service's start), naming the
file and line, instead of dead-lettering every message that reaches it; a template that
fails on one message names, besides its file:line and the control id, the place in the
message (``OBX[7]``, a CDA element) whose rendering failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.convert import Converter, ConverterConfig
from converter.errors import ConfigurationError, MappingError, TemplateError

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
ADT = (REPO / "samples/hl7v2/ADT_A08_update-patient.hl7").read_bytes()
ADT_CONTROL_ID = "CHU-ADT-20240316-000102"
ORU = (REPO / "samples/hl7v2/ORU_R01_20-obx.hl7").read_bytes()
CCD = (REPO / "samples/cda/CCD_lefevre-camille.xml").read_bytes()


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- a broken override fails at start ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "line", "reason"),
    [
        (
            "hl7v2/resources/Observation.j2",
            '{\n"resourceType": "Observation",\n{% if %}\n}',
            3,
            "Expected an expression",
        ),
        (
            "hl7v2/datatypes/names.j2",
            "{% macro X(xpn) %}\n\n{{ xpn | no_such_filter }}\n{% endmacro %}",
            3,
            "No filter named 'no_such_filter'",
        ),
        (
            "hl7v2/resources/SiteFlag.j2",
            '{"resourceType": "Flag",\n"x": {{ 1 + }}}',
            2,
            "unexpected",
        ),
    ],
    ids=["resource", "imported macro file, unknown filter", "new template"],
)
def test_a_broken_override_fails_at_start_with_its_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, reason: str
) -> None:
    # Before: the converter (the service) started, and every message reaching the
    # template failed into the dead letters, one by one.
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigurationError, match=reason) as failed:
        Converter(ConverterConfig(template_dirs=(tmp_path,)))
    assert str(failed.value).startswith(f"{path}:{line}: template syntax error: ")


def test_a_broken_override_hidden_by_an_earlier_directory_fails_at_start(tmp_path: Path) -> None:
    first, second = tmp_path / "site", tmp_path / "region"
    write(first, "hl7v2/resources/Patient.j2", '{"resourceType": "Patient", "active": true}')
    hidden = write(second, "hl7v2/resources/Patient.j2", '{"resourceType": "Patient",\n{% if %}}')
    Converter(ConverterConfig(template_dirs=(first,)))  # alone, the first one is sound
    with pytest.raises(ConfigurationError) as failed:
        Converter(ConverterConfig(template_dirs=(first, second)))
    assert str(failed.value).startswith(f"{hidden}:2: template syntax error")


def test_an_override_that_is_not_utf8_fails_at_start(tmp_path: Path) -> None:
    path = write(tmp_path, "hl7v2/resources/Patient.j2", "")
    path.write_bytes(b'{"resourceType": "Patient", "text": "\xe9"}')
    with pytest.raises(ConfigurationError, match="cannot read template") as failed:
        Converter(ConverterConfig(template_dirs=(tmp_path,)))
    assert str(failed.value).startswith(f"{path}: ")


def test_sound_overrides_are_compiled_once_at_start_and_used(tmp_path: Path) -> None:
    builtin = (MAPPINGS / "hl7v2/datatypes/names.j2").read_text(encoding="utf-8")
    anchor = '"family": {{ xpn[1] }},'
    assert anchor in builtin
    write(tmp_path, "hl7v2/datatypes/names.j2", builtin.replace(anchor, '"family": "X",', 1))
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    # Loaded at start (Jinja's cache) from the override, imported by Patient.j2.
    assert converter.templates.environment._loaded["hl7v2/datatypes/names.j2"].filename == str(
        tmp_path / "hl7v2/datatypes/names.j2"
    )
    bundle = converter.convert(ADT)[0].bundle
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert {name["family"] for name in patient["name"]} == {"X"}


# --- a template error names the place in the message ------------------------------------


def test_a_template_error_names_the_observation_segment_that_failed(tmp_path: Path) -> None:
    builtin = (MAPPINGS / "hl7v2/resources/Observation.j2").read_text(encoding="utf-8")
    anchor = '"resourceType": "Observation",'
    assert builtin.count(anchor) == 1
    # Fails for the 7th OBX only (a TypeError: text + number).
    path = write(
        tmp_path,
        "hl7v2/resources/Observation.j2",
        builtin.replace(anchor, anchor + '\n"x": {{ obx[2] + 1 if obx[1] == "7" else none }},', 1),
    )
    line = builtin[: builtin.index(anchor)].count("\n") + 2
    converter = Converter(ConverterConfig(template_dirs=(tmp_path,)))
    with pytest.raises(MappingError) as failed:
        converter.convert(ORU)
    error = failed.value
    assert error.location == "OBX[7]"
    assert error.template == f"{path}:{line}"
    assert error.control_id
    assert f"TypeError raised in template at OBX[7] in template {path}:{line}" in str(error)


def test_a_typo_in_a_macro_names_the_macro_file_line_and_the_segment(tmp_path: Path) -> None:
    builtin = (MAPPINGS / "hl7v2/datatypes/names.j2").read_text(encoding="utf-8")
    anchor = '"family": {{ xpn[1] }},'
    lines = builtin.splitlines()
    line = next(n for n, text in enumerate(lines, 1) if anchor in text)
    path = write(
        tmp_path, "hl7v2/datatypes/names.j2", builtin.replace(anchor, '"family": {{ xnp[1] }},', 1)
    )
    with pytest.raises(TemplateError) as failed:
        Converter(ConverterConfig(template_dirs=(tmp_path,))).convert(ADT)
    error = failed.value
    assert error.reason == "undefined in template: 'xnp' is undefined"
    assert error.template == f"{path}:{line}"
    assert error.control_id == ADT_CONTROL_ID
    assert error.location == "PID"  # Patient.j2 renders pid=msg.PID


def test_output_that_is_not_json_names_the_override_and_its_input(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hl7v2/resources/Practitioner.j2",
        '{"resourceType": "Practitioner"\n"name": [{"family": {{ xcn[2] }}}]}',
    )
    with pytest.raises(TemplateError, match="not JSON") as failed:
        Converter(ConverterConfig(template_dirs=(tmp_path,))).convert(ADT)
    # The first practitioner rendered: the Patient's general practitioner.
    assert failed.value.location == "PD1-4"
    assert failed.value.template == str(path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[{"resourceType": "Patient"}]', "one object with a resourceType"),
        ('{"resourceType": "Patient", "id": "a b", "active": true}', "not a valid FHIR id"),
    ],
    ids=["not an object", "bad explicit id"],
)
def test_a_resource_shape_error_names_the_override_by_its_full_path(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = write(tmp_path, "hl7v2/resources/Patient.j2", text)
    with pytest.raises(MappingError, match=reason) as failed:
        Converter(ConverterConfig(template_dirs=(tmp_path,))).convert(ADT)
    assert failed.value.template == str(path)  # was the logical name, the built-in's too
    assert failed.value.location == "PID"


def test_a_cda_template_error_names_the_element_being_rendered(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cda/resources/AllergyIntolerance.j2",
        '{"resourceType": "AllergyIntolerance",\n"x": {{ 1 // 0 }}}',
    )
    with pytest.raises(MappingError, match="ZeroDivisionError") as failed:
        Converter(ConverterConfig(template_dirs=(tmp_path,))).convert(CCD)
    error = failed.value
    assert error.template == f"{path}:2"
    assert error.control_id
    assert error.location is not None
    assert error.location.startswith("/ClinicalDocument/component/structuredBody/component")
    assert error.location.endswith("/observation")


def test_a_typo_in_a_macro_name_is_named_with_the_calling_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hl7v2/resources/Patient.j2",
        '{% import "hl7v2/datatypes/names.j2" as names %}\n'
        '{"resourceType": "Patient",\n'
        '"name": [{{ names.HumanNmae(pid[5]) }}]}\n',
    )
    with pytest.raises(TemplateError) as failed:
        Converter(ConverterConfig(template_dirs=(tmp_path,))).convert(ADT)
    error = failed.value
    # Was "'jinja2.environment.TemplateModule object' has no attribute …": no macro named.
    assert error.reason == "undefined in template: the imported template has no macro 'HumanNmae'"
    assert error.template == f"{path}:3"
    assert error.location == "PID"
    assert error.control_id == ADT_CONTROL_ID


# --- values reach JSON through the escaping path ----------------------------------------


def _patient_family(tmp_path: Path, expression: str, family: bytes) -> list[dict[str, str]]:
    write(
        tmp_path,
        "hl7v2/resources/Patient.j2",
        f'{{"resourceType": "Patient", "_identity": "x",\n"name": [{{"family": {expression}}}]}}\n',
    )
    message = ADT.replace(b"|DUPONT^", b"|" + family + b"^", 1)
    assert message != ADT
    bundle = Converter(ConverterConfig(template_dirs=(tmp_path,))).convert(message)[0].bundle
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    names: list[dict[str, str]] = patient["name"]
    return names


@pytest.mark.parametrize("escape", ["e", "escape", "forceescape"])
def test_the_escape_filters_write_json_not_html(tmp_path: Path, escape: str) -> None:
    # Jinja's escape filters HTML-escaped the value and marked it as already written:
    # '"{{ v | e }}"' gave "O&#39;BRIEN" in FHIR, and {{ v | e }} an unquoted 12.
    assert _patient_family(tmp_path, f"{{{{ pid[5][1] | {escape} }}}}", b"O'BRIEN") == [
        {"family": "O'BRIEN"}
    ]
    assert _patient_family(tmp_path, f"{{{{ pid[5][1] | {escape} }}}}", b"12") == [{"family": "12"}]
    with pytest.raises(TemplateError, match="not JSON"):
        _patient_family(tmp_path, f'"{{{{ pid[5][1] | {escape} }}}}"', b"O'BRIEN")


def test_tojson_writes_what_an_expression_writes(tmp_path: Path) -> None:
    # Jinja's tojson text went unchecked: the trailing-comma cleanup removed a comma
    # inside the string, and a control character reached FHIR.
    expression = "{{ pid[5][1] | string | tojson }}"
    assert _patient_family(tmp_path, expression, b'A, ]B "\\E\\') == [{"family": 'A, ]B "\\'}]
    with pytest.raises(MappingError, match=r"control character U\+001B"):
        _patient_family(tmp_path, expression, b"A\\X1B\\B")
