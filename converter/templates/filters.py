"""Filters and functions that templates use to turn HL7 values into FHIR values.

Each filter accepts a :class:`~converter.hl7v2.value.Value`, a string or None, and
returns None for an absent input so that the element is pruned. A present but invalid
value (a date ``20241341``, a number ``12,5``) is a :class:`MappingError` naming its HL7
path, or — in lenient mode — a warning and an absent element.
"""

from __future__ import annotations

import base64
import math
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import pass_context
from jinja2.runtime import Context

from ..active_session import ACTIVE_SESSION
from ..assembly.json_text import FhirDecimal
from ..datetimes import InvalidTimestamp, TimestampConverter
from ..errors import MappingError
from .codemaps import CodeMaps
from .repeat_patterns import Expansion, repeat_occurrences

__all__ = ["ValueFilters"]

_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+", re.ASCII)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
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


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _path(value: Any) -> str | None:
    """Where a value comes from: HL7 (``PID-7``, ``OBX[2]``) or CDA (``…/value/@value``).

    Plain strings have no location; CDA attribute values are strings that carry one.
    """
    if value is None:
        return None
    path = getattr(value, "path", None)
    if isinstance(path, str):
        return path
    return None if isinstance(value, str) else getattr(value, "label", None)


class ValueFilters:
    """Filters bound to one converter configuration (time zone, strictness, code maps)."""

    def __init__(self, timestamps: TimestampConverter, codemaps: CodeMaps, *, strict: bool):
        self._timestamps = timestamps
        self._codemaps = codemaps
        self._strict = strict

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "fhir_date": self.fhir_date,
            "fhir_datetime": self.fhir_datetime,
            "fhir_instant": self.fhir_instant,
            "fhir_time": self.fhir_time,
            "hl7_timestamp": self.hl7_timestamp_key,
            "decimal": self.decimal,
            "integer": self.integer,
            "boolean": self.boolean,
            "map_code": self.map_code,
            "map_coding": self.map_coding,
            "code_system": self.code_system,
            "hd_system": self.hd_system,
            "b64encode": self.b64encode,
            "name_key": self.name_key,
            "repeat_occurrences": self.repeat_occurrences,
        }

    def globals(self) -> dict[str, Callable[..., Any]]:
        return {
            "require": self.require,
            "identifier_system": self.identifier_system,
            "codemap": self.codemap,
            "code_system": self.code_system,
            "hd_system": self.hd_system,
            "unit_coding": self.unit_coding,
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
            raise MappingError(f"{what} is missing", location=_path(source), hl7_error_code="101")
        return value

    # -- invalid values ------------------------------------------------------------------
    def _invalid(self, ctx: Context, value: Any, reason: str) -> None:
        if self._strict:
            raise MappingError(  # 102: data type error
                reason, location=_path(value), detail=_text(value)[:100], hl7_error_code="102"
            )
        session = ACTIVE_SESSION.get()
        if session is not None:
            where = _path(value)
            session.warn(
                f"{reason} at {where}; value dropped" if where else f"{reason}; value dropped"
            )
        return None

    # -- timestamps ----------------------------------------------------------------------
    def _timestamp(
        self, ctx: Context, value: Any, convert: Callable[..., str], with_offset: bool = True
    ) -> str | None:
        text = _text(value)
        if not text:
            return None
        session = ACTIVE_SESSION.get()
        offset = session.default_offset if session is not None and with_offset else None
        try:
            return convert(text, offset) if offset else convert(text)
        except InvalidTimestamp as exc:
            self._invalid(ctx, value, f"invalid timestamp: {exc}")
            return None

    @pass_context
    def fhir_date(self, ctx: Context, value: Any) -> str | None:
        return self._timestamp(ctx, value, self._timestamps.date, with_offset=False)

    @pass_context
    def fhir_datetime(self, ctx: Context, value: Any) -> str | None:
        return self._timestamp(ctx, value, self._timestamps.date_time)

    @pass_context
    def fhir_instant(self, ctx: Context, value: Any, midnight: bool = False) -> str | None:
        """``midnight=True`` takes a date-only value at 00:00 (for required instants)."""
        if midnight:
            return self._timestamp(ctx, value, self._timestamps.instant_or_midnight)
        return self._timestamp(ctx, value, self._timestamps.instant)

    @pass_context
    def fhir_time(self, ctx: Context, value: Any) -> str | None:
        return self._timestamp(ctx, value, self._timestamps.time, with_offset=False)

    @staticmethod
    def hl7_timestamp(value: str, zone: tzinfo | None = None) -> str:
        """A FHIR date or dateTime written back in HL7's form, as a key naming that
        instant: ``2026-11-30T10:30:00+01:00`` → ``20261130103000+0100``, a zero
        fraction dropped (``.500`` → ``.5``), ``Z`` as ``+0000``; a date stays a date.

        With ``zone``, the time at ``zone``'s wall clock first (:func:`_in_zone`): one
        instant sent with two offsets is one key."""
        if zone is not None:
            value = _in_zone(value, zone)
        date = value[:10].replace("-", "")
        clock = value[10:].replace("T", "").replace(":", "").replace("Z", "+0000")
        if clock:
            body, zone_text = clock[:-5], clock[-5:]
            if "." in body:
                second, fraction = body.split(".", 1)
                fraction = fraction.rstrip("0")
                body = second + ("." + fraction if fraction else "")
            clock = body + zone_text
        return date + clock

    def hl7_timestamp_key(self, value: str) -> str:
        """The ``hl7_timestamp`` filter: in the zone that times without an offset are
        read in (the session's default offset, else the configured zone)."""
        session = ACTIVE_SESSION.get()
        offset = session.default_offset if session is not None else None
        zone = timezone(_utc_offset(offset)) if offset else ZoneInfo(self._timestamps.zone_name)
        return self.hl7_timestamp(value, zone)

    def repeat_occurrences(self, start: Any, *args: Any, **kwargs: Any) -> Expansion:
        """The occurrences of a repeating scheduled time in the configured zone
        (:func:`.repeat_patterns.repeat_occurrences`): pure, no warning said."""
        zone = ZoneInfo(self._timestamps.zone_name)  # ZoneInfo keeps one per name
        return repeat_occurrences(start, *args, zone=zone, **kwargs)

    # -- numbers -------------------------------------------------------------------------
    @pass_context
    def decimal(self, ctx: Context, value: Any) -> int | FhirDecimal | None:
        text = _text(value)
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

    @pass_context
    def integer(self, ctx: Context, value: Any) -> int | None:
        text = _text(value)
        if not text:
            return None
        if not _INTEGER.fullmatch(text):
            self._invalid(ctx, value, "not an integer")
            return None
        return int(text)

    @pass_context
    def boolean(self, ctx: Context, value: Any) -> bool | None:
        text = _text(value).upper()
        if not text:
            return None
        if text not in _YES:
            self._invalid(ctx, value, "not a yes/no indicator")
            return None
        return _YES[text]

    # -- codes ---------------------------------------------------------------------------
    def codemap(self, name: str, code: Any, system: Any = None) -> dict[str, str] | None:
        """The mapped coding as a dict (code, display, system), or None when unmapped."""
        mapped = self._codemaps.lookup(name, _text(code) or None, _text(system) or None)
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
        text = _text(code)
        if not text:
            return None
        mapped = self._codemaps.lookup(name, text, _text(system) or None)
        if mapped is not None:
            return mapped.code
        if not quiet and not self._codemaps.knows(name, text):
            session = ACTIVE_SESSION.get()
            if session is not None:
                where = _path(code) or session.current_template_line()
                session.warn(f"code not in code map {name} at {where}")
        return None

    def map_coding(self, code: Any, name: str, system: Any = None) -> dict[str, str] | None:
        return self.codemap(name, code, system)

    def code_system(self, name: Any) -> str | None:
        """FHIR system URI for a coding system name (HL7 table 0396: LN, SCT, HL70001…)
        or OID (CDA ``codeSystem``: 2.16.840.1.113883.6.1 → http://loinc.org)."""
        text = _text(name)
        if not text:
            return None
        if _OID.fullmatch(text):
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
        return _as_uri(text)

    def unit_coding(self, unit: Any) -> tuple[str, str] | None:
        """``(system, code)`` of a Quantity from a CWE unit (IG CWE[Quantity]): only when
        CWE.1 and CWE.3 are both valued and CWE.3 gives an absolute URI (:meth:`code_system`:
        UCUM → http://unitsofmeasure.org, an OID → urn:oid:…); else None, and the unit text
        alone is written: Quantity.system is a URI, and a code needs its system (qty-3).
        A filter in Python: it runs for every quantity of every OBX."""
        code = _text(unit[1]) if unit else None
        name = _text(unit[3]) if code else None
        system = self.code_system(name.strip()) if name and name.strip() else None
        if system is None or not _ABSOLUTE_URI.match(system):
            return None
        return system, code.strip() if code else ""

    def identifier_system(self, root: Any) -> str | None:
        """Identifier.system of a CDA II root, or of a system ``hd_system`` gave (HL7 v2):
        a registry's FHIR URI when the OID is in the FHIR identifier registry
        (codemaps/IdentifierSystemOid.csv: SSN, NPI…; IG CX[Identifier] CX.4), else the
        OID or UUID as a URN and any other URI as given.

        Identifier.system only: a v2 ``_identity`` keeps ``hd_system``'s value, so that
        ids do not move when the map gains a registry URI."""
        text = _text(root)
        if not text:
            return None
        oid = text[len(_URN_OID) :] if text[: len(_URN_OID)].lower() == _URN_OID else text
        if "IdentifierSystemOid" in self._codemaps:
            mapped = self._codemaps.lookup("IdentifierSystemOid", oid)
            if mapped is not None:
                return mapped.code
        return _as_uri(text)

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
        text = unicodedata.normalize("NFKD", _text(value) or "")
        text = "".join(char for char in text if not unicodedata.combining(char))
        text = text.casefold().replace("-", " ").replace("'", " ").replace("\u2019", " ")
        return " ".join(text.split())

    # -- binary content ------------------------------------------------------------------
    def b64encode(self, value: Any) -> str | None:
        """Text (a decoded HL7 value or a string) as base64 of its UTF-8 bytes, for
        ``Attachment.data``. Unlike the other filters the text is not stripped, so that
        the leading and trailing lines of a note are kept; None when empty."""
        text = "" if value is None else str(value)
        if not text:
            return None
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    def hd_system(self, hd: Any, start: int = 1) -> str | None:
        """Identifier system from an HD (CX.4) or the HD part of an EI (``start=2``).

        The universal id (HD.2) when there is one: OID → urn:oid, UUID → urn:uuid, URI
        kept. A namespace alone (HD.1) is a name: a site's ``AssigningAuthority`` code map
        (none is shipped) and then the built-in ``AssigningAuthorityOid`` (national
        registries: ASIP-SANTE-PS → 1.2.250.1.71.4.2.1…) give the universal id it stands
        for, so that ``ASIP-SANTE-PS`` and ``ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO`` are one
        system and one identity (the IG's CX[Identifier] looks CX.4 up in the identifier
        registry for the same reason). A site's row with an empty target keeps that
        namespace a local name. An HD.2 always wins over its namespace's alias.
        """
        if hd is None:
            return None
        if isinstance(hd, str):
            namespace, universal, kind = hd.strip(), "", ""
        else:
            namespace = _text(hd[start])
            universal = _text(hd[start + 1])
            kind = _text(hd[start + 2]).upper()
        if universal:
            return _universal_system(universal, kind)
        if not namespace:
            return None
        alias = self._namespace_alias(namespace)
        if alias:
            return _universal_system(alias, "")
        if _OID.fullmatch(namespace):
            return f"urn:oid:{namespace}"
        return None

    def facility_scope(self, hd: Any) -> str:
        """What scopes the identifiers a sending facility (MSH-4) gives without an
        authority: its universal id (HD.2) as written when valued, else the universal id
        its namespace stands for in the ``AssigningAuthority`` maps (as ``hd_system`` reads
        a CX.4), else MSH-4 as written: ``CHU-LYON`` and ``CHU-LYON^1.2.250.1.999.1.1^ISO``
        are one scope when a map names CHU-LYON's OID."""
        if hd is None:
            return ""
        if isinstance(hd, str):
            namespace, universal = hd.strip(), ""
        else:
            namespace, universal = _text(hd[1]), _text(hd[2])
        if universal:
            return universal
        alias = self._namespace_alias(namespace) if namespace else None
        if alias:
            # As an HD.2 is written (a bare OID or UUID), whatever form the map's row has.
            for urn in (_URN_OID, "urn:uuid:"):
                if alias[: len(urn)].lower() == urn:
                    return alias[len(urn) :]
            return alias
        return str(hd)

    def _namespace_alias(self, namespace: str) -> str | None:
        """The universal id (or system URI) a namespace stands for, from the site's
        ``AssigningAuthority`` map, else the built-in ``AssigningAuthorityOid``."""
        for name in _NAMESPACE_MAPS:
            if name not in self._codemaps:
                continue
            mapped = self._codemaps.lookup(name, namespace)
            if mapped is not None:
                return mapped.code
            if self._codemaps.knows(name, namespace):
                # A row without target keeps the namespace a local name; in the site's
                # map it also hides the built-in alias.
                return None
        return None


#: Where a namespace-only HD finds its universal id, the site's map first.
_NAMESPACE_MAPS = ("AssigningAuthority", "AssigningAuthorityOid")


def _universal_system(universal: str, kind: str) -> str | None:
    """System of an HD universal id (HD.2) of type ``kind`` (HD.3, upper case or "")."""
    if kind == "ISO" or (not kind and _OID.fullmatch(universal)):
        # HD.3 says ISO but HD.2 is no OID: kept like any other name, if it can be.
        return f"urn:oid:{universal}" if _OID.fullmatch(universal) else _as_uri(universal)
    if kind == "UUID" or _UUID.fullmatch(universal):
        return f"urn:uuid:{universal.lower()}"
    return _as_uri(universal)


_URN_OID = "urn:oid:"


def _utc_offset(text: str) -> timedelta:
    """``+0130``, ``+01:30`` or ``Z`` as a timedelta (an offset a parser accepted)."""
    return datetime.strptime(text, "%z").utcoffset() or timedelta(0)


#: A FHIR dateTime with a time of day, as the timestamp filters write it.
_FHIR_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.ASCII
)


