"""The ERR segment of an acknowledgement, in the form the message's version defines.

v2.5 and later: ERR-2 the location (ERL), ERR-3 the HL7 table 0357 code (CWE), ERR-4 the
severity (table 0516) and ERR-8 a user message. Before v2.5: ERR-1 (ELD: segment,
sequence, field and the code), the text in MSA-3 and, from v2.2, the code in MSA-6 — the
fields those versions define.
"""

from __future__ import annotations

from .outcome import TABLE_0357, AckOutcome
from .writer import AckWriter

__all__ = ["ERR_FIELDS_VERSION", "error_segments"]

#: ERR-2 … ERR-8 appear in v2.5; before, ERR-1 (ELD) alone.
ERR_FIELDS_VERSION = (2, 5)

#: MSA-6 (error condition) appears in v2.2.
_MSA6_VERSION = (2, 2)


def error_segments(
    writer: AckWriter, outcome: AckOutcome, version: tuple[int, ...]
) -> tuple[list[bytes], list[bytes]]:
    """The ERR segment for ``outcome`` and the MSA fields after MSA-2 that go with it
    (none from v2.5; MSA-3 … MSA-6 before)."""
    enc = writer.header.encoding
    text = writer.text
    comp = enc.component.encode("latin-1")
    error_code = outcome.error_code or ("0" if outcome.success else "207")
    label = TABLE_0357.get(error_code, "")
    cwe = comp.join([error_code.encode("ascii"), text(label), b"HL70357"])
    message_text = text(outcome.text or label)
    location = outcome.location
    if version >= ERR_FIELDS_VERSION:
        severity = outcome.effective_severity.value.encode("ascii")
        erl = comp.join(text(part) for part in location.parts()) if location else b""
        return [b"ERR", b"", erl, cwe, severity, b"", b"", b"", message_text], []
    sub = enc.subcomponent.encode("latin-1")
    where = location.parts()[:3] if location else []
    where += [""] * (3 - len(where))
    eld = comp.join(
        [
            *(text(part) for part in where),
            # Without a sub-component separator (a 3-character MSH-2) the
            # code alone: its label and table cannot be told apart from it.
            sub.join([error_code.encode("ascii"), text(label), b"HL70357"])
            if sub
            else error_code.encode("ascii"),
        ]
    )
    msa = [message_text, b"", b""]
    if version >= _MSA6_VERSION:
        msa.append(cwe)
    return [b"ERR", eld], msa
