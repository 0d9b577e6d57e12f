"""Checks for FHIR primitive values, derived from the fhir_core type annotations.

Each check replicates what fhir.resources (fhir_core types on pydantic-core, lax Python
mode) accepts for a JSON-decoded value, including its laxness: ``"1"`` is an integer,
``1`` is a boolean, a number is a dateTime (a Unix timestamp). Regexes are taken from
fhir_core; its pydantic patterns use Rust regex semantics (``\\s`` is Unicode
White_Space, ``$`` is the end of text), which the translations here keep.

What R4 itself requires beyond that is checked on request: the JSON types of FHIR JSON
(``primitive_check(tp, r4_json=True)``, which fuses them into the same checks) and R4's
anchored patterns (:func:`r4_pattern_check`, a wrapper).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import math
import re
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, cast, get_args, get_origin

from annotated_types import Ge, Le, MaxLen, MinLen
from fhir_core import types as ft
from pydantic.types import UuidVersion

__all__ = ["Check", "primitive_check", "r4_pattern_check"]

#: Returns ``None`` when the value is valid, else a message that quotes no value.
Check = Callable[[Any], "str | None"]

# FHIR R4 JSON (json.html) has true/false for boolean, numbers for integer, positiveInt,
# unsignedInt and decimal, with the lexical forms of the R4 types (so 1.0 is not an
# integer), strings for every other primitive, and no empty string; FHIR servers refuse
# the rest. pydantic's lax mode converts "yes" and 1 to booleans, "7" and True to
# integers, "1.5" to a decimal, a number to a dateTime (a Unix timestamp). With
# ``r4_json``, the checks take the R4 JSON type only, and no empty string.
_R4_JSON = "(FHIR R4 JSON)"
_NOT_BOOLEAN = f"expected a JSON boolean {_R4_JSON}"
_NOT_INTEGER = f"expected a JSON integer {_R4_JSON}"
_NOT_NUMBER = f"expected a JSON number {_R4_JSON}"
_NOT_STRING = f"expected a JSON string {_R4_JSON}"
_EMPTY_STRING = f"an empty string is not allowed {_R4_JSON}"
_NUMBERS = (int, float, Decimal)  # Decimal: the converter reads non-integers as FhirDecimal

# Unicode White_Space: what Rust regex ``\s`` and ``str::trim`` use (not Python's \s).
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WS_CHARS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)
_WS_NOT_PLAIN = "\x0b\x0c\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SUR = r"\ud800-\udfff"
_SURROGATE = re.compile(f"[{_SUR}]")

# Rust patterns with Unicode classes, translated; None means "matches any valid str".
_RUST_PATTERNS: dict[str, re.Pattern[str] | None] = {
    # some character that is neither a surrogate nor White_Space other than " \r\n\t"
    "[ \r\n\t\\S]+": re.compile(f"[^{_WS_NOT_PLAIN}{_SUR}]"),
    r"^[^\s]+(\s[^\s]+)*$": re.compile(rf"\A[^{_WS}{_SUR}]+(?:[{_WS}][^{_WS}{_SUR}]+)*\Z"),
    r"\S*": None,
    r"\s*(\S|\s)*": None,
}
_UNICODE_CLASSES = re.compile(r"\\[sSdDwWbB]")


def _translate(pattern: str) -> re.Pattern[str] | None:
    """Python equivalent of a pydantic (Rust regex, unanchored search) pattern."""
    if pattern in _RUST_PATTERNS:
        return _RUST_PATTERNS[pattern]
    anchored = pattern.endswith("$") and not pattern.endswith("\\$")
    body = pattern[:-1] + r"\Z" if anchored else pattern
    if _UNICODE_CLASSES.search(body) or "$" in body.replace("\\$", ""):
        raise NotImplementedError(f"fhir_core pattern {pattern!r} has no Python translation")
    return re.compile(body)


def _pattern_check(
    kind: str, pattern: re.Pattern[str] | None, lo: int, hi: int | None, r4_json: bool
) -> Check:
    bad = f"invalid {kind}"
    search = pattern.search if pattern is not None else None
    sized = lo > 0 or hi is not None
    top = hi if hi is not None else 1 << 62
    # R4 JSON refuses the empty strings fhir_core accepts (uri, markdown, ...).
    no_empty = r4_json and lo == 0 and (search is None or search("") is not None)

    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return "expected a string"
        if no_empty and not v:
            return _EMPTY_STRING
        if not lo <= len(v) <= top:
            return f"{kind} has a wrong length"
        if not v.isascii() and _SURROGATE.search(v):
            return "invalid unicode"
        if search is not None and search(v) is None:
            return bad
        return None

    # Fast paths for the usual ASCII strings; anything else goes through ``check``.
    if search is None and not sized:
        if no_empty:

            def any_text_json(v: Any) -> str | None:
                return None if type(v) is str and v and v.isascii() else check(v)

            return any_text_json

        def any_text(v: Any) -> str | None:
            return None if type(v) is str and v.isascii() else check(v)

        return any_text
    if kind == "string" and not sized and pattern is _RUST_PATTERNS["[ \r\n\t\\S]+"]:

        def string(v: Any) -> str | None:
            if type(v) is str and v.isascii():
                return None if v.strip("\x0b\x0c") else bad
            return check(v)

        return string
    if search is not None:
        shortest = 1 if no_empty else lo

        def matched(v: Any) -> str | None:
            if type(v) is str and v.isascii() and shortest <= len(v) <= top:
                return None if search(v) is not None else bad
            return check(v)

        return matched
    return check


def _any_str(v: Any) -> str | None:
    return None if isinstance(v, str) else "expected a string"


def _any_str_json(v: Any) -> str | None:
    if type(v) is str and v:
        return None
    return _EMPTY_STRING if v == "" else _any_str(v)


_BOOL_STRINGS = frozenset(["0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes"])


def _boolean(v: Any) -> str | None:
    if v is True or v is False:
        return None
    if isinstance(v, int | float):
        return None if v == 0 or v == 1 else "invalid boolean"
    if isinstance(v, str):
        return None if v.lower() in _BOOL_STRINGS else "invalid boolean"
    return "expected a boolean"


def _boolean_json(v: Any) -> str | None:
    return None if v is True or v is False else _NOT_BOOLEAN


_JSON_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")


def _json_int(s: str) -> int | None:
    """jiter's ``NumberInt``: a JSON integer and nothing else."""
    if not _JSON_INT.fullmatch(s):
        return None
    try:
        return int(s)
    except ValueError:  # beyond 4300 digits
        return None


