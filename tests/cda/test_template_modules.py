"""CDA templates keep their macros in imported modules (mappings/cda/datatypes).

A macro defined in a template that is rendered (a document root, a resource, a section)
is made anew at every render, with reference cycles left to the garbage collector; an
imported module is made once per environment. So no rendered CDA template defines a
macro, and a conversion, once the first one has loaded the modules, makes none."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2.runtime
import pytest

from converter import Converter, ConverterConfig

from ._support import REPO, SAMPLES

CDA = REPO / "mappings" / "cda"
RENDERED = sorted(
    path
    for folder in ("documents", "resources", "sections")
    for path in (CDA / folder).glob("*.j2")
)
MACRO = re.compile(r"\{%-?\s*macro\b")


@pytest.mark.parametrize("template", RENDERED, ids=lambda p: str(p.relative_to(CDA)))
def test_rendered_template_defines_no_macro(template: Path) -> None:
    lines = [
        number
        for number, line in enumerate(template.read_text(encoding="utf-8").splitlines(), 1)
        if MACRO.search(line)
    ]
    assert not lines, f"{template.name}: macro at line(s) {lines}; move it to cda/datatypes"


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.xml")), ids=lambda p: p.name)
def test_a_conversion_makes_no_macro_once_the_modules_are_loaded(
    sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    converter = Converter(ConverterConfig())
    data = sample.read_bytes()
    converter.convert(data, input_type="cda")  # loads and caches the imported modules
    made: list[str] = []
    original = jinja2.runtime.Macro.__init__

    def counting(self: jinja2.runtime.Macro, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self.name)

    monkeypatch.setattr(jinja2.runtime.Macro, "__init__", counting)
    converter.convert(data, input_type="cda")
    assert made == [], sorted(set(made))
