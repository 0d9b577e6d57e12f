"""Rendering sessions: emit(), identity and merging, pruning, trailing commas, error locations.

The engine is exercised with small template folders written under ``tmp_path``; the helpers
at the top (:func:`write_templates`, :func:`make_session`, :func:`render`) are shared with the
other engine test modules.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from converter.assembly.ids import stable_id
from converter.datetimes import TimestampConverter
from converter.errors import ConversionError, MappingError, TemplateError
from converter.hl7v2.er7 import parse_message
from converter.hl7v2.message import Message
from converter.hl7v2.structure import StructureCatalog
from converter.templates.codemaps import CodeMaps
from converter.templates.environment import TemplateSet
from converter.templates.filters import ValueFilters
from converter.templates.render import Ref, RenderSession, json_from_template

# --- shared helpers ----------------------------------------------------------------------

CATALOG = StructureCatalog()
MESSAGE = (
    b"MSH|^~\\&|APP|FAC|RCV|RFAC|20240316101544+0100||ADT^A08^ADT_A01|MSG0001|P|2.5.1\r"
    b"PID|1||12345^^^HOSP&1.2.3&ISO^MR||DOE^JOHN||19850312|M\r"
)
MESSAGE_KEY = "APP^FAC\x1fMSG0001\x1f20240316101544+0100"
ROOT = "hl7v2/messages/R.j2"
FHIR_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")


def parse(data: bytes = MESSAGE) -> Message:
    return parse_message(data, CATALOG)


def write_templates(directory: Path, files: Mapping[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``directory``; returns the directory."""
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def make_templates(
    builtin: Path,
    *,
    overrides: Sequence[Path] = (),
    strict: bool = True,
    zone: str = "UTC",
    codemaps: Sequence[Path] = (),
) -> TemplateSet:
    filters = ValueFilters(TimestampConverter(zone), CodeMaps.load(list(codemaps)), strict=strict)
    return TemplateSet(builtin, overrides, filters)


def make_session(
    builtin: Path,
    *,
    overrides: Sequence[Path] = (),
    strict: bool = True,
    zone: str = "UTC",
    reference_style: str = "type",
    scope: str = "",
    message: Message | None = None,
    message_key: str = MESSAGE_KEY,
    codemaps: Sequence[Path] = (),
    **context: Any,
) -> RenderSession:
    templates = make_templates(
        builtin, overrides=overrides, strict=strict, zone=zone, codemaps=codemaps
    )
    return RenderSession(
        environment=templates.environment,
        family="hl7v2",
        scope=scope,
        reference_style=reference_style,
        context={"msg": message or parse(), "message_key": message_key, **context},
        builtin_root=str(builtin),
        strict_values=strict,
    )


def render(session: RenderSession, root: str = ROOT) -> list[dict[str, Any]]:
    """Render a root template; the resources of the session in entry order."""
    session.render(root, {})
    return [resource for _, resource in session.entries()]


def one_resource(tmp_path: Path, body: str, **variables: Any) -> dict[str, Any] | None:
    """Render ``body`` as resource template ``X`` with ``variables``; None when dropped."""
    builtin = write_templates(
        tmp_path / "builtin",
        {ROOT: '{% do emit("X", **vars) %}', "hl7v2/resources/X.j2": body},
    )
    resources = render(make_session(builtin, vars=variables))
    assert len(resources) <= 1
    return resources[0] if resources else None


def without_id(resource: dict[str, Any] | None) -> dict[str, Any] | None:
    if resource is None:
        return None
    return {k: v for k, v in resource.items() if k != "id"}


# --- json_from_template: trailing commas and parse-time pruning ---------------------------


def test_trailing_commas_before_closing_brackets_are_removed() -> None:
    text = '{"a": [1, 2,\n  ], "b": {"c": 3 , },\n}'
    assert json_from_template(text, "t.j2") == {"a": [1, 2], "b": {"c": 3}}


def test_pruning_drops_empty_members_recursively() -> None:
    text = json.dumps(
        {
            "resourceType": "X",
            "none": None,
            "empty": "",
            "blank": " \t\n",
            "list": [],
            "obj": {},
            "nested": {"a": {"b": None, "c": [None, "", {}, [], "  "]}},
            "items": [None, "", " ", {}, [], "kept", {"x": None}, {"y": " keep "}],
            "deep": [[None, " "], ["z", ""]],
            "zero": 0,
            "false": False,
        }
    )
    assert json_from_template(text, "t.j2") == {
        "resourceType": "X",
        "items": ["kept", {"y": " keep "}],
        "deep": [["z"]],
        "zero": 0,
        "false": False,
    }


