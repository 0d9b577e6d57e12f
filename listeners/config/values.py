"""Checked readers of single settings (numbers, paths, choices, secrets), naming the
setting in their errors."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, NoReturn

from .durations import DURATION_UNITS
from .model import ConfigError, Secret


def _section(raw: dict[str, Any], name: str, allowed: set[str] | None = None) -> dict[str, Any]:
    section = raw if not name else raw.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"[{name}] must be a table")
    if allowed is not None:
        unknown = set(section) - allowed
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)} in [{name or 'top level'}]")
    return section


def _check_keys(section: dict[str, Any], allowed: set[str], where: str) -> None:
    # Every section parser starts here: a scalar where a table belongs (converter = 5)
    # is refused by name rather than failing later as a TypeError.
    if not isinstance(section, dict):
        raise ConfigError(f"[{where}] must be a table, got {type(section).__name__}")
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)} in [{where}]")


def _int(value: Any, where: str, minimum: int = 0, maximum: int | None = None) -> int:
    # TOML gives int (bool and float are refused, not truncated: port = 1.5 is a
    # mistake); the environment gives text.
    if isinstance(value, bool | float):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{where} must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{where} must be at most {maximum}")
    return number


def _port(value: Any, where: str) -> int:
    return _int(value, where, 0, 65535)


def _float(value: Any, where: str, *, positive: bool = False) -> float:
    """A finite number, not negative; with ``positive``, above 0 too (for the settings
    where 0 would mean nothing sensible, rather than "no limit")."""
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if number < 0:
        raise ConfigError(f"{where} must not be negative")
    if positive and number == 0:
        raise ConfigError(f"{where} must be above 0")
    return number


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd])")
_DURATION_UNITS = DURATION_UNITS


def _duration(value: Any, where: str) -> float | None:
    """A duration with its unit (``"30d"``, ``"12h"``, ``"90m"``, ``"3600s"``) in seconds;
    ``"off"`` (or 0) is None: no limit. A bare number is refused (days or seconds? a
    retention read in the wrong unit deletes patients' messages 86,400 times too early),
    and so is ``"0d"`` (no limit, or at once?)."""
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("off", "0"):
            return None
        found = _DURATION.fullmatch(text)
        if found is not None:
            seconds = float(found.group(1)) * _DURATION_UNITS[found.group(2)]
            if seconds > 0 and math.isfinite(seconds):
                return seconds
    return _bad_duration(value, where)


def _bad_duration(value: Any, where: str) -> NoReturn:
    raise ConfigError(
        f'{where} must be a duration with its unit ("30d", "12h", "90m", "3600s")'
        f' or "off", got {value!r}'
    )


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where} must be true or false, got {value!r}")


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> Any:
    if value not in allowed:
        raise ConfigError(f"{where} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _charset(value: Any, where: str) -> str:
    """The codec of a default charset setting, by the rules MSH-18 follows: refused here,
    at start-up, rather than failing every message whose MSH-18 is empty."""
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a character set name, got {value!r}")
    # Here, not at the top: any converter module loads the whole converter (see .model).
    from converter.errors import ConfigurationError
    from converter.hl7v2.charset import charset_codec

    try:
        return charset_codec(value)
    except ConfigurationError as exc:
        raise ConfigError(f"{where}: {exc}: {value[:100]!r}") from None


def _path(value: Any, base: Path, where: str) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ConfigError(f"{where} must be a path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _paths(value: Any, base: Path, where: str) -> tuple[Path, ...]:
    if isinstance(value, str):
        value = [v for v in value.split(os.pathsep) if v]
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of paths")
    return tuple(_path(v, base, where) for v in value)


def _secret(
    section: dict[str, Any], key: str, base: Path, where: str, *, refuse_empty: bool = False
) -> Secret | None:
    """The secret ``key`` or the content of the file ``key_file``, None when neither is set.

    An empty file is refused; with ``refuse_empty`` an empty (or blank) value is refused
    too, instead of meaning "not set": for a secret whose absence disables a protection.
    """
    if refuse_empty:
        for name in (key, f"{key}_file"):
            if name in section and not str(section[name]).strip():
                raise ConfigError(f"{where}.{name} is empty (remove the setting to leave it unset)")
    if section.get(key) not in (None, ""):
        if not isinstance(section[key], str):
            # str() of anything else is not what was meant: ["pw"] became "['pw']",
            # true "True", 1e6 "1000000.0" — a wrong credential, refused at every request.
            raise ConfigError(
                f"{where}.{key} must be a string: put it in quotes"
                f" (a TOML {_toml_type(section[key])} here; value not shown)"
            )
        return Secret(section[key])
    file_key = f"{key}_file"
    if section.get(file_key):
        path = _path(section[file_key], base, f"{where}.{file_key}")
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}.{file_key}: cannot read {path}: {exc.strerror}") from None
        except ValueError:  # a NUL in the path; UnicodeDecodeError: not UTF-8 text
            raise ConfigError(f"{where}.{file_key}: {path!r} is not a readable text file") from None
        if not value:
            raise ConfigError(f"{where}.{file_key}: {path} is empty")
        return Secret(value)
    return None


def _toml_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (list, "array")):
        if isinstance(value, kind):
            return name
    return "table" if isinstance(value, dict) else "date or time"


def _name(value: Any, where: str, *, empty: bool = False) -> str:
    """An AMQP exchange/queue name (or routing key): a string of at most 255 bytes."""
    if not isinstance(value, str) or (not value and not empty):
        raise ConfigError(f"{where} must be a non-empty string")
    if len(value.encode("utf-8")) > 255:
        raise ConfigError(f"{where} is longer than 255 bytes")
    return value
