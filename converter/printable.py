"""Text made safe for a terminal or a line-oriented log.

Control ids, senders, message types and error locations come from the messages, and a
sender can put anything in them: an ESC sequence that clears the operator's screen, a
line break (``&#10;`` in a CDA attribute) that forges a second log line, a bidi override
that shows a name backwards. Printed text has these escaped, visibly and reversibly.
"""

from __future__ import annotations

__all__ = ["printable", "printable_json"]

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidi
# embedding, override and isolate marks; everything else prints as itself.
_UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_AS_PYTHON = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _UNSAFE}
# Not C0: JSON encoders escape those inside strings, and outside them they are the
# layout of indented JSON.
_AS_JSON = {code: f"\\u{code:04x}" for code in _UNSAFE if code >= 0x20}


def printable(text: str) -> str:
    """``text`` with control characters written as ``\\x1b``, ``\\u2028``…"""
    if text.isprintable():
        return text
    return text.translate(_AS_PYTHON)


def printable_json(text: str) -> str:
    """JSON text with the same characters written as JSON escapes (``\\u2028``), so the
    document still decodes to the same values. C0 controls are escaped by any JSON
    encoder already; this catches the rest (C1, separators, bidi marks)."""
    if text.isascii() and "\x7f" not in text:
        return text
    return text.translate(_AS_JSON)