def test_extensions_left_with_only_their_url_are_dropped() -> None:
    # ext-1: an extension has a value or sub-extensions. Its value may be absent, or
    # dropped as invalid in lenient mode: the url alone must not reach the bundle.
    analysis = "http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time"
    text = json.dumps(
        {
            "resourceType": "Observation",
            "extension": [
                {"url": analysis, "valueDateTime": None},
                {"url": "outer", "extension": [{"url": "date", "valueDateTime": ""}]},
                {"url": "kept", "extension": [{"url": "a", "valueCode": "x"}, {"url": "b"}]},
            ],
            "modifierExtension": [{"url": "m"}],
            "_birthDate": {"extension": [{"url": "absent", "valueCode": " "}]},
            "content": [{"attachment": {"url": "http://example.org/a.pdf"}}],
        }
    )
    assert json_from_template(text, "t.j2") == {
        "resourceType": "Observation",
        "extension": [{"url": "kept", "extension": [{"url": "a", "valueCode": "x"}]}],
        # A url alone is fine where it is not an extension's.
        "content": [{"attachment": {"url": "http://example.org/a.pdf"}}],
    }


def test_an_all_empty_object_parses_to_none() -> None:
    assert json_from_template('{"a": null, "b": {"c": ""}}', "t.j2") is None


def test_output_that_is_not_json_is_a_template_error_with_the_offending_line() -> None:
    with pytest.raises(TemplateError) as caught:
        json_from_template('{\n"a": 1\n"b": 2\n}', "hl7v2/resources/X.j2")
    error = caught.value
    assert error.template == "hl7v2/resources/X.j2"
    assert "output line 3" in str(error)
    assert error.detail == '"b": 2'


# --- emit: resources, pruning and null references ------------------------------------------


def test_emit_renders_prunes_and_adds_a_stable_id(tmp_path: Path) -> None:
    resource = one_resource(
        tmp_path,
        '{"resourceType": "Basic", "a": {{ a }}, "b": {{ b }}, "c": [{{ a }}, {{ b }},],}',
        a="x",
        b=None,
    )
    assert resource == {
        "resourceType": "Basic",
        "id": stable_id("", "message", MESSAGE_KEY, "hl7v2/resources/X.j2", "1"),
        "a": "x",
        "c": ["x"],
    }


@pytest.mark.parametrize(
    "body",
    [
        '{"resourceType": "Basic"}',
        '{"resourceType": "Basic", "a": {{ none }}, "b": [], "c": {"d": " "}}',
        '{"resourceType": "Basic", "_identity": ["k"], "a": ""}',
        '{"resourceType": "Basic", "id": "explicit", "a": [null]}',
    ],
)
def test_a_resource_left_with_only_its_type_is_dropped_and_renders_null(
    tmp_path: Path, body: str
) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: '{% set ref = emit("Empty") %}{{ warn("ref is none: " ~ (ref is none)) }}'
            '{% do emit("Holder") %}',
            "hl7v2/resources/Empty.j2": body,
            "hl7v2/resources/Holder.j2": '{"resourceType": "Basic", "subject": '
            '{{ emit("Empty") }}, "author": [{{ emit("Empty") }},], "code": "c"}',
        },
    )
    session = make_session(builtin)
    resources = render(session)
    assert session.warnings == ["ref is none: True"]
    assert [without_id(r) for r in resources] == [{"resourceType": "Basic", "code": "c"}]


def test_a_resource_template_must_render_an_object_with_a_resource_type(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path, {ROOT: '{% do emit("X") %}', "hl7v2/resources/X.j2": '{"a": 1}'}
    )
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin))
    assert caught.value.template == "hl7v2/resources/X.j2"


def test_emit_of_a_missing_template_is_a_template_error(tmp_path: Path) -> None:
    builtin = write_templates(tmp_path, {ROOT: '{% do emit("Nope") %}'})
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin))
    # The name is the error's detail: a template may build it from the message, and
    # str(error) is what logs print.
    assert caught.value.detail == "template 'hl7v2/resources/Nope.j2'"
    assert "Nope" not in str(caught.value)
    assert str(caught.value).startswith("template not found in template hl7v2/messages/R.j2:1")


