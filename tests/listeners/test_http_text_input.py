"""$convert-data's text encoded as its reader will decode it (listeners.http.text_input)."""

from __future__ import annotations

import pytest

from listeners.http.text_input import UnencodableText, encode_input

MSH = "MSH|^~\\&|APP|FAC|R|R|20240101||ADT^A01^ADT_A01|C1|P|2.5.1"
PID = "PID|1||12345^^^HOSP^MR||Lefèvre^Éloïse"


@pytest.mark.parametrize(
    ("msh_tail", "default", "codec"),
    [
        ("||||||8859/1", "utf-8", "iso-8859-1"),
        ("||||||8859/15~UNICODE UTF-8", "utf-8", "iso-8859-15"),
        ("||||||UNICODE UTF-8", "iso-8859-1", "utf-8"),
        ("", "8859/1", "iso-8859-1"),  # empty MSH-18: the default, an HL7 name too
        ("", "utf-8", "utf-8"),
        ("||||||NO-SUCH-SET", "utf-8", "utf-8"),  # left to the converter to refuse
    ],
)
def test_an_hl7_message_is_encoded_in_the_charset_it_will_be_read_in(
    msh_tail: str, default: str, codec: str
) -> None:
    text = f"{MSH}{msh_tail}\r{PID}\r"
    assert encode_input(text, "hl7v2", default) == text.encode(codec)


def test_after_a_byte_order_mark_an_hl7_message_is_utf8() -> None:
    text = f"\ufeff{MSH}||||||8859/1\r{PID}\r"
    assert encode_input(text, "hl7v2", "utf-8") == text.encode("utf-8")


def test_a_character_its_charset_cannot_write_is_refused_without_quoting_it() -> None:
    with pytest.raises(UnencodableText) as caught:
        encode_input(f"{MSH}||||||8859/1\r{PID}\u0152\r", "hl7v2", "utf-8")
    assert "\u0152" not in str(caught.value) and "Lef" not in str(caught.value)


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        ('<?xml version="1.0" encoding="ISO-8859-1"?>', "iso-8859-1"),
        ("<?xml version='1.0' encoding='windows-1252' standalone='yes'?>", "cp1252"),
        ('<?xml version="1.0"?>', "utf-8"),
        ('<?xml version="1.0" encoding="x-unknown"?>', "utf-8"),
        ("", "utf-8"),
    ],
)
def test_a_cda_document_is_encoded_as_its_declaration_says(declaration: str, expected: str) -> None:
    text = f"{declaration}\n<ClinicalDocument><given>Éloïse — </given></ClinicalDocument>"
    assert encode_input(text, "cda", "utf-8") == text.encode(expected, "xmlcharrefreplace")


@pytest.mark.parametrize("kind", ["hl7v2", "cda"])
def test_a_lone_surrogate_is_no_text_whatever_the_charset(kind: str) -> None:
    text = (
        f"{MSH}||||||8859/1\r{PID}\ud800\r"
        if kind == "hl7v2"
        else '<?xml version="1.0" encoding="ISO-8859-1"?><a>\ud800</a>'
    )
    with pytest.raises(UnicodeEncodeError):
        encode_input(text, kind, "utf-8")
