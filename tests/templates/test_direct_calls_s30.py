"""Session 30, CDA conversion speed: what compiled templates call and read directly.

A macro called with positional arguments, a CDA node's methods (``cd.all(...)``), its
attributes named by a written-out string (``cd["code"]``) and its children read for the
first time are reached by the template's own code, without the sandbox's ``call`` and
``getitem`` frames and without an exception raised and caught on the way. Everything
else keeps the sandbox's path; the outputs are the same (the goldens and corpora compare
whole documents).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from types import FrameType
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.cda import CdaDocument, PathCache
from converter.cda.node import is_attribute_name
from tests.cda._support import cda
from tests.conftest import SAMPLES_DIR


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig(validate=False))


@pytest.fixture
def sandbox(converter: Converter, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """What goes through the sandbox's ``call`` (by callee name) and ``getitem``."""
    environment = converter.templates.environment
    seen: Counter[str] = Counter()
    call, getitem = type(environment).call, type(environment).getitem

    def counting_call(self: Any, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
        seen["call " + getattr(obj, "__name__", type(obj).__name__)] += 1
        return call(self, context, obj, *args, **kwargs)

    def counting_getitem(self: Any, obj: Any, key: Any) -> Any:
        seen[f"getitem {type(obj).__name__}[{key!r}]"] += 1
        return getitem(self, obj, key)

    monkeypatch.setattr(type(environment), "call", counting_call)
    monkeypatch.setattr(type(environment), "getitem", counting_getitem)
    return seen


def _render(converter: Converter, source: str, **variables: Any) -> Any:
    template = converter.templates.environment.from_string(source)
    return json.loads(template.render(**variables))


def _document() -> CdaDocument:
    return CdaDocument((SAMPLES_DIR / "cda" / "CCD_lefevre-camille.xml").read_bytes(), PathCache())


def test_a_macro_with_positional_arguments_is_called_directly(
    converter: Converter, sandbox: Counter[str]
) -> None:
    source = (
        "{% macro m(x, y=2) %}[{{ x }}, {{ y }}]{% endmacro %}"
        "{% macro nothing() %}{{ 0 }}{% endmacro %}"
        "[{{ m(1) }}, {% for i in [3] %}{{ m(i, 4) }}, {% endfor %}{{ nothing() }}]"
    )
    assert _render(converter, source) == [[1, 2], [3, 4], 0]
    assert sandbox == Counter()


def test_a_macro_with_keyword_or_star_arguments_keeps_the_sandbox_s_call(
    converter: Converter, sandbox: Counter[str]
) -> None:
    source = (
        "{% macro m(x, y=2) %}[{{ x }}, {{ y }}]{% endmacro %}"
        "[{{ m(1, y=5) }}, {{ m(*[6, 7]) }}, {{ m(**{'x': 8}) }}, {{ m(m(9)) }}]"
    )
    assert _render(converter, source) == [[1, 5], [6, 7], [8, 2], [[9, 2], 2]]
    # A macro call holding another call writes its arguments once (Jinja's code path):
    # the outer m(m(9)) goes through call, the inner one does not.
    assert sandbox == Counter({"call Macro": 4})


def test_a_function_named_like_a_macro_is_still_checked(
    converter: Converter, sandbox: Counter[str]
) -> None:
    def handed(x: int) -> int:
        return x + 1

    assert _render(converter, "[{{ f(1) }}]", f=handed) == [2]
    assert sandbox == Counter({"call handed": 1})


def test_node_methods_and_attributes_are_read_directly(
    converter: Converter, sandbox: Counter[str]
) -> None:
    root = _document().root
    written = _render(
        converter,
        "[{{ doc.all('component/structuredBody/component') | length }}, "
        "{{ doc.first('recordTarget/patientRole').id['extension'] }}, "
        "{{ doc.code['code'] }}, {{ doc.code['codeSystem'] }}, "
        "{{ doc.has_template('2.16.840.1.113883.10.20.22.1.2') }}, "
        "{{ doc.title.string() }}, {{ doc.nosuch['code'] }}]",
        doc=root,
    )
    assert written == [
        len(root.all("component/structuredBody/component")),
        str(root.first("recordTarget/patientRole").id["extension"]),
        str(root.code["code"]),
        str(root.code["codeSystem"]),
        True,
        root.title.string(),
        None,  # an absent element's attribute: empty, written as null
    ]
    assert sandbox == Counter()


def test_the_same_expressions_on_other_objects_take_the_sandbox_s_path(
    converter: Converter, sandbox: Counter[str]
) -> None:
    # ``x.all(...)`` and ``x["code"]`` compile to a node's fast path with the sandbox's
    # path beside it: a dict holding a function, a dict, a string.
    def handed(path: str) -> str:
        return path.upper()

    written = _render(
        converter,
        "[{{ d.all('a/b') }}, {{ d['code'] }}, {{ s['code'] is defined }}]",
        d={"all": handed, "code": "C"},
        s="text",
    )
    assert written == ["A/B", "C", False]
    assert sandbox == Counter(
        {"call handed": 1, "getitem dict['code']": 1, "getitem str['code']": 1}
    )


def test_an_unknown_attribute_prefix_keeps_jinja_s_code(
    converter: Converter, sandbox: Counter[str]
) -> None:
    root = _document().root
    # ``node["foo:bar"]`` raises KeyError in the node: the sandbox's getitem then reads
    # the child of that name (an empty node), as before.
    assert _render(converter, "{{ doc['foo:bar'] is defined }}", doc=root) is True
    assert _render(converter, "{{ doc['xsi:type'] }}", doc=root) is None
    assert sandbox == Counter({"getitem Node['foo:bar']": 1})


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("code", True),
        ("xsi:type", True),
        ("sdtc:valueSet", True),
        ("foo:bar", False),
        (":code", False),
        (3, False),
        (None, False),
    ],
)
def test_attribute_names_a_node_answers(key: object, expected: bool) -> None:
    assert is_attribute_name(key) is expected
    root = _document().root
    if expected:
        assert root[key] == ""  # type: ignore[index]
    else:
        with pytest.raises(KeyError):
            root[key]  # type: ignore[index]