def test_emit_resolves_names_relative_to_the_family(tmp_path: Path) -> None:
    session = make_session(write_templates(tmp_path, {}))
    assert session.resolve("Patient") == "hl7v2/resources/Patient.j2"
    assert session.resolve("extra/Thing") == "hl7v2/extra/Thing.j2"
    assert session.resolve("other/x.j2") == "other/x.j2"
    # Written with its family, as a template author copying a path would.
    assert session.resolve("hl7v2/resources/Patient") == "hl7v2/resources/Patient.j2"


def test_identity_is_removed_and_gives_the_id(tmp_path: Path) -> None:
    resource = one_resource(
        tmp_path,
        '{"resourceType": "Patient", "_identity": [{{ sys }}, {{ value }}, {{ none }}],'
        ' "active": true}',
        sys="urn:oid:1.2.3",
        value="12345",
    )
    assert resource == {
        "resourceType": "Patient",
        "id": stable_id("", "Patient", "urn:oid:1.2.3", "12345"),
        "active": True,
    }


def test_the_session_scope_changes_identity_ids(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: '{% do emit("X") %}',
            "hl7v2/resources/X.j2": '{"resourceType": "Patient", "_identity": ["a"],'
            ' "active": true}',
        },
    )
    first = render(make_session(builtin, scope="site-A"))[0]["id"]
    second = render(make_session(builtin, scope="site-B"))[0]["id"]
    assert first == stable_id("site-A", "Patient", "a")
    assert second == stable_id("site-B", "Patient", "a")
    assert first != second


def test_same_identity_twice_is_one_merged_resource(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: (
                '{% set a = emit("P", name="first", tags=["x", "y"], extra=none) %}\n'
                '{% set b = emit("P", name="second", tags=["z", "x"], extra="late") %}\n'
                '{{ warn((a == b) ~ " " ~ a) }}'
            ),
            "hl7v2/resources/P.j2": (
                '{"resourceType": "Patient", "_identity": ["k1"], "name": {{ name }},'
                ' "tag": [{% for t in tags %}{{ t }},{% endfor %}],'
                ' "extra": {{ extra }}, "nested": {"n": {{ name }}}}'
            ),
        },
    )
    session = make_session(builtin)
    resources = render(session)
    rid = stable_id("", "Patient", "k1")
    assert resources == [
        {
            "resourceType": "Patient",
            "id": rid,
            "name": "first",
            "tag": ["x", "y", "z"],
            "nested": {"n": "first"},
            "extra": "late",
        }
    ]
    # The template's own warning, and the merge's: the two renderings disagreed.
    assert len(session.warnings) == 2
    assert f"True Patient/{rid}" in session.warnings
    merge = next(w for w in session.warnings if w.startswith(f"Patient {rid} emitted twice"))
    assert "name" in merge and "nested.n" in merge
    assert "second" not in merge, "warnings must not quote values"


def test_references_by_type_in_put_mode_and_urn_in_conditional_modes(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: '{% do emit("Obs") %}',
            "hl7v2/resources/Obs.j2": (
                '{"resourceType": "Observation", "subject": {{ emit("Pat") }},'
                ' "performer": [{{ emit("Pat") }},], "status": "final"}'
            ),
            "hl7v2/resources/Pat.j2": '{"resourceType": "Patient", "_identity": ["p"],'
            ' "active": true}',
        },
    )
    pid = stable_id("", "Patient", "p")
    put = render(make_session(builtin, reference_style="type"))[0]
    assert put["subject"] == {"reference": f"Patient/{pid}"}
    assert put["performer"] == [{"reference": f"Patient/{pid}"}]
    urn = render(make_session(builtin, reference_style="urn"))[0]
    assert urn["subject"] == {"reference": f"urn:uuid:{pid}"}
    assert urn["performer"] == [{"reference": f"urn:uuid:{pid}"}]


def test_ref_object() -> None:
    ref = Ref("Patient", "abc", "Patient/abc")
    assert ref.as_json() == '{"reference": "Patient/abc"}'
    assert str(ref) == "Patient/abc"


