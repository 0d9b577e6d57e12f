"""Filters and functions that templates use to turn HL7 values into FHIR values.

Each filter accepts a :class:`~converter.hl7v2.value.Value`, a string or None, and
returns None for an absent input so that the element is pruned. A present but invalid
value (a date ``20241341``, a number ``12,5``) is a :class:`MappingError` naming its HL7
path, or — in lenient mode — a warning and an absent element.

:class:`ValueFilters` registers them all; the timestamp filters live in
:mod:`.timestamp_filters`, those behind identities and identifier systems in
:mod:`.identity_filters`.
"""

from __future__ import annotations

import base64
import math
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from jinja2 import pass_context
from jinja2.filters import do_trim
from jinja2.runtime import Context
from markupsafe import Markup

from ..active_session import ACTIVE_SESSION
from ..assembly.json_text import FhirDecimal
from ..errors import MappingError
from .filter_base import path_of, remember, text_of
from .identity_filters import OID, IdentityFilters, as_uri
from .json_output import as_markup
from .timestamp_filters import TimestampFilters
from .ucum_scale import magnitude

__all__ = ["ValueFilters"]

_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
#: The range of FHIR's integer, positiveInt and unsignedInt (32-bit signed).
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_V2_TABLE = re.compile(r"HL7(\d{4})", re.ASCII)
_V2_TABLE_OID = re.compile(r"2\.16\.840\.1\.113883\.12\.(\d{1,4})", re.ASCII)
_YES = {
    "Y": True,
    "YES": True,
    "T": True,
    "TRUE": True,
    "1": True,
    "N": False,
    "NO": False,
    "F": False,
    "FALSE": False,
    "0": False,
}

#: What Attachment.data may hold once its whitespace is removed (FHIR base64Binary).
_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
#: What a Coding.system or Quantity.system may be: a URL (http, https) or a URN.
_ABSOLUTE_URI = re.compile(r"(?:https?://|urn:)\S+")
_UCUM = "http://unitsofmeasure.org"

#: Unicode White_Space: what the R4 code pattern ``[^\s]+(\s[^\s]+)*`` reads as a blank.
_BLANKS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_BLANK_RUN = re.compile(f"[{re.escape(_BLANKS)}]+")
#: The triplets of a CWE (code, text, coding system): CWE.1-3, CWE.4-6, CWE.10-12.
_TRIPLETS = ((1, 3), (4, 6), (10, 12))