def _strip_leading_zeros(s: str) -> str | None:
    if not s or s[0] not in "0123456789-":
        return None
    if s[0] != "0":
        return s
    for i in range(1, len(s)):
        c = s[i]
        if c in "123456789-":
            return s[i:]
        if c == ".":
            return s[i - 1 :]
        if c not in "0_":
            return None
    return s[-1]


def _clean_int_str(v: str) -> str | None:
    """pydantic-core's ``clean_int_str``: sign, leading zeros, ``.0``, underscores."""
    s = v.strip(_WS_CHARS)
    if s.startswith("+"):
        s = s[1:]
        if s.startswith("-"):
            return None
    sign = ""
    if s.startswith("-"):
        s = s[1:]
        if s.startswith(("-", "+")):
            return None
        sign = "-"
    stripped = _strip_leading_zeros(s)
    if stripped is None:
        return None
    s = stripped
    if "." in s:
        head, _, decimals = s.partition(".")
        if decimals and not decimals.strip("0"):
            s = head
    if "_" in s and not (s.startswith("_") or s.endswith("_") or "__" in s):
        return sign + s.replace("_", "")
    return None if len(s) == len(v) else sign + s


def _as_int(v: Any) -> int | None:
    """pydantic-core's lax int: bools, integral floats, integer strings (``str_as_int``)."""
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and v.is_integer() else None
    if not isinstance(v, str):
        return None
    number = _json_int(v)
    if number is None and not (_JSON_INT.fullmatch(v) and len(v) > 4300):
        cleaned = _clean_int_str(v)
        number = None if cleaned is None else _json_int(cleaned)
    return number


def _integer_check(kind: str, lo: int, hi: int, r4_json: bool) -> Check:
    if r4_json:

        def strict(v: Any) -> str | None:
            if type(v) is not int:  # not a bool, a float (1.0) or a string
                return _NOT_INTEGER
            return None if lo <= v <= hi else f"{kind} out of range"

        return strict

    def check(v: Any) -> str | None:
        n = _as_int(v)
        if n is None:
            return f"invalid {kind}"
        return None if lo <= n <= hi else f"{kind} out of range"

    return check


