"""Printed text: control characters from senders are shown escaped, never interpreted."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from converter.printable import printable, printable_json

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in BIDI


def test_controls_become_visible_escapes() -> None:
    assert printable("C\x1b[2J1") == "C\\x1b[2J1"
    assert printable("A01\nERROR forged") == "A01\\x0aERROR forged"
    assert printable("x\u2028y\u202egnp.exe") == "x\\u2028y\\u202egnp.exe"
    assert printable("\x9b31m\x7f") == "\\x9b31m\\x7f"


def test_ordinary_text_is_untouched() -> None:
    for text in ("ADT^A01^ADT_A01", "Hôpital Saint-Éloi", "\u00a0nbsp", "患者", "👩‍⚕️"):
        assert printable(text) == text
        assert printable_json(json.dumps(text, ensure_ascii=False)) == json.dumps(
            text, ensure_ascii=False
        )


def escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@given(st.text())
def test_each_unsafe_character_and_only_those_are_escaped(text: str) -> None:
    shown = printable(text)
    assert shown == "".join(escaped(ch) if unsafe(ch) else ch for ch in text)
    assert not any(unsafe(ch) for ch in shown)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values, st.sampled_from([None, 2]))
def test_printable_json_decodes_to_the_same_values(value: Any, indent: int | None) -> None:
    text = printable_json(json.dumps(value, ensure_ascii=False, indent=indent))
    assert json.loads(text) == value
    # Outside the layout of indented JSON (newlines, spaces), nothing unsafe is left.
    assert not any(unsafe(ch) for ch in text if ch != "\n")