def test_ids_without_identity_come_from_message_key_template_and_position(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: '{% for v in ["a", "b"] %}{% do emit("N", v=v) %}{% endfor %}'
            '{% do emit("M", v="c") %}',
            "hl7v2/resources/N.j2": '{"resourceType": "Basic", "v": {{ v }}}',
            "hl7v2/resources/M.j2": '{"resourceType": "Basic", "v": {{ v }}}',
        },
    )
    ids = [r["id"] for r in render(make_session(builtin))]
    assert ids == [
        stable_id("", "message", MESSAGE_KEY, "hl7v2/resources/N.j2", "1"),
        stable_id("", "message", MESSAGE_KEY, "hl7v2/resources/N.j2", "2"),
        stable_id("", "message", MESSAGE_KEY, "hl7v2/resources/M.j2", "1"),
    ]
    # Stable across sessions (a re-sent message), different for another message.
    assert [r["id"] for r in render(make_session(builtin))] == ids
    other = [r["id"] for r in render(make_session(builtin, message_key="other"))]
    assert not set(other) & set(ids)
    for rid in ids:
        assert FHIR_ID.fullmatch(rid)
        assert str(uuid.UUID(rid)) == rid


def test_an_explicit_id_is_kept(tmp_path: Path) -> None:
    resource = one_resource(
        tmp_path, '{"resourceType": "Basic", "id": "my-id.1", "_identity": ["x"], "a": 1}'
    )
    assert resource == {"resourceType": "Basic", "id": "my-id.1", "a": 1}


@pytest.mark.parametrize("value", ["12", "has space", "x" * 65, "é"])
def test_an_explicit_id_must_be_a_valid_fhir_id(tmp_path: Path, value: str) -> None:
    literal = value if value.isdigit() else json.dumps(value)
    with pytest.raises(MappingError) as caught:
        one_resource(tmp_path, '{"resourceType": "Basic", "id": ' + literal + ', "a": 1}')
    assert caught.value.template == "hl7v2/resources/X.j2"
    assert value not in str(caught.value)


def test_entries_follow_first_emission_and_parents_precede_children(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: (
                '{% do emit("A", n="a1") %}\n'
                '{% do emit("Parent") %}\n'
                '{% do emit("A", n="a1") %}\n'  # same identity: merged, no new entry
                '{% do emit("A", n="a2") %}'
            ),
            "hl7v2/resources/A.j2": '{"resourceType": "Basic", "_identity": [{{ n }}],'
            ' "code": {{ n }}}',
            "hl7v2/resources/Parent.j2": (
                '{"resourceType": "Basic", "code": "parent",'
                ' "author": {{ emit("Child") }}, "subject": {{ emit("A", n="a1") }}}'
            ),
            "hl7v2/resources/Child.j2": '{"resourceType": "Basic", "code": "child",'
            ' "subject": {{ emit("A", n="a3") }}}',
        },
    )
    codes = [r["code"] for r in render(make_session(builtin))]
    assert codes == ["a1", "parent", "child", "a3", "a2"]


def test_emitted_lists_references_by_type_and_warn_renders_nothing(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: (
                '{% do emit("P") %}{% do emit("B") %}'
                '{% do emit("Prov", targets=emitted(), patients=emitted("Patient")) %}'
            ),
            "hl7v2/resources/P.j2": '{"resourceType": "Patient", "_identity": ["p"],'
            ' "active": true}',
            "hl7v2/resources/B.j2": '{"resourceType": "Basic", "_identity": ["b"], "code": "b"}',
            "hl7v2/resources/Prov.j2": (
                '{"resourceType": "Provenance", "target": {{ targets }},'
                ' "patients": {{ patients }}, "note": {{ warn("careful") }}}'
            ),
        },
    )
    session = make_session(builtin)
    resources = render(session)
    pid, bid = stable_id("", "Patient", "p"), stable_id("", "Basic", "b")
    assert resources[2]["target"] == [
        {"reference": f"Patient/{pid}"},
        {"reference": f"Basic/{bid}"},
    ]
    assert resources[2]["patients"] == [{"reference": f"Patient/{pid}"}]
    assert "note" not in resources[2]
    assert session.warnings == ["careful"]
    assert [r.id for r in session.emitted()] == [pid, bid, resources[2]["id"]]


def test_root_template_output_is_ignored(tmp_path: Path) -> None:
    builtin = write_templates(tmp_path, {ROOT: "not json at all ]],"})
    assert render(make_session(builtin)) == []


# --- error locations ------------------------------------------------------------------------

NESTED = {
    ROOT: '\n{% do emit("Res", v=value) %}',
    "hl7v2/resources/Res.j2": (
        '{% import "hl7v2/datatypes/dt.j2" as dt %}\n'
        "{\n"
        '  "resourceType": "Basic",\n'
        '  "code": {{ dt.macro(v) }}\n'
        "}"
    ),
}