def _decimal_check(pattern: re.Pattern[str], r4_json: bool) -> Check:
    def check(v: Any) -> str | None:
        if r4_json and (type(v) is bool or not isinstance(v, _NUMBERS)):
            return _NOT_NUMBER
        try:
            text = str(v)
        except ValueError:  # int too large to print
            return "invalid decimal"
        return None if pattern.fullmatch(text) else "invalid decimal"

    return check


def _base64(v: Any) -> str | None:
    if not isinstance(v, str):
        return "expected a string"
    try:
        base64.b64decode(v.encode("utf-8"))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return "invalid base64Binary"
    return None


def _base64_json(v: Any) -> str | None:
    return _EMPTY_STRING if v == "" else _base64(v)


_H = "[0-9a-fA-F]"
_HYPHENATED = f"{_H}{{8}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}"
_UUID = re.compile(rf"{_H}{{32}}|{_HYPHENATED}|\{{{_HYPHENATED}\}}|urn:uuid:{_HYPHENATED}")


def _uuid_check(version: int) -> Check:
    nibble = f"{version:x}"

    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return "expected a string"
        if not _UUID.fullmatch(v):
            return "invalid uuid"
        digits = v.removeprefix("urn:uuid:").strip("{}").replace("-", "")
        return None if digits[12] == nibble and digits[16] in "89abAB" else "wrong uuid version"

    return check


# -- dates and times --------------------------------------------------------------------
_MIN_SECOND = -62135596800  # 0001-01-01T00:00:00Z
_MAX_SECOND = 253402300799  # 9999-12-31T23:59:59Z


def _timestamp(v: Any) -> tuple[int, int] | None:
    """(seconds, microseconds) of a number read as a Unix timestamp, as speedate does."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        whole = math.floor(v)
        scaled = (v - whole) * 1_000_000
        micro = math.floor(scaled)
        micro += scaled - micro >= 0.5
    else:
        whole, micro = v, 0
    if abs(whole) > 20_000_000_000:  # milliseconds beyond this watershed
        whole, ms = divmod(whole, 1000)
        micro += ms * 1000
    whole += micro // 1_000_000
    micro %= 1_000_000
    return (whole, micro) if _MIN_SECOND <= whole <= _MAX_SECOND else None


_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _calendar_ok(v: str) -> bool:
    """The regexes check ranges; a full date must also exist in the calendar."""
    if len(v) < 10 or v[8:10] < "29":
        return True  # partial date, or a day every month has
    year, month, day = int(v[:4]), int(v[5:7]), int(v[8:10])
    if month == 2:
        return day == 29 and calendar.isleap(year)
    return day <= _MONTH_DAYS[month]


def _date_check(kind: str, pattern: re.Pattern[str], numbers: str, r4_json: bool) -> Check:
    bad = f"invalid {kind}"

    def check(v: Any) -> str | None:
        if isinstance(v, str):
            return None if pattern.fullmatch(v) and _calendar_ok(v) else bad
        if r4_json:
            return _NOT_STRING
        stamp = _timestamp(v)
        if stamp is None:
            return bad
        if numbers == "date" and (stamp[1] or stamp[0] % 86400):
            return bad
        return None

    return check


def _time_check(pattern: re.Pattern[str], r4_json: bool) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, str):
            return None if pattern.fullmatch(v) else "invalid time"
        if r4_json:
            return _NOT_STRING
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "invalid time"
        if isinstance(v, float):
            if not math.isfinite(v):
                return "invalid time"
            whole = math.floor(v)
            if whole < 0:  # checked before rounding the microseconds
                return "invalid time"
            scaled = (v - whole) * 1_000_000
            v = whole + (math.floor(scaled) + (scaled - math.floor(scaled) >= 0.5) >= 1_000_000)
        return None if 0 <= v < 86400 else "invalid time"

    return check


@cache
def primitive_check(tp: Any, r4_json: bool = False) -> tuple[str, Check]:
    """FHIR type name and check for a fhir_core primitive annotation; with ``r4_json``,
    the check also requires the value's JSON type in FHIR R4 JSON."""
    if tp is bool:
        return "boolean", _boolean_json if r4_json else _boolean
    if get_origin(tp) is not Annotated:
        raise NotImplementedError(f"unsupported primitive annotation {tp!r}")
    for meta in get_args(tp)[1:]:
        # Subclasses first: Instant < DateTime < Date, PositiveInt < UnsignedInt < Integer.
        if isinstance(meta, ft.Instant):
            return "instant", _date_check("instant", type(meta).pattern, "datetime", r4_json)
        if isinstance(meta, ft.DateTime):
            return "dateTime", _date_check("dateTime", type(meta).pattern, "datetime", r4_json)
        if isinstance(meta, ft.Date):
            return "date", _date_check("date", type(meta).pattern, "date", r4_json)
        if isinstance(meta, ft.Time):
            return "time", _time_check(type(meta).pattern, r4_json)
        if isinstance(meta, ft.Decimal):
            return "decimal", _decimal_check(type(meta).pattern, r4_json)
        kind: str = getattr(meta, "__visit_name__", "")
        if isinstance(meta, ft.Integer | ft.Integer64):
            lo = hi = 0
            for bound in meta:
                if isinstance(bound, Ge):
                    lo = cast(int, bound.ge)
                elif isinstance(bound, Le):
                    hi = cast(int, bound.le)
            return kind, _integer_check(kind, lo, hi, r4_json)
        if isinstance(meta, ft.Url | ft.Xhtml):
            return kind, _any_str_json if r4_json else _any_str
        if isinstance(meta, ft.Base64Binary):
            return "base64Binary", _base64_json if r4_json else _base64
        if isinstance(meta, UuidVersion):
            return "uuid", _uuid_check(meta.uuid_version)
        if isinstance(meta, ft.String | ft.Code | ft.Id | ft.PatternConstraint):
            shortest, longest, pattern = 0, None, None
            parts: list[Any] = list(meta)
            for part in parts:
                if isinstance(part, MinLen):
                    shortest = int(part.min_length)
                elif isinstance(part, MaxLen):
                    longest = int(part.max_length)
                elif getattr(part, "pattern", None) is not None:
                    pattern = _translate(part.pattern)
            return kind, _pattern_check(kind, pattern, shortest, longest, r4_json)
    raise NotImplementedError(f"unsupported primitive annotation {tp!r}")


