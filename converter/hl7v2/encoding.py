"""ER7 encoding characters and escape sequences (HL7 v2 chapter 2.7)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_ENCODING", "Encoding", "UndecodableEscape"]

# Formatting commands of FT fields that carry no character content of their own.
_FORMATTING_DROPPED = ("H", "N", ".fi", ".nf", ".ce")


class UndecodableEscape(ValueError):
    """A ``\\Xhh..\\`` sequence whose bytes are not text in the message's character set
    (``\\XE9\\`` in a UTF-8 message): raised by :meth:`Encoding.unescape` when asked to.

    ``sequence`` is the escape as written: message content, for ``detail`` only."""

    def __init__(self, sequence: str, codec: str) -> None:
        super().__init__(f"hexadecimal escape is not valid {codec}")
        self.sequence = sequence
        self.codec = codec


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters a message declares in MSH-1 and MSH-2.

    A delimiter the message does not declare is ``""``: MSH-2 is 4 characters (5 from
    v2.7 with the truncation character); a sender that writes fewer has no escape
    character, or no sub-component separator, and a ``\\`` or ``&`` in its values is
    text. Splits on an empty delimiter must be guarded (``str.split("")`` raises).
    """

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @classmethod
    def from_msh(cls, field_separator: str, encoding_characters: str) -> Encoding:
        """Build from MSH-1 and MSH-2 (4 characters, or 5 with the v2.7 truncation character).

        The characters given are honoured, absent ones are not invented: ``^~\\`` has no
        sub-component separator, ``^~`` no escape character either (HL7 v2.5 §2.16.9.2
        requires all four; a shorter MSH-2 is the sender's error, read as written).
        """
        chars = encoding_characters
        return cls(
            field=field_separator,
            component=chars[0],
            repetition=chars[1] if len(chars) > 1 else "~",
            escape=chars[2] if len(chars) > 2 else "",
            subcomponent=chars[3] if len(chars) > 3 else "",
            truncation=chars[4] if len(chars) > 4 else "",
        )

    @property
    def msh2(self) -> str:
        """The MSH-2 value for these delimiters."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    def unescape(self, text: str, codec: str = "utf-8", *, undecodable: str = "keep") -> str:
        """Decode escape sequences; ``codec`` decodes the bytes of ``\\Xhh..\\`` sequences.

        Unknown or unterminated sequences are kept literally so that no character is lost.
        A ``\\Xhh..\\`` whose bytes are not valid in ``codec`` is, by ``undecodable``:
        ``"keep"`` kept as written, ``"raise"`` an :class:`UndecodableEscape`,
        ``"replace"`` decoded with U+FFFD for the invalid bytes.
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
            body = text[start + 1 : end]
            if body[:1] == "X" and _HEX.fullmatch(body, 1):
                # Engines that escape byte by byte split a character over sequences
                # (``\XC3\\XA9\`` is é in UTF-8): adjacent ones are decoded together.
                data = bytes.fromhex(body[1:])
                while text.startswith(esc + "X", end + 1):
                    following = text.find(esc, end + 2)
                    if following < 0 or not _HEX.fullmatch(text, end + 3, following):
                        break
                    data += bytes.fromhex(text[end + 3 : following])
                    end = following
                decoded = self._decode_hex(data, text[start : end + 1], codec, undecodable)
            else:
                decoded = self._decode_sequence(body)
            if decoded is None:
                # Not an escape we know: keep the opening delimiter and resume after it,
                # so a following real sequence is still decoded.
                out.append(esc)
                pos = start + 1
                continue
            out.append(decoded)
            pos = end + 1
        return "".join(out)

    @staticmethod
    def _decode_hex(data: bytes, written: str, codec: str, undecodable: str) -> str | None:
        """The bytes of ``\\Xhh..\\`` sequences (``written``) as text; None to keep them."""
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            if undecodable == "raise":
                raise UndecodableEscape(written, codec) from None
            if undecodable == "replace":
                return data.decode(codec, errors="replace")
            return None
        except LookupError:
            return None

    def _decode_sequence(self, body: str) -> str | None:
        if body == "F":
            return self.field
        if body == "S":
            return self.component
        if body == "T":
            # Without a declared sub-component separator there is nothing to stand for.
            return self.subcomponent or None
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
            if char:  # an undeclared delimiter ("") is no character to escape
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