@pytest.mark.parametrize(
    ("macro_body", "error_type", "line"),
    [
        ("{{ v | fhir_date }}", MappingError, 4),
        ("{{ v.no_such_attribute }}", TemplateError, 4),
        ("{{ typo_name }}", TemplateError, 4),
        ("{{ 1 // 0 }}", MappingError, 4),
        ('{{ codemap("NoSuchMap", v) }}', TemplateError, 4),
        ("{{ v.__class__ }}", TemplateError, 4),
        # A misspelt group name is a typo, not "no such group in this message".
        ('{{ msg.find("PATIENT_RESULTS") }}', TemplateError, 4),
        ("{{ msg.ORDER_OBSERVATON }}", TemplateError, 4),
    ],
)
def test_errors_in_a_nested_macro_point_at_the_innermost_template_line(
    tmp_path: Path, macro_body: str, error_type: type[Exception], line: int
) -> None:
    datatypes = "{#- comment\n  two lines -#}\n{% macro macro(v) -%}\n" + macro_body
    datatypes += "\n{%- endmacro %}"
    builtin = write_templates(tmp_path, {**NESTED, "hl7v2/datatypes/dt.j2": datatypes})
    message = parse(MESSAGE.replace(b"19850312", b"20241341"))
    session = make_session(builtin, message=message, value=message.PID[7])
    with pytest.raises(error_type) as caught:
        render(session)
    assert caught.value.template == f"hl7v2/datatypes/dt.j2:{line}"


def test_a_bad_value_names_its_hl7_path_and_keeps_the_value_out_of_the_message(
    tmp_path: Path,
) -> None:
    builtin = write_templates(tmp_path, {**NESTED, "hl7v2/datatypes/dt.j2": ""})
    builtin = write_templates(
        tmp_path,
        {
            ROOT: '{% do emit("Res") %}',
            "hl7v2/resources/Res.j2": '{\n"resourceType": "Patient",\n'
            '"birthDate": {{ msg.PID[7] | fhir_date }}\n}',
        },
    )
    message = parse(MESSAGE.replace(b"19850312", b"20241341"))
    with pytest.raises(MappingError) as caught:
        render(make_session(builtin, message=message))
    error = caught.value
    assert type(error) is MappingError
    assert error.location == "PID-7"
    assert error.template == "hl7v2/resources/Res.j2:3"
    assert error.detail == "20241341"
    assert "20241341" not in str(error)
    assert str(error) == (
        "invalid timestamp: timestamp out of range at PID-7 in template hl7v2/resources/Res.j2:3"
    )

    lenient = make_session(builtin, message=message, strict=False)
    resources = render(lenient)
    assert resources == []  # the only element was dropped: the resource is empty
    assert lenient.warnings == ["invalid timestamp: timestamp out of range at PID-7; value dropped"]


def test_python_errors_in_templates_become_mapping_errors_with_detail(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: '{% do emit("X") %}',
            "hl7v2/resources/X.j2": '{"resourceType": "Basic",\n"a": {{ msg.PID[5] + 1 }}}',
        },
    )
    with pytest.raises(MappingError) as caught:
        render(make_session(builtin))
    assert type(caught.value) is MappingError
    assert caught.value.template == "hl7v2/resources/X.j2:2"
    assert str(caught.value) == "TypeError raised in template in template hl7v2/resources/X.j2:2"
    assert caught.value.detail is not None


def test_template_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: '{% do emit("X") %}',
            "hl7v2/resources/X.j2": '{"resourceType": "Basic",\n{% if %}\n}',
        },
    )
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin))
    assert caught.value.template is not None
    assert caught.value.template.endswith("hl7v2/resources/X.j2:2")


def test_override_templates_are_named_by_full_path_in_errors(tmp_path: Path) -> None:
    # The override folder's name starts like the built-in one: it must not be shortened.
    builtin = write_templates(
        tmp_path / "mappings",
        {ROOT: '{% do emit("X") %}', "hl7v2/resources/X.j2": '{"resourceType": "Basic"}'},
    )
    override = write_templates(
        tmp_path / "mappings-site",
        {"hl7v2/resources/X.j2": '{"resourceType": "Basic",\n"a": {{ typo }}}'},
    )
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin, overrides=[override]))
    assert caught.value.template == f"{override / 'hl7v2/resources/X.j2'}:2"


def test_conversion_errors_are_conversion_errors(tmp_path: Path) -> None:
    builtin = write_templates(tmp_path, {ROOT: "{{ undefined_name }}"})
    with pytest.raises(ConversionError) as caught:
        render(make_session(builtin))
    assert caught.value.template == f"{ROOT}:1"