def _exceptions_raised(action: Any) -> Counter[str]:
    """Exceptions raised in Python frames while ``action`` runs (``sys.settrace``)."""
    raised: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "exception":
            _, exc, tb = arg
            if tb is not None and tb.tb_next is None and tb.tb_frame is frame:
                raised[f"{type(exc).__name__} in {frame.f_code.co_name}"] += 1
        return trace

    sys.settrace(trace)
    try:
        action()
    finally:
        sys.settrace(None)
    return raised


def test_first_reads_of_a_node_raise_nothing(converter: Converter) -> None:
    root = CdaDocument(cda(body="").encode(), PathCache()).root
    template = converter.templates.environment.from_string(
        "[{{ doc.code['code'] }}, {{ doc.code['displayName'] }}, {{ doc.title.string() }}, "
        "{{ doc.recordTarget.patientRole.id['root'] }}, {{ doc.nosuch['code'] }}]"
    )
    raised = _exceptions_raised(lambda: template.render(doc=root))
    assert json.loads(template.render(doc=root))[0] == str(root.code["code"])
    assert "__getitem__" not in str(raised) and "__getattr__" not in str(raised), raised


def test_a_converted_document_raises_few_exceptions(converter: Converter) -> None:
    """A C-CDA document read ~4,600 exceptions per conversion (first reads of attributes
    and children); now a handful (loop ends, Jinja's own lookups)."""
    data = (SAMPLES_DIR / "cda" / "CCD_lefevre-camille.xml").read_bytes()
    converter.convert_document(data)  # templates compiled, tables loaded
    raised = _exceptions_raised(lambda: converter.convert_document(data))
    assert sum(raised.values()) < 100, raised.most_common(5)