# -- FHIR R4's own patterns ------------------------------------------------------------------
# fhir_core searches its patterns unanchored (``\S*`` then matches any text) and allows
# any whitespace inside a code; R4 anchors them (datatypes: "no whitespace" in a uri, "no
# whitespace other than single spaces" in a code), and servers check them (Medplum's
# validator uses these same regexes, with JavaScript's \s: Unicode spaces and U+FEFF).
_JS_WS = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_NO_SPACE = re.compile(f"[^{_JS_WS}]*")
_R4_PATTERNS: dict[str, re.Pattern[str]] = {
    "code": re.compile(f"[^{_JS_WS}]+(?: [^{_JS_WS}]+)*"),
    "uri": _NO_SPACE,
    "url": _NO_SPACE,
    "canonical": _NO_SPACE,
    "oid": re.compile(r"urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+"),
    "uuid": re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
}


def r4_pattern_check(kind: str, check: Check) -> Check:
    """``check`` (fhir_core's) and then the R4 pattern of ``kind`` when fhir_core does
    not enforce it; ``check`` itself for the other types."""
    pattern = _R4_PATTERNS.get(kind)
    if pattern is None:
        return check
    fullmatch = pattern.fullmatch
    bad = f"invalid {kind} (FHIR R4 pattern)"

    def slow(v: Any) -> str | None:
        return check(v) or (None if type(v) is not str or fullmatch(v) else bad)

    # ASCII fast paths, valid under both checks (so not the empty string, which R4 JSON
    # refuses); printable excludes tab, CR, LF, VT, FF.
    if kind == "code":

        def code(v: Any) -> str | None:
            if (
                type(v) is str
                and v.isascii()
                and v.isprintable()
                and v
                and v[0] != " "
                and v[-1] != " "
                and "  " not in v
            ):
                return None
            return slow(v)

        return code
    if pattern is _NO_SPACE:

        def no_space(v: Any) -> str | None:
            if type(v) is str and v and v.isascii() and v.isprintable() and " " not in v:
                return None
            return slow(v)

        return no_space
    return slow
