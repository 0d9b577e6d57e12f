"""Session 23, the conversion engine's speed: the global functions templates call
(``emit``, ``codemap``, ``namespace``…) are called by the compiled template itself,
without the sandbox's ``call`` frame; everything else keeps the sandbox's checks and
every output stays the same (the samples' goldens and tests/templates/test_engine_s22.py
compare them with Jinja's own code). ``hd_system`` works an authority's system out once."""

from __future__ import annotations

import json
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import SecurityError, unsafe

from converter import Converter, ConverterConfig
from converter.datetimes import TimestampConverter
from converter.templates import codegen, filter_base
from converter.templates.codemaps import CodeMaps
from converter.templates.filters import ValueFilters
from tests.conftest import REPO_ROOT

BUILTIN = REPO_ROOT / "mappings" / "codemaps"
PARIS = TimestampConverter("Europe/Paris")


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig(validate=False))


@pytest.fixture
def sandbox_calls(converter: Converter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of what goes through the sandbox's ``call``, as templates render."""
    environment = converter.templates.environment
    seen: list[str] = []
    original = type(environment).call

    def counting(self: Any, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(obj, "__name__", type(obj).__name__))
        return original(self, context, obj, *args, **kwargs)

    monkeypatch.setattr(type(environment), "call", counting)
    return seen


def _render(converter: Converter, source: str, **variables: Any) -> Any:
    template = converter.templates.environment.from_string(source)
    return json.loads(template.render(**variables))


def test_trusted_functions_are_called_without_the_sandbox_s_call(
    converter: Converter, sandbox_calls: list[str]
) -> None:
    """At the top level, in a loop (where Jinja passes ``_loop_vars``), in a macro, with
    keyword, ``*`` and ``**`` arguments: the same values, no ``call`` frame."""
    source = (
        "{% macro m(x) %}{{ namespace(v=x).v }}{% endmacro %}"
        "[{{ namespace(a=1).a }}, "
        "{% for i in [2, 3] %}{{ namespace(a=i, b=i * 10).b }}, {% endfor %}"
        "{{ m(4) }}, {{ namespace(**{'k': 5}).k }}, "
        '{{ codemap("AdministrativeSex", "F").code }}, '
        "{{ namespace(a=namespace(b=6).b).a }}]"
    )
    assert _render(converter, source) == [1, 20, 30, 4, 5, "female", 6]
    # Nor does the macro, called with positional arguments (tests/templates/
    # test_direct_calls_s30.py).
    assert sandbox_calls == []


def test_other_calls_keep_the_sandbox_s_checks(
    converter: Converter, sandbox_calls: list[str]
) -> None:
    """A function handed to the template, a method, a macro: through ``call``, so an
    unsafe callable is still refused and ``str.format`` still sandboxed."""

    def handed(x: int) -> int:
        return x + 1

    written = _render(
        converter,
        '[{{ f(1) }}, {{ "a,b".split(",") }}, {{ "{0}".format(7) }}]',
        f=handed,
    )
    assert written == [2, ["a", "b"], "7"]
    assert sandbox_calls == ["handed", "split", "format"]
    with pytest.raises(SecurityError):
        converter.templates.environment.from_string("{{ f() }}").render(f=unsafe(lambda: 1))


def test_a_trusted_function_replaced_in_the_context_takes_the_sandbox_s_path(
    converter: Converter, sandbox_calls: list[str]
) -> None:
    """The test is made on every call, on the object called: a template variable shadowing
    a trusted global is an ordinary callable."""
    assert _render(converter, "[{{ codemap(2) }}]", codemap=lambda x: x * 2) == [4]
    assert sandbox_calls == ["<lambda>"]


def test_call_blocks_and_blocks_keep_jinja_s_code(converter: Converter) -> None:
    """``{% call %}`` forwards ``caller``: Jinja's code; inside a block (Jinja passes
    ``_block_vars``) a trusted function is still called directly and gives the same."""
    environment = converter.templates.environment
    source = (
        "{% macro m() %}[{{ caller() }}]{% endmacro %}"
        "[{% call m() %}{{ namespace(v=1).v }}{% endcall %}, "
        "{% block b %}{{ namespace(v=2).v }}{% endblock %}]"
    )
    assert json.loads(environment.from_string(source).render()) == [[1], 2]
    code = environment.compile(source, raw=True)
    m = "(undefined(name='m') if l_0_m is missing else l_0_m)"
    assert f"environment.call(context, {m}, caller=caller)" in code


def test_a_call_with_many_nested_calls_is_written_once(converter: Converter) -> None:
    """The direct path writes the arguments twice: a call whose arguments hold more than
    one call keeps Jinja's code (its inner calls still may take the direct path), so the
    code cannot double at each level."""
    environment = converter.templates.environment
    inner = "namespace(v=namespace(v=namespace(v=namespace(v=1).v).v).v).v"
    source = "{{ namespace(a=" + inner + ").a }}"
    code = environment.compile(source, raw=True)
    # The outer three: Jinja's code; the fourth (one call in its arguments): the direct
    # path, its arguments (the fifth, direct too) written twice.
    assert code.count("environment.call(context, ") == 6
    assert code.count("in environment.direct_calls") == 3
    assert json.loads(environment.from_string(source).render()) == 1


def test_the_direct_path_needs_the_trusted_set() -> None:
    """An environment without ``direct_calls`` (Jinja's own sandbox) gets Jinja's code."""
    environment = jinja2.sandbox.SandboxedEnvironment()
    environment.code_generator_class = codegen.JsonCodeGenerator
    code = environment.compile("{{ f(1) }}", raw=True)
    assert "direct_calls" not in code and "environment.call(context, " in code


# -- the system of an assigning authority, worked out once ------------------------------------


def test_an_authority_s_system_is_worked_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same CX.4 comes in most identifiers of a message (and of the next ones): its
    system is looked up in the code maps once, the same answer every time."""
    filters = ValueFilters(PARIS, CodeMaps.load([BUILTIN]), strict=True)
    looked_up: list[str] = []
    original = CodeMaps.lookup

    def counting(self: CodeMaps, map_name: str, code: Any, *args: Any) -> Any:
        looked_up.append(map_name)
        return original(self, map_name, code, *args)

    monkeypatch.setattr(CodeMaps, "lookup", counting)
    first = [filters.hd_system(hd) for hd in ("ASIP-SANTE-PS", "HOP-PARIS-EST", "&1.2.3&ISO")]
    asked = len(looked_up)
    assert asked > 0
    again = [filters.hd_system(hd) for hd in ("ASIP-SANTE-PS", " HOP-PARIS-EST ", "&1.2.3&ISO")]
    assert again == first == ["urn:oid:1.2.250.1.71.4.2.1", None, None]
    assert len(looked_up) == asked


def test_the_systems_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authorities are message content: however many a sender makes up, the filters keep
    a bounded number of answers, and still answer right after starting again."""
    monkeypatch.setattr(filter_base, "MAX_REMEMBERED", 10)
    filters = ValueFilters(PARIS, CodeMaps.load([BUILTIN]), strict=True)
    for n in range(25):
        assert filters.hd_system(f"1.2.250.{n}") == f"urn:oid:1.2.250.{n}"
        assert len(filters._hd_systems) <= 10
    assert filters.hd_system("ASIP-SANTE-PS") == "urn:oid:1.2.250.1.71.4.2.1"