class ValueFilters(TimestampFilters, IdentityFilters):
    """Filters bound to one converter configuration (time zone, strictness, code maps)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: code_system's and coding_system's answers by name (see _systems_of).
        self._systems: dict[str, tuple[str | None, str | None]] = {}

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "fhir_date": self.fhir_date,
            "fhir_datetime": self.fhir_datetime,
            "fhir_instant": self.fhir_instant,
            "fhir_time": self.fhir_time,
            "hl7_timestamp": self.hl7_timestamp_key,
            "center_bounds": self.center_bounds,
            "decimal": self.decimal,
            "integer": self.integer,
            "boolean": self.boolean,
            "map_code": self.map_code,
            "map_coding": self.map_coding,
            "code_system": self.code_system,
            "fhir_code": self.fhir_code,
            "hd_system": self.hd_system,
            "b64encode": self.b64encode,
            "base64_data": self.base64_data,
            "name_key": self.name_key,
            "repeat_occurrences": self.repeat_occurrences,
            "trim": self.trim,
        }

    def globals(self) -> dict[str, Callable[..., Any]]:
        return {
            "require": self.require,
            "require_code": self.require_code,
            "identifier_system": self.identifier_system,
            "codemap": self.codemap,
            "code_system": self.code_system,
            "coding_system": self.coding_system,
            "hd_system": self.hd_system,
            "unit_coding": self.unit_coding,
            "invalid": self.invalid,
            "range_inverted": self.range_inverted,
        }

    @staticmethod
    def require(value: Any, source: Any = None, what: str = "a required value") -> Any:
        """``value`` itself, or a MappingError located at ``source`` when it is empty.

        For FHIR elements that are required and have no other source than one HL7 field
        (Immunization.vaccineCode from RXA-5): the message is rejected (AE) with the field
        named, in strict and lenient mode alike, rather than producing an invalid resource.
        """
        if isinstance(value, str):
            missing = not value.strip() or value.strip() == "null"
        else:
            missing = not value
        if missing:
            # 101: required field missing.
            raise MappingError(f"{what} is missing", location=path_of(source), hl7_error_code="101")
        return value

    @staticmethod
    def require_code(value: Any, source: Any = None, what: str = "a code of its table") -> Any:
        """``value`` (a code ``source`` mapped to), or a MappingError located at ``source``
        when it is empty: the field is valued, but not with a code of its table. HL7 code
        103 (table value not found), not 101: "required field missing" sent the sender's
        team looking for an empty field (RXA-20 ``X``)."""
        if not text_of(value):
            raise MappingError(
                f"{what}: not a code of its table", location=path_of(source), hl7_error_code="103"
            )
        return value

    def invalid(self, value: Any, reason: str) -> str:
        """Report ``value`` (a field or CDA element) as invalid for ``reason``, as the
        filters do: a MappingError in strict mode (HL7 error 102), a warning in lenient
        mode, where the template then leaves the value out. For what only a template can
        see is invalid (an interval whose low is above its high). Renders as nothing."""
        self._invalid(None, value, reason)
        return ""

    # -- numbers -------------------------------------------------------------------------
    @pass_context
    def decimal(self, ctx: Context, value: Any) -> int | FhirDecimal | None:
        text = text_of(value)
        if not text:
            return None
        if not _DECIMAL.fullmatch(text):
            self._invalid(ctx, value, "not a number")
            return None
        if _INTEGER.fullmatch(text):
            return int(text)
        # Decimal, not float: FHIR keeps the precision the source wrote (7.20 stays 7.20).
        number = FhirDecimal(text)
        if not math.isfinite(float(number)):
            # 1e999 is a FHIR decimal on paper, but no server's double can hold it.
            self._invalid(ctx, value, "number out of range")
            return None
        return number

    @staticmethod
    def range_inverted(low: Any, high: Any, low_unit: Any = "", high_unit: Any = "") -> bool:
        """Whether two bounds are both numbers and ``low`` is above ``high`` (FHIR rng-2
        forbids such a Range), in their UCUM units when they differ (``1 g`` to ``500 mg``;
        :mod:`.ucum_scale`). Anything else is False, silently: a bound that is no number
        is reported where the template writes it; bounds in units of two dimensions, or
        in a unit the table does not know, are not compared."""
        texts = (text_of(low), text_of(high))
        if not all(_DECIMAL.fullmatch(text) for text in texts):
            return False
        units = (text_of(low_unit).strip(), text_of(high_unit).strip())
        if units[0] != units[1]:
            bounds = (magnitude(texts[0], units[0]), magnitude(texts[1], units[1]))
            if bounds[0] is None or bounds[1] is None or bounds[0][0] != bounds[1][0]:
                return False
            return bounds[0][1] > bounds[1][1]
        try:
            return Decimal(texts[0]) > Decimal(texts[1])
        except ArithmeticError:
            return False

    @pass_context
    def integer(self, ctx: Context, value: Any, minimum: int | None = None) -> int | None:
        """``value`` as an integer; ``minimum`` for FHIR's positiveInt (1) and unsignedInt
        (0): below it is invalid input located at its field (a 0 or -1 count in TQ1-14,
        RXE-12, reached the validator, whose error named no field)."""
        text = text_of(value)
        if not text:
            return None
        if not _INTEGER.fullmatch(text):
            self._invalid(ctx, value, "not an integer")
            return None
        number = int(text)
        if not _INT32_MIN <= number <= _INT32_MAX:
            # FHIR's integer types are 32-bit: a 20-digit NM failed validation, unlocated.
            self._invalid(ctx, value, "integer out of range")
            return None
        if minimum is not None and number < minimum:
            self._invalid(ctx, value, f"integer below {minimum}")
            return None
        return number

    @pass_context
    def boolean(self, ctx: Context, value: Any) -> bool | None:
        text = text_of(value).upper()
        if not text:
            return None
        if text not in _YES:
            self._invalid(ctx, value, "not a yes/no indicator")
            return None
        return _YES[text]

    # -- codes ---------------------------------------------------------------------------
    def codemap(self, name: str, code: Any, system: Any = None) -> dict[str, str] | None:
        """The mapped coding as a dict (code, display, system), or None when unmapped."""
        mapped = self._codemaps.lookup(name, text_of(code) or None, text_of(system) or None)
        if mapped is None:
            return None
        out = {"system": mapped.system, "code": mapped.code, "display": mapped.display}
        return {k: v for k, v in out.items() if v}

    def map_code(
        self, code: Any, name: str, system: Any = None, *, quiet: bool = False
    ) -> str | None:
        """Just the target code of a map (for FHIR ``code`` elements).

        A code the map has no row for gives None with a warning naming the field (or the
        template line) and the map, never the code: the commonest mapping gap would
        otherwise leave no trace. ``quiet=true`` where such codes are expected.
        """
        text = text_of(code)
        if not text:
            return None
        mapped = self._codemaps.lookup(name, text, text_of(system) or None)
        if mapped is not None:
            return mapped.code
        if not quiet and not self._codemaps.knows(name, text):
            session = ACTIVE_SESSION.get()
            if session is not None:
                where = path_of(code) or session.current_template_line()
                session.warn(f"code not in code map {name} at {where}")
        return None

    def map_coding(self, code: Any, name: str, system: Any = None) -> dict[str, str] | None:
        return self.codemap(name, code, system)

    def code_system(self, name: Any) -> str | None:
        """FHIR system URI for a coding system name (HL7 table 0396: LN, SCT, HL70001…)
        or OID (CDA ``codeSystem``: 2.16.840.1.113883.6.1 → http://loinc.org)."""
        text = text_of(name)
        if not text:
            return None
        known = self._systems.get(text)
        return known[0] if known is not None else self._systems_of(text)[0]

    def coding_system(self, name: Any) -> str | None:
        """Coding.system of a coding system name: :meth:`code_system`'s URI when it is
        absolute (a URL or a URN), else None. A local name (``L``, ``99LAB``: table 0396's
        local codes) or one no map knows (``NIP001``) names no system a receiver can
        resolve: written as it is it was taken for a relative URI (the FHIR validator's
        "Coding.system must be an absolute reference"), and "L" of two senders for one
        system. The code and its display are kept without system (IG, vocabulary mapping:
        a system only when "an appropriate uri is known"); a site names its local systems
        in its ``CodingSystem`` map."""
        text = text_of(name)
        if not text:
            return None
        known = self._systems.get(text)
        return known[1] if known is not None else self._systems_of(text)[1]

    def _systems_of(self, text: str) -> tuple[str | None, str | None]:
        """:meth:`code_system` and :meth:`coding_system` of a name, worked out once: a
        document or a message names a few systems many times."""
        system = self._code_system(text)
        absolute = system if system is not None and _ABSOLUTE_URI.match(system) else None
        return remember(self._systems, text, (system, absolute))

    def _code_system(self, text: str) -> str | None:
        if OID.fullmatch(text):
            return self._oid_system(text)
        mapped = (
            self._codemaps.lookup("CodingSystem", text)
            if "CodingSystem" in self._codemaps
            else None
        )
        if mapped is not None:
            return mapped.code
        table = _V2_TABLE.fullmatch(text.upper())
        if table:
            return f"http://terminology.hl7.org/CodeSystem/v2-{table[1]}"
        return as_uri(text)

    def fhir_code(self, value: Any) -> str | None:
        """An HL7 code as a FHIR ``code`` (R4: ``[^\\s]+(\\s[^\\s]+)*``): without surrounding
        blanks, each run of blanks inside it one space, None when empty.

        ``GLU  SER`` (padded by the sender) or a tab inside a code made the whole bundle
        invalid and the message refused, in lenient mode too; it is written ``GLU SER``
        with a warning naming the field (never the code)."""
        text = "" if value is None else str(value).strip()
        if not text:
            return None
        code = _BLANK_RUN.sub(" ", text)
        if code != text:
            session = ACTIVE_SESSION.get()
            if session is not None:
                where = path_of(value) or session.current_template_line()
                warning = f"blanks inside the code at {where} written as one space"
                # Once: a unit's code is read for the value and each reference bound.
                if warning not in session.warnings:
                    session.warn(warning)
        return code

    def unit_coding(self, unit: Any) -> tuple[str, str] | None:
        """``(system, code)`` of a Quantity from a CWE unit (IG CWE[Quantity]): from a
        triplet whose code and coding system are both valued and whose system is an
        absolute URI (:meth:`coding_system`: UCUM → http://unitsofmeasure.org, an OID →
        urn:oid:…); else None, and the unit text alone is written: Quantity.system is a
        URI, and a code needs its system (qty-3). The first triplet in UCUM wins, else the
        first with a URI: senders put their local unit first and UCUM in the alternate
        triplet (``mg/dL^mg per dL^L^mg/dL^^UCUM``), which the IG's first-triplet rows
        did not read. A filter in Python: it runs for every quantity of every OBX."""
        if not unit:
            return None
        found: tuple[str, Any] | None = None
        for code_at, system_at in _TRIPLETS:
            code = unit[code_at]
            if not text_of(code):
                continue
            system = self.coding_system(text_of(unit[system_at]))
            if system is None:
                continue
            if system == _UCUM:
                found = (system, code)
                break
            found = found or (system, code)
        if found is None:
            return None
        code = self.fhir_code(found[1])
        return (found[0], code) if code else None

    def _oid_system(self, oid: str) -> str:
        if "CodeSystemOid" in self._codemaps:
            mapped = self._codemaps.lookup("CodeSystemOid", oid)
            if mapped is not None:
                return mapped.code
        table = _V2_TABLE_OID.fullmatch(oid)
        if table:
            return f"http://terminology.hl7.org/CodeSystem/v2-{int(table[1]):04d}"
        return f"urn:oid:{oid}"

    # -- names ---------------------------------------------------------------------------
    @staticmethod
    def name_key(value: Any) -> str:
        """A name for comparing, not for writing: decoded, without diacritics, case folded,
        hyphens and apostrophes read as spaces, blanks collapsed ("Hélène-Marie" and
        "HELENE MARIE" have one key). A birth given name may be written with or without
        its accents (the INS traits are in capitals without them)."""
        # Case folded before the marks go: some marks fold to letters (U+0345, the iota
        # subscript, folds to U+03B9 iota, as its capital U+0399 does): dropped first, a
        # name and its capitals had two keys.
        text = unicodedata.normalize("NFKD", (text_of(value) or "").casefold())
        text = "".join(
            char
            for char in unicodedata.normalize("NFKD", text.casefold())
            if not unicodedata.combining(char)
        )
        text = text.replace("-", " ").replace("'", " ").replace("\u2019", " ")
        return " ".join(text.split())

    # -- text ----------------------------------------------------------------------------
    @staticmethod
    def trim(value: Any, chars: str | None = None) -> Any:
        """Jinja's ``trim``. A macro's output (Markup, what most trims of the mappings
        strip: ``_code(kind, statement) | trim``) is stripped as Markup's own ``strip``
        does without characters, without its Python wrappers."""
        if chars is None and type(value) is Markup:
            return as_markup(str.strip(value))
        return do_trim(value, chars)

    # -- binary content ------------------------------------------------------------------
    @staticmethod
    def base64_data(value: Any) -> str | None:
        """Base64 text (``Attachment.data``) without the whitespace senders wrap it
        with; None when nothing is left or it is not Base64: a character outside the
        alphabet, or a length that is not a multiple of 4 (FHIR's base64Binary). The
        template says why it left the data out. Linear in C: a scanned report is
        megabytes."""
        text = "".join(str(value).split()) if value is not None else ""
        if not text or text.strip(_BASE64_ALPHABET) or len(text) % 4:
            return None
        return text

    def b64encode(self, value: Any) -> str | None:
        """Text (a decoded HL7 value or a string) as base64 of its UTF-8 bytes, for
        ``Attachment.data``. Unlike the other filters the text is not stripped, so that
        the leading and trailing lines of a note are kept; None when empty."""
        text = "" if value is None else str(value)
        if not text:
            return None
        return base64.b64encode(text.encode("utf-8")).decode("ascii")
