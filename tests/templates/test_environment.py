"""The sandboxed environment: no Python internals, strict undefined, JSON finalizer."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError
from markupsafe import Markup

from converter.errors import ConfigurationError, MappingError, TemplateError
from converter.templates import environment as environment_module
from converter.templates.environment import TemplateInfo, TemplateSet, to_json
from converter.templates.render import Ref, json_from_template
from tests.support.compiled import pure_python_only
from tests.templates.test_render import (
    MESSAGE,
    ROOT,
    make_session,
    make_templates,
    one_resource,
    parse,
    render,
    write_templates,
)

RESOURCE = "hl7v2/resources/X.j2"


def resource_with(expression: str) -> dict[str, str]:
    """A root that emits X, whose line 3 evaluates ``expression``."""
    return {
        ROOT: '{% do emit("X") %}',
        RESOURCE: '{\n"resourceType": "Basic",\n"value": {{ ' + expression + ' }},\n"code": "c"\n}',
    }


# --- sandbox -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "msg.__class__",
        "''.__class__.__mro__",
        "cycler.__init__.__globals__",
        "msg.all.__self__",
        "msg.all.__self__.__dict__",
        "msg._cache",
        "msg.PID._fields",
        "msg.PID[5]._raw",
        "emit.__func__",
        "_session._env",
        "msg.__init__.__globals__['os']",
        "'{0.__class__}'.format(msg)",
        "lipsum.__globals__",
    ],
)
def test_templates_cannot_reach_python_internals(tmp_path: Path, expression: str) -> None:
    builtin = write_templates(tmp_path, resource_with(expression))
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin))
    assert caught.value.template == f"{RESOURCE}:3"


@pytest.mark.parametrize(
    "expression",
    [
        "mod._body_stream",
        "mod.__dict__",
        "mod.M._func.__globals__",
        "mod.M.__class__.__init__",
        "ns.__class__",
        "ns._Namespace__attrs",
        "ns.__init__.__globals__",
    ],
)
def test_imported_modules_and_namespaces_expose_only_template_values(
    tmp_path: Path, expression: str
) -> None:
    # Both types take the sandbox's fast path: only their public names, which a template set.
    templates = resource_with(expression)
    templates[RESOURCE] = (
        '{% import "hl7v2/datatypes/m.j2" as mod %}{% set ns = namespace(a=1) %}'
        + templates[RESOURCE]
    )
    templates["hl7v2/datatypes/m.j2"] = "{% macro M(x) %}{{ x }}{% endmacro %}"
    builtin = write_templates(tmp_path, templates)
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin))
    assert caught.value.template == f"{RESOURCE}:3"


def test_imported_macros_and_namespace_values_are_reachable(tmp_path: Path) -> None:
    templates = resource_with("mod.M(ns.a ~ mod.label)")
    templates[RESOURCE] = (
        '{% import "hl7v2/datatypes/m.j2" as mod %}{% set ns = namespace(a="one") %}'
        + templates[RESOURCE]
    )
    templates["hl7v2/datatypes/m.j2"] = (
        '{% set label = "two" %}{% macro M(x) %}{{ x }}{% endmacro %}'
    )
    builtin = write_templates(tmp_path, templates)
    (resource,) = render(make_session(builtin))
    assert resource["value"] == "onetwo"


def test_namespace_values_read_as_jinja_reads_them(tmp_path: Path) -> None:
    # namespace() attributes are read from the namespace's own dict (no Python frame):
    # what is set, set later, set to none, and what never was (undefined, not an error
    # until used) read as Jinja's own Namespace.__getattribute__ gives them.
    resource = one_resource(
        tmp_path,
        '{% set ns = namespace(a="one", none_value=none) %}{% set ns.b = "two" %}'
        '{"resourceType": "Basic", "code": {{ ns.a ~ ns.b }}, '
        '"n": {{ ns.none_value }}, "d": {{ ns.never | default("default") }}, '
        '"t": {{ "yes" if ns.never is defined else "no" }}}',
    )
    assert resource is not None
    assert (resource["code"], resource.get("n"), resource["d"], resource["t"]) == (
        "onetwo",
        None,
        "default",
        "no",
    )
    with pytest.raises(TemplateError, match="undefined"):
        one_resource(
            tmp_path / "strict",
            '{% set ns = namespace() %}{"resourceType": "Basic", "code": {{ ns.never }}}',
        )


def test_the_namespace_fast_path_is_on_with_the_pinned_jinja() -> None:
    # Off (the checked path) if a Jinja release keeps namespace values elsewhere.
    assert environment_module._NAMESPACE_ATTRIBUTES is True


def test_macros_and_template_methods_called_in_loops_with_keywords(tmp_path: Path) -> None:
    # The sandbox calls these directly (no Context.call): keywords, defaults, caller and
    # Jinja's own loop arguments must still arrive as Jinja would pass them.
    resource = one_resource(
        tmp_path,
        '{% macro pair(a, b="d") %}{{ a ~ "-" ~ b }}{% endmacro %}'
        '{% macro wrap(a) %}{"a": {{ a }}, "c": {{ caller() }}}{% endmacro %}'
        '{"resourceType": "Basic", "code": "c", "values": ['
        "{% for x in ['1', '2'] %}{{ pair(x, b=loop.index) }},{% endfor %}"
        "{% for x in ['3'] %}{% call wrap(x) %}\"+\"{% endcall %},{% endfor %}"
        "{% for seg in msg.all('PID') %}{{ seg[5].rep_where(1, 'DOE') }},{% endfor %}]}",
        msg=parse(MESSAGE),
    )
    assert resource is not None
    assert resource["values"] == ["1-1", "2-2", {"a": "3", "c": "+"}, "DOE"]


def test_template_globals_do_not_leak_into_the_environment(tmp_path: Path) -> None:
    # Template globals are plain dicts (a copy), not Jinja's ChainMap over the environment's.
    builtin = write_templates(tmp_path, {ROOT: ""})
    environment = make_templates(builtin).environment
    template = environment.from_string("{{ extra }}", globals={"extra": "x"})
    assert template.globals["extra"] == "x"
    assert template.globals["emit"] is environment.globals["emit"]
    assert "extra" not in environment.globals
    assert environment.from_string("{{ emit is defined }}").render() == "true"


@pytest.mark.parametrize(
    ("extension", "expression"),
    [
        ("{0.__class__}", "doc.id['extension'].format(doc)"),
        ("{code.__class__}", "doc.id['extension'].format_map(doc)"),
        ("x", "doc.code.__class__"),
        ("x", "doc._element"),
        ("x", "doc.first.__self__"),
        ("x", "doc.code['code'].__class__"),
    ],
)
def test_cda_nodes_and_attribute_values_keep_the_sandbox(
    tmp_path: Path, extension: str, expression: str
) -> None:
    from converter.cda import CdaDocument, PathCache
    from tests.cda._support import cda

    # Nodes take the sandbox's direct attribute read; their attribute values are strings,
    # whose format methods Jinja must still wrap (the id's extension is a format string).
    environment = make_templates(write_templates(tmp_path, {ROOT: ""})).environment
    data = cda(doc_id=f'<id root="1.2.3" extension="{extension}"/>').encode()
    doc = CdaDocument(data, PathCache()).root
    template = environment.from_string("{{ " + expression + " }}")
    with pytest.raises(SecurityError):
        template.render(doc=doc)


def test_cda_attribute_values_format_through_the_sandbox(tmp_path: Path) -> None:
    from converter.cda import CdaDocument, PathCache
    from tests.cda._support import cda

    # Jinja's sandboxed format builds type(self)(result): an attribute value without a
    # node, which once raised a TypeError in the template.
    environment = make_templates(write_templates(tmp_path, {ROOT: ""})).environment
    data = cda(doc_id='<id root="1.2.3" extension="DOC-{}"/>').encode()
    doc = CdaDocument(data, PathCache()).root
    rendered = environment.from_string("{{ doc.id['extension'].format(7) }}").render(doc=doc)
    assert json.loads(rendered) == "DOC-7"


def test_cda_node_children_and_missing_names_through_the_sandbox(tmp_path: Path) -> None:
    from converter.cda import CdaDocument, PathCache
    from tests.cda._support import cda

    environment = make_templates(write_templates(tmp_path, {ROOT: ""})).environment
    doc = CdaDocument(cda(body="").encode(), PathCache()).root
    render = environment.from_string(
        "{{ [doc.code['code'], doc.noSuchElement.code['code'], doc.code.null_flavor] }}"
    ).render
    code, absent, null_flavor = json.loads(render(doc=doc))
    assert code and absent == "" and null_flavor == ""


def test_calling_a_bound_method_owner_is_refused(tmp_path: Path) -> None:
    builtin = write_templates(tmp_path, resource_with("msg.all.__self__('PID')"))
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin))
    assert "unsafe" in str(caught.value)
    assert caught.value.template == f"{RESOURCE}:3"


def test_own_global_functions_are_called_directly_and_others_checked(tmp_path: Path) -> None:
    from jinja2 import pass_context

    environment = make_templates(write_templates(tmp_path, {ROOT: ""})).environment
    own = ("emit", "emitted", "include", "warn", "codemap", "hd_system", "require")
    assert {id(environment.globals[name]) for name in own} <= environment.direct_calls
    # A function added later is not trusted: a context-taking one still gets its context.
    environment.globals["ctx_name"] = pass_context(lambda ctx: ctx.name or "anonymous")
    assert id(environment.globals["ctx_name"]) not in environment.direct_calls
    assert environment.from_string("{{ ctx_name() }}").render() == '"anonymous"'
    # Nor is what a template calls through one of them: unsafe callables stay refused.
    with pytest.raises(SecurityError):
        environment.from_string("{{ require(msg.all.__self__) }}").render(msg=parse(MESSAGE))


def test_functions_that_need_jinja_call_path_cannot_be_trusted(tmp_path: Path) -> None:
    from jinja2 import pass_context

    environment = make_templates(write_templates(tmp_path, {ROOT: ""})).environment
    before = environment.direct_calls
    with pytest.raises(ConfigurationError):
        environment.call_directly([pass_context(lambda ctx: ctx)])
    assert environment.direct_calls == before


@pytest.mark.parametrize(
    ("statement", "name"),
    [
        ("{% do targets.append(1) %}", "targets"),
        ("{% do targets.pop() %}", "targets"),
        ("{% do mapping.update({'b': 2}) %}", "mapping"),
        ("{% do mapping.clear() %}", "mapping"),
        ("{% do emitted().append(1) %}", "targets"),
        ("{% do msg.children.clear() %}", "targets"),
        ("{% do _session.resources.clear() %}", "targets"),
        ("{% do _session.warnings.append('x') %}", "targets"),
    ],
)
def test_templates_cannot_mutate_shared_objects(tmp_path: Path, statement: str, name: str) -> None:
    builtin = write_templates(tmp_path, {ROOT: "\n" + statement})
    targets = [Ref("Patient", "a", "Patient/a")]
    mapping = {"a": 1}
    message = parse()
    segments_before = list(message.children)
    session = make_session(builtin, message=message, targets=targets, mapping=mapping)
    with pytest.raises(TemplateError) as caught:
        render(session)
    assert caught.value.template == f"{ROOT}:2"
    assert targets == [Ref("Patient", "a", "Patient/a")]
    assert mapping == {"a": 1}
    assert message.children == segments_before
    assert session.warnings == []


def test_ranges_are_bounded(tmp_path: Path) -> None:
    builtin = write_templates(tmp_path, {ROOT: "{% for i in range(10**9) %}{% endfor %}"})
    with pytest.raises(MappingError) as caught:
        render(make_session(builtin))
    # The sandbox's range limit, not any other failure of the template.
    assert caught.value.reason.startswith("OverflowError raised in template"), caught.value.reason
    assert caught.value.template == f"{ROOT}:1"


# --- strict undefined and absent HL7 values ------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "patinet",
        "msg.PID.patinet_name",
        "msg.PID[5].frist",
        "msg.pid",
        "msg.control_idd",
        "undefined_macro(1)",
    ],
)
def test_typos_fail_with_the_template_line(tmp_path: Path, expression: str) -> None:
    builtin = write_templates(tmp_path, resource_with(expression))
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin))
    assert caught.value.template == f"{RESOURCE}:3"
    assert str(caught.value).startswith("undefined in template: ")


def test_undefined_in_a_condition_fails_too(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path, {ROOT: '{% do emit("X") %}', RESOURCE: "{% if typo %}{% endif %}\n{}"}
    )
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin))
    assert caught.value.template == f"{RESOURCE}:1"


@pytest.mark.parametrize(
    "expression",
    [
        "msg.PID[40]",
        "msg.PID[40][2][1]",
        "msg.PID[3][4][4]",
        "msg.ZZZ",
        "msg.ZZZ[1]",
        "msg.SFT",
        "msg.SFT[1]",
        "msg.SFT.software_vendor_organization",
        "msg.all('OBX')",
        "msg.find('VISIT')",
        "msg.PID[3].rep_where(5, 'XX')",
        "msg.PV1[19].first",
    ],
)
def test_absent_hl7_values_render_as_nothing_and_are_pruned(
    tmp_path: Path, expression: str
) -> None:
    resource = one_resource(
        tmp_path,
        f'{{"resourceType": "Basic", "value": {{{{ {expression} }}}},'
        f' "list": [{{{{ {expression} }}}},], "code": "c"}}',
    )
    assert resource is not None
    assert {k: v for k, v in resource.items() if k != "id"} == {
        "resourceType": "Basic",
        "code": "c",
    }


def test_present_hl7_values_render_as_json_strings(tmp_path: Path) -> None:
    resource = one_resource(
        tmp_path,
        '{"resourceType": "Basic", "family": {{ msg.PID.patient_name }},'
        ' "given": {{ msg.PID[5][2] }}, "authority": {{ msg.PID[3][4][2] }},'
        ' "control": {{ msg.control_id }}, "event": {{ msg.event }}}',
    )
    assert resource is not None
    assert resource["family"] == "DOE"
    assert resource["given"] == "JOHN"
    assert resource["authority"] == "1.2.3"
    assert resource["control"] == "MSG0001"
    assert resource["event"] == "ADT^A08"


# --- what FHIR text cannot hold ---------------------------------------------------------------

#: PID-5: ESC raw in the family name and BEL as an HL7 escape (\X07\) in the given name;
#: then a tab, CR/LF (\.br\) and a backslash followed by "u001b", all fine for FHIR.
CONTROLS = MESSAGE.replace(b"DOE^JOHN", b"D\x1bOE^JO\\X07\\HN^T\\X09\\M\\.br\\X^C:\\E\\u001b")
CONTROL_FIELDS = (
    '{"resourceType": "Basic", "family": {{ msg.PID[5][1] }}, "given": {{ msg.PID[5][2] }},'
    ' "fine": [{{ msg.PID[5][3] }}, {{ msg.PID[5][4] }}],'
    ' "as_text": {{ msg.PID[5][2] | string }}, "in_list": {{ [msg.PID[5][1], "ok"] }}}'
)


def render_controls(tmp_path: Path, *, strict: bool) -> Any:
    builtin = write_templates(tmp_path, {ROOT: '{% do emit("X") %}', RESOURCE: CONTROL_FIELDS})
    session = make_session(builtin, strict=strict, message=parse(CONTROLS))
    return render(session), session.warnings


def test_control_characters_fail_a_strict_conversion_at_their_field(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as caught:
        render_controls(tmp_path, strict=True)
    assert caught.value.location == "PID-5.1"
    assert caught.value.template == f"{RESOURCE}:1"
    assert "U+001B" in str(caught.value) and "D" not in caught.value.reason.split("U+")[0]
    assert caught.value.detail == "D\\x1bOE"  # the value itself only in the detail


def test_control_characters_are_replaced_with_a_warning_when_lenient(tmp_path: Path) -> None:
    (resource,), warnings = render_controls(tmp_path, strict=False)
    assert resource["family"] == "D\ufffdOE" and resource["given"] == "JO\ufffdHN"
    assert resource["as_text"] == "JO\ufffdHN"
    assert resource["in_list"] == ["D\ufffdOE", "ok"]
    # Tab, CR/LF and a backslash followed by letters are text FHIR can hold: unchanged.
    assert resource["fine"] == ["T\tM\nX", "C:\\u001b"]
    assert any("U+001B" in w and "at PID-5.1" in w for w in warnings)
    # "as_text" goes through the string filter: no HL7 place, the template line instead.
    assert f"control character U+0007 is not allowed in FHIR text in {RESOURCE}:1; replaced" in (
        warnings
    )
    assert any("U+0007" in w and "at PID-5.2" in w for w in warnings)
    assert not any("OE" in w or "HN" in w for w in warnings), "no value in a warning"


class _LenientSession:
    """What to_json asks of the rendering session: its strictness, warn() and where."""

    strict_values = False

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> str:
        self.warnings.append(message)
        return ""

    def current_template_line(self) -> str | None:
        return None  # rendered outside any template


@pure_python_only  # its stand-in session is no RenderSession
@given(st.text(min_size=1, max_size=30))
@settings(max_examples=300)
def test_no_control_character_reaches_fhir_text(text: str) -> None:
    from converter.active_session import ACTIVE_SESSION

    forbidden = {chr(c) for c in range(32)} - {"\t", "\n", "\r"}
    expected = "".join("\ufffd" if ch in forbidden else ch for ch in text)
    session = _LenientSession()
    token = ACTIVE_SESSION.set(session)  # type: ignore[arg-type]
    try:
        assert json.loads(to_json(text)) == expected
        assert json.loads(to_json([text, {"k": text}])) == [expected, {"k": expected}]
    finally:
        ACTIVE_SESSION.reset(token)
    assert bool(session.warnings) == (expected != text)


# --- the JSON finalizer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_templates(tmp_path_factory.mktemp("env")).environment


def render_value(environment: Any, value: Any) -> Any:
    """``value`` written as a member, a list item and a nested member; parsed back."""
    template = environment.from_string(
        '{"x": {{ value }}, "l": [{{ value }}, {{ value }},], "o": {"k": {{ value }},},}'
    )
    return json_from_template(template.render(value=value), "inline")


TRICKY = st.sampled_from(
    ['"', "\\", "]", "}", ",]", ", }", "[", "{", "\n", "\r", "\t", "\x7f", "\x9b", "\u2028",
     "é", "日本", "\U0001f600", "{{", "%}", "&", "<", "'", "\\u005d", "\\u001b", " ", "null"]
)  # fmt: skip
#: Text a FHIR string can hold: every character but the C0 controls other than tab, CR
#: and LF (those are refused or replaced: test_no_control_character_reaches_fhir_text),
#: and lone surrogates, which no UTF-8 text (an HL7 message, FHIR JSON) can carry.
FHIR_TEXT = st.text(
    st.characters(
        blacklist_categories=["Cs"],
        blacklist_characters=[chr(c) for c in range(32) if chr(c) not in "\t\n\r"],
    ),
    max_size=5,
)
TEXT = st.lists(st.one_of(TRICKY, FHIR_TEXT), max_size=8).map("".join)


def kept(text: str) -> bool:
    return bool(text) and not text.isspace()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_any_text_round_trips_exactly(environment: Any, text: str) -> None:
    parsed = render_value(environment, text)
    if kept(text):
        assert parsed == {"x": text, "l": [text, text], "o": {"k": text}}
    else:
        assert parsed is None


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_hl7_values_round_trip_exactly(environment: Any, text: str) -> None:
    # Through an HL7 field: escape sequences decoded, then written as JSON.
    escaped = (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", "")
        .replace("\n", "")
    )
    expected = text.replace("\r", "").replace("\n", "")
    message = parse(MESSAGE.replace(b"DOE^JOHN", escaped.encode("utf-8") + b"^JOHN"))
    value = message.PID[5][1]
    parsed = render_value(environment, value)
    if kept(expected) and expected != '""':
        assert parsed == {"x": expected, "l": [expected, expected], "o": {"k": expected}}
    else:
        assert parsed is None


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.one_of(
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.lists(TEXT, max_size=4),
        st.dictionaries(TEXT, st.one_of(TEXT, st.integers(), st.none()), max_size=4),
    )
)
def test_numbers_booleans_lists_and_dicts(environment: Any, value: Any) -> None:
    parsed = render_value(environment, value)
    expected: Any = value
    if isinstance(value, float):
        # Non-integer numbers are read back as Decimal, digit for digit as written.
        expected = Decimal(json.dumps(value))
    elif isinstance(value, list):
        expected = [item for item in value if kept(item)]
    elif isinstance(value, dict):
        expected = {
            k: v for k, v in value.items() if v is not None and (not isinstance(v, str) or kept(v))
        }
    if expected == [] or expected == {}:
        assert parsed is None
    else:
        assert parsed == {"x": expected, "l": [expected, expected], "o": {"k": expected}}


def test_scalars_exactly() -> None:
    assert to_json(None) == "null"
    assert to_json("") == "null"
    assert to_json(True) == "true"
    assert to_json(False) == "false"
    assert to_json(0) == "0"
    assert to_json(-12) == "-12"
    assert to_json(1.5) == "1.5"
    assert to_json('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    assert to_json("a]b}c") == '"a\\u005db\\u007dc"'
    assert to_json("é") == '"é"'
    assert to_json(["a", None, Ref("Patient", "1", "Patient/1")]) == (
        '["a", null, {"reference": "Patient/1"}]'
    )
    assert to_json({"k]": "v}"}) == '{"k\\u005d": "v\\u007d"}'
    assert type(to_json("x")) is Markup


def test_decimals_are_written_digit_for_digit() -> None:
    assert to_json(Decimal("7.20")) == "7.20"
    assert to_json(Decimal("-0.050")) == "-0.050"
    assert to_json({"value": Decimal("1.50"), "unit": "mmol/L"}) == (
        '{"value": 1.50, "unit": "mmol/L"}'
    )
    assert json_from_template('{"value": 1.50, "n": [3, 0.10]}', "t") == {
        "value": Decimal("1.50"),
        "n": [3, Decimal("0.10")],
    }


@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, math.nan, [math.inf], {"a": math.nan}, Decimal("NaN"), Decimal("-Inf")],
)
def test_non_finite_numbers_are_not_written(value: Any) -> None:
    with pytest.raises(ValueError):
        to_json(value)


def test_a_non_finite_number_in_a_template_is_a_located_mapping_error(tmp_path: Path) -> None:
    builtin = write_templates(tmp_path, resource_with("big | float"))
    with pytest.raises(MappingError) as caught:
        render(make_session(builtin, big="1e999"))
    assert caught.value.template == f"{RESOURCE}:3"
    assert str(caught.value) == f"ValueError raised in template in template {RESOURCE}:3"


def test_runaway_recursion_is_a_mapping_error(tmp_path: Path) -> None:
    builtin = write_templates(tmp_path, {ROOT: "{% macro m() %}{{ m() }}{% endmacro %}\n{{ m() }}"})
    with pytest.raises(MappingError) as caught:
        render(make_session(builtin))
    assert caught.value.template == f"{ROOT}:1"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("none", None),
        ("true", True),
        ("false", False),
        ("12", 12),
        ('"final"', "final"),
        ('"a&b<c>"', "a&b<c>"),
        ('"]"', "]"),
        ('["x", none, "y"]', ["x", "y"]),
        ('{"a": "b", "c": none}', {"a": "b"}),
    ],
)
def test_constant_expressions_are_json_too(tmp_path: Path, expression: str, expected: Any) -> None:
    # Jinja folds constants at compile time; they must still go through the finalizer.
    resource = one_resource(
        tmp_path, '{"resourceType": "Basic", "value": {{ ' + expression + ' }}, "code": "c"}'
    )
    assert resource is not None
    assert resource.get("value") == expected


@pytest.mark.parametrize("autoescape", ["true", "false"])
def test_expressions_are_json_with_autoescaping_toggled_too(
    tmp_path: Path, autoescape: str
) -> None:
    # Inside {% autoescape %} Jinja's own output code runs instead of json_output().
    resource = one_resource(
        tmp_path,
        "{% autoescape " + autoescape + ' %}{"resourceType": "Basic", "value": {{ v }}, '
        '"n": {{ none }}, "code": {{ "a&b" }}}{% endautoescape %}',
        v='say "hi" <b>',
    )
    assert resource is not None
    assert (resource["value"], resource["code"], "n" in resource) == ('say "hi" <b>', "a&b", False)


def test_expressions_compile_to_one_json_output_call(tmp_path: Path) -> None:
    # The finalizer's Markup is not escaped a second time (see _JsonCodeGenerator).
    builtin = write_templates(tmp_path, {ROOT: ""})
    environment = make_templates(builtin).environment
    source = environment.compile("{{ a }}{{ b | string }}", raw=True)
    assert source.count("environment.json_output(") == 2
    assert "escape(" not in source.replace("json_output(", "")


def test_markup_passes_through_and_blank_macro_output_is_null(tmp_path: Path) -> None:
    assert to_json(Markup('{"a": 1}')) == '{"a": 1}'
    assert to_json(Markup(" \n\t ")) == "null"
    resource = one_resource(
        tmp_path,
        '{% macro obj(v) %}\n  {"text": {{ v }}, "n": [1, 2,],}\n{% endmacro %}'
        "{% macro blank(v) %}\n  {% if v %}{{ v }}{% endif %}\n  \n{% endmacro %}"
        '{"resourceType": "Basic", "a": {{ obj("x,]") }}, "b": {{ blank(none) }},'
        ' "c": [{{ blank(none) }}, {{ obj("y") }},], "d": {{ blank("z") }}}',
    )
    assert resource is not None
    assert {k: v for k, v in resource.items() if k != "id"} == {
        "resourceType": "Basic",
        "a": {"text": "x,]", "n": [1, 2]},
        "c": [{"text": "y", "n": [1, 2]}],
        "d": "z",
    }


def test_commas_inside_values_are_untouched(tmp_path: Path) -> None:
    values = ["a,]", "b, }", ",", "x ,\n]", '",]"']
    resource = one_resource(
        tmp_path,
        '{"resourceType": "Basic", "v": [{% for v in values %}{{ v }},{% endfor %}],'
        ' "o": {{ values }},}',
        values=values,
    )
    assert resource is not None
    assert resource["v"] == values
    assert resource["o"] == values


# --- the template set --------------------------------------------------------------------------


def test_template_list_marks_overrides_and_exists(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path / "builtin",
        {
            ROOT: "",
            "hl7v2/resources/A.j2": "",
            "hl7v2/resources/B.j2": "",
            "cda/x.j2": "",
        },
    )
    override = write_templates(
        tmp_path / "site",
        {"hl7v2/resources/B.j2": "", "hl7v2/resources/C.j2": "", "hl7v2/routes.toml": ""},
    )
    templates = make_templates(builtin, overrides=[override])
    assert templates.list("hl7v2") == [
        TemplateInfo(ROOT, builtin / ROOT, False),
        TemplateInfo("hl7v2/resources/A.j2", builtin / "hl7v2/resources/A.j2", False),
        TemplateInfo("hl7v2/resources/B.j2", override / "hl7v2/resources/B.j2", True),
        TemplateInfo("hl7v2/resources/C.j2", override / "hl7v2/resources/C.j2", True),
    ]
    assert [info.name for info in templates.list()] == [
        "cda/x.j2",
        ROOT,
        "hl7v2/resources/A.j2",
        "hl7v2/resources/B.j2",
        "hl7v2/resources/C.j2",
    ]
    assert templates.exists("hl7v2/resources/C.j2")
    assert templates.exists("hl7v2/resources/A.j2")
    assert not templates.exists("hl7v2/resources/D.j2")
    assert templates.exists("builtin/hl7v2/resources/B.j2")  # the shipped one
    assert not templates.exists("builtin/hl7v2/resources/C.j2")  # only in the override


@pytest.mark.parametrize(
    "name",
    [
        "../builtin/hl7v2/resources/A.j2",  # exists on disk, outside the search path
        "hl7v2/../../builtin/hl7v2/resources/A.j2",
        "a" * 5000 + ".j2",  # longer than a file name may be: once an OSError
        "a/" * 3000 + "A.j2",
        "hl7v2/resources/A\x00.j2",
    ],
)
def test_exists_is_false_outside_the_search_path_and_for_impossible_names(
    tmp_path: Path, name: str
) -> None:
    builtin = write_templates(tmp_path / "builtin", {ROOT: "", "hl7v2/resources/A.j2": ""})
    templates = make_templates(builtin, overrides=[write_templates(tmp_path / "site", {})])
    assert (tmp_path / "site" / "../builtin/hl7v2/resources/A.j2").is_file()
    assert not templates.exists(name)


def test_override_replaces_and_builtin_prefix_reaches_the_shipped_template(
    tmp_path: Path,
) -> None:
    builtin = write_templates(
        tmp_path / "builtin",
        {
            ROOT: '{% do emit("P") %}{% do emit("Q") %}',
            "hl7v2/resources/P.j2": '{"resourceType": "Basic", "code": "builtin-P"}',
            "hl7v2/resources/Q.j2": '{"resourceType": "Basic", "code": "builtin-Q"}',
        },
    )
    override = write_templates(
        tmp_path / "site",
        {
            "hl7v2/resources/P.j2": '{"resourceType": "Basic", "code": "site-P"}',
            # Wraps the shipped root: same resources, plus one.
            ROOT: '{% include "builtin/hl7v2/messages/R.j2" %}{% do emit("Extra") %}',
            "hl7v2/resources/Extra.j2": '{"resourceType": "Basic", "code": "extra"}',
        },
    )
    codes = [r["code"] for r in render(make_session(builtin, overrides=[override]))]
    assert codes == ["site-P", "builtin-Q", "extra"]
    assert [r["code"] for r in render(make_session(builtin))] == ["builtin-P", "builtin-Q"]


def test_earlier_override_directories_win(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path / "builtin",
        {ROOT: '{% do emit("P") %}', "hl7v2/resources/P.j2": '{"resourceType": "Basic"}'},
    )
    first = write_templates(
        tmp_path / "first", {"hl7v2/resources/P.j2": '{"resourceType": "Basic", "code": "1"}'}
    )
    second = write_templates(
        tmp_path / "second", {"hl7v2/resources/P.j2": '{"resourceType": "Basic", "code": "2"}'}
    )
    session = make_session(builtin, overrides=[first, second])
    assert [r["code"] for r in render(session)] == ["1"]


def test_a_missing_override_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_templates(tmp_path, overrides=[tmp_path / "nope"])
    assert str(tmp_path / "nope") in str(caught.value)


def test_environment_is_an_immutable_sandbox(tmp_path: Path) -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    templates: TemplateSet = make_templates(tmp_path)
    assert isinstance(templates.environment, ImmutableSandboxedEnvironment)
    assert json.loads(templates.environment.from_string("{{ x }}").render(x="q")) == "q"


# --- fast paths: the same results as the checked paths -------------------------------------


class _Mapping(dict):  # type: ignore[type-arg]
    """A dict subclass: to_json and the sandbox take their general paths for it."""


@settings(max_examples=300)
@given(st.dictionaries(TEXT, TEXT, max_size=4))
def test_a_dict_of_strings_is_written_as_any_container(value: dict[str, str]) -> None:
    # Code map codings (dicts of strings) skip the encoder: the same text, the same
    # bracket protection, the same refusal of control characters.
    def written(mapping: dict[str, str]) -> Any:
        try:
            return str(to_json(mapping))
        except MappingError as exc:
            return exc.reason if hasattr(exc, "reason") else str(exc)

    assert written(value) == written(_Mapping(value))


def test_plain_dicts_and_strings_read_through_the_sandbox(tmp_path: Path) -> None:
    templates = resource_with(
        "[m.a, m.get('a'), m.get('zz', 'd'), m.items() | list | length, 'x-y'.split('-'), "
        "m['get'], m.values() | first, 'ABC'.lower().startswith('ab'), n.a]"
    )
    builtin = write_templates(tmp_path, templates)
    mapping = {"a": "1", "get": "item"}
    (resource,) = render(make_session(builtin, m=mapping, n=_Mapping(a="2")))
    assert resource["value"] == ["1", "1", "d", 2, ["x", "y"], "item", "1", True, "2"]


@pytest.mark.parametrize(
    "expression",
    ["m.zz", "m.__class__", "m.copy.__self__", "m.setdefault('b', 1)", "'{0.__class__}'.format(m)"],
)
def test_plain_dicts_and_strings_keep_the_sandbox(tmp_path: Path, expression: str) -> None:
    builtin = write_templates(tmp_path, resource_with(expression))
    mapping = {"a": "1"}
    with pytest.raises(TemplateError) as caught:
        render(make_session(builtin, m=mapping))
    assert caught.value.template == f"{RESOURCE}:3"
    assert mapping == {"a": "1"}


def test_macro_calls_with_defaults_and_wrong_arguments(tmp_path: Path) -> None:
    # Positional calls to plain macros skip Macro.__call__; the others still go through it.
    macros = (
        '{% macro three(a, b="B", c=none) %}{{ [a, b, c] }}{% endmacro %}'
        "{% macro rest() %}{{ [varargs, kwargs] }}{% endmacro %}"
    )
    resource = one_resource(
        tmp_path,
        macros + '{"resourceType": "Basic", "code": "c", "v": [{{ three("x") }}, '
        '{{ three("x", "y", "z") }}, {{ three(c="w", a="v") }}, {{ rest(1, k=2) }}]}',
    )
    assert resource is not None
    assert resource["v"] == [["x", "B"], ["x", "y", "z"], ["v", "B", "w"], [[1], {"k": 2}]]
    with pytest.raises(MappingError) as caught:
        one_resource(tmp_path / "many", macros + "{{ three(1, 2, 3, 4) }}")
    assert "takes not more than 3 argument" in str(caught.value.detail)


def test_cda_nodes_are_one_object_per_element(tmp_path: Path) -> None:
    from converter.cda import CdaDocument, PathCache
    from tests.cda._support import cda

    doc = CdaDocument(cda(body="").encode(), PathCache())
    root = doc.root
    assert root.code is root.code and root.code == root.all("code")[0]
    assert root.code is root.first("code")
    assert root.code is root.code.parent.code.parent.all("code")[0]
    assert root.code["code"] is root.code["code"]
    assert not root.nothing and root.nothing is root.nothing
    assert root.code.parent is root and not root.parent


def test_cda_id_references_are_found_as_xpath_finds_them(tmp_path: Path) -> None:
    from converter.cda import CdaDocument, PathCache
    from converter.cda.document import _BY_ID
    from tests.cda._support import cda

    body = (
        '<component><section><text><content ID="a">one</content><content ID="a">two'
        '</content><content ID="">none</content></text></section></component>'
    )
    doc = CdaDocument(cda(body=body).encode(), PathCache())
    for key in ("a", "", "zz"):
        expression = f"//*[@ID='{key}']"
        assert _BY_ID.fullmatch(expression)
        found = doc.root.xpath(expression)
        assert [n._element for n in found] == doc._paths.get(expression, raw=True)(doc._root)
    assert [n.string() for n in doc.root.xpath("//*[@ID='a']")] == ["one", "two"]
    assert doc.narrative("#a") == "two"


def test_an_import_from_a_context_with_more_globals_renders_the_module_again(
    tmp_path: Path,
) -> None:
    """The imported module made once serves contexts whose globals it has; a template
    loaded with globals of its own imports a module that sees them (Jinja's rule)."""
    builtin = write_templates(tmp_path, {"lib.j2": '{% set v = extra | default("none") %}'})
    environment = make_templates(builtin).environment
    plain = environment.from_string('{% import "lib.j2" as lib %}{{ lib.v }}')
    assert plain.render() == '"none"'
    assert plain.render() == '"none"'  # the module made once
    extra = environment.from_string(
        '{% import "lib.j2" as lib %}{{ lib.v }}', globals={"extra": "given"}
    )
    assert extra.render() == '"given"'
    assert plain.render() == '"none"'