def _in_zone(value: str, zone: tzinfo) -> str:
    """A FHIR dateTime at ``zone``'s wall clock (``2026-01-02T09:00:00Z`` in Europe/Paris
    → ``2026-01-02T10:00:00+01:00``) when its offset is not the one ``zone`` gives that
    wall clock; else (the text a time sent without offset is read as, its key since the
    start, even in the hour a spring DST change skips), and for a date, a leap second or
    an offset not in whole minutes (local mean time before 1911), unchanged."""
    match = _FHIR_TIME.fullmatch(value)
    if match is None or match[6] == "60":
        return value
    offset = _utc_offset(match[8])
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    wall = datetime(year, month, day, hour, minute, second)
    if zone.utcoffset(wall) == offset:
        return value
    try:
        local = wall.replace(tzinfo=timezone(offset)).astimezone(zone)
    except (OverflowError, ValueError):  # year 1 or 9999 moved out of range
        return value
    total = (local.utcoffset() or timedelta(0)).total_seconds()
    if total % 60:
        return value
    sign, minutes = ("+" if total >= 0 else "-"), int(abs(total)) // 60
    return (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:"
        f"{local.minute:02d}:{local.second:02d}{match[7] or ''}{sign}{minutes // 60:02d}:"
        f"{minutes % 60:02d}"
    )


#: What a Quantity.system may be: a URL (http, https) or a URN.
_ABSOLUTE_URI = re.compile(r"(?:https?://|urn:)\S+")


def _as_uri(text: str) -> str | None:
    """OIDs and UUIDs as URNs; any other name kept as written when it has no blanks.

    A local name (``99LAB``) is not a proper URI, but dropping it would lose where the
    code comes from; FHIR's uri type accepts it, and a deployment can map it to a real
    URI in the ``CodingSystem`` code map.
    """
    if _OID.fullmatch(text):
        return f"urn:oid:{text}"
    if _UUID.fullmatch(text):
        return f"urn:uuid:{text.lower()}"
    if not any(char.isspace() for char in text):
        return text
    return None
