"""ER7 encoding characters and escape sequences (HL7 v2 chapter 2.7)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_ENCODING", "Encoding"]

# Formatting commands of FT fields that carry no character content of their own.
_FORMATTING_DROPPED = ("H", "N", ".fi", ".nf", ".ce")


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @classmethod
    def from_msh(cls, field_separator: str, encoding_characters: str) -> Encoding:
        """Build from MSH-1 and MSH-2 (4 characters, or 5 with the v2.7 truncation character)."""
        chars = encoding_characters
        return cls(
            field=field_separator,
            component=chars[0],
            repetition=chars[1] if len(chars) > 1 else "~",
            escape=chars[2] if len(chars) > 2 else "",
            subcomponent=chars[3] if len(chars) > 3 else "&",
            truncation=chars[4] if len(chars) > 4 else "",
        )

    @property
    def msh2(self) -> str:
        """The MSH-2 value for these delimiters."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    def unescape(self, text: str, codec: str = "utf-8") -> str:
        """Decode escape sequences; ``codec`` decodes the bytes of ``\\Xhh..\\`` sequences.

        Unknown or unterminated sequences are kept literally so that no character is lost.
        """
        esc = self.escape
        if not esc or esc not in text:
            return text
        out: list[str] = []
        pos = 0
        length = len(text)
        while pos < length:
            start = text.find(esc, pos)
            if start < 0:
                out.append(text[pos:])
                break
            out.append(text[pos:start])
            end = text.find(esc, start + 1)
            if end < 0:
                out.append(text[start:])
                break
            decoded = self._decode_sequence(text[start + 1 : end], codec)
            if decoded is None:
                # Not an escape we know: keep the opening delimiter and resume after it,
                # so a following real sequence is still decoded.
                out.append(esc)
                pos = start + 1
                continue
            out.append(decoded)
            pos = end + 1
        return "".join(out)

    def _decode_sequence(self, body: str, codec: str) -> str | None:
        if body == "F":
            return self.field
        if body == "S":
            return self.component
        if body == "T":
            return self.subcomponent
        if body == "R":
            return self.repetition
        if body == "E":
            return self.escape
        if body == "P" and self.truncation:
            return self.truncation
        if body in _FORMATTING_DROPPED:
            return ""
        if body == ".br":
            return "\n"
        if body.startswith((".sp", ".sk")):
            count = _skip_count(body[3:])
            if count is None:
                return None
            return ("\n" if body[2] == "p" else " ") * count
        if body.startswith((".in", ".ti")):
            return ""
        if body[:1] == "X" and _HEX.fullmatch(body[1:]):
            try:
                return bytes.fromhex(body[1:]).decode(codec)
            except (UnicodeDecodeError, LookupError):
                return None
        if body[:1] in ("C", "M") and _HEX.fullmatch(body[1:]):
            # ISO 2022 character set switches: the characters that follow are already
            # decoded by the message codec, so the switch itself carries no text.
            return ""
        return None

    def escape_text(self, text: str) -> str:
        """Encode ``text`` so that it can be placed in a field without changing its structure."""
        esc = self.escape
        if not esc:
            return text
        out = text.replace(esc, f"{esc}E{esc}")
        for char, code in (
            (self.field, "F"),
            (self.component, "S"),
            (self.subcomponent, "T"),
            (self.repetition, "R"),
        ):
            out = out.replace(char, f"{esc}{code}{esc}")
        if self.truncation:
            out = out.replace(self.truncation, f"{esc}P{esc}")
        if "\r" in out or "\n" in out:
            # ``\.br\`` would put a raw "." back in the text when "." is a delimiter.
            line_break = "X0A" if "." in self.msh2 + self.field else ".br"
            out = out.replace("\r", f"{esc}X0D{esc}").replace("\n", f"{esc}{line_break}{esc}")
        if out == '""':
            # Two quotes alone are HL7's explicit null, not the text '""'.
            out = f'{esc}X22{esc}"'
        return out


_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")

DEFAULT_ENCODING = Encoding()


#: The largest count of a ``\.sp<n>\`` or ``\.sk<n>\`` formatting command applied. A few
#: bytes of a larger one would make megabytes of blank text on every access of the value
#: (``\.sp200000000\`` in MSH-10 is 200 MB before the ACK): kept as written instead.
MAX_SKIP_COUNT = 100


def _skip_count(text: str) -> int | None:
    """The count of ``.sp``/``.sk``: 1 when absent or not a number, None when over
    :data:`MAX_SKIP_COUNT`."""
    count = text.strip()
    if not (count.isascii() and count.isdigit()):
        return 1
    if len(count) > 3 or int(count) > MAX_SKIP_COUNT:
        return None
    return int(count)
