"""Service configuration: a TOML file, environment variables over it, frozen objects out.

Built once by ``passerelle serve`` and passed down through constructors; nothing else
reads the environment. Every setting has an embedded default, so the service starts with
no file at all: MLLP on 2575, HTTP on 8080, the queue in ``var/queue.db`` and, without a
FHIR server, bundles written to ``var/out``.

Environment variables (``PASSERELLE_…``) override the file; see
:data:`~listeners.config.environment.ENV_SETTINGS`.
Secrets (passwords, tokens, client secrets, API keys) come from the environment or from
files (``…_file`` settings, e.g. Docker/Kubernetes secrets) and are never printed.
"""

from __future__ import annotations

import copy
import logging
import os
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .amqp_settings import _amqp, _check_amqp, _resolve_amqp_urls
from .destination_settings import _check_batch_destinations, _destination
from .environment import apply_environment
from .mllp_settings import _mllp
from .model import (
    ConfigError,
    ConverterSettings,
    DeliveryConfig,
    DestinationConfig,
    HttpConfig,
    MllpConfig,
    QueueConfig,
    RouteConfig,
    ServiceConfig,
)
from .values import (
    _bool,
    _charset,
    _check_keys,
    _choice,
    _duration,
    _float,
    _int,
    _path,
    _paths,
    _port,
    _secret,
    _section,
)

if TYPE_CHECKING:
    from converter.assembly.bundle import RequestMode

_T = TypeVar("_T")


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read ``path`` (optional), apply ``env`` overrides, validate, freeze.

    A :class:`ConfigError` about a setting of the file has the file as its ``path``; one
    about a setting an environment variable gave names the variable in its message
    (both, when it comes from both: see :class:`_Origin`).
    """
    return _loaded(path, env, _build)


def load_http_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> HttpConfig:
    """The ``[http]`` settings alone, read as :func:`load_config` reads them: what
    ``passerelle health`` needs, without loading the converter (which validating the other
    sections does: time zones, character sets, FHIR resource types) or minding a mistake
    elsewhere, which the service itself reports."""
    return _loaded(path, env, lambda raw, base: _http(_section(raw, "http"), base))


def _loaded(
    path: Path | None,
    env: Mapping[str, str] | None,
    build: Callable[[dict[str, Any], Path], _T],
) -> _T:
    env = os.environ if env is None else env
    in_file: dict[str, Any] = {}
    if path is not None:
        try:
            in_file = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path} is not UTF-8 text (byte {exc.start}): a TOML configuration is"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    raw = copy.deepcopy(in_file)
    applied = apply_environment(raw, env)
    base = path.parent if path is not None else Path.cwd()
    try:
        return build(raw, base)
    except ConfigError as exc:
        if not applied:
            raise ConfigError(str(exc), path=path) from None
        error = str(exc)
    origin = _Origin(in_file, env, applied, base, build, error)
    named = [variable for variable in applied if origin.needs(variable)]
    message = f"{error} (from {', '.join(named)})" if named else error
    from_file = path is not None and (origin.needs_the_file() or not named)
    raise ConfigError(message, path=path if from_file else None)


class _Origin:
    """Where a configuration error comes from: the file, the environment variables, or
    both, found by validating again without each of them (an error is about a variable
    when it goes away, or changes, without it) rather than by looking for the names of
    settings in its text (``mllp.listeners[1].port`` of the file was blamed on
    PASSERELLE_MLLP_PORT, which sets the first listener's)."""

    def __init__(
        self,
        in_file: dict[str, Any],
        env: Mapping[str, str],
        applied: Mapping[str, str],
        base: Path,
        build: Callable[[dict[str, Any], Path], object],
        error: str,
    ) -> None:
        self._in_file = in_file
        self._env = {variable: env[variable] for variable in applied}
        self._base = base
        self._build = build
        self._error = error

    def needs(self, variable: str) -> bool:
        """Whether the error goes away, or changes, without ``variable``."""
        others = {name: value for name, value in self._env.items() if name != variable}
        return not self._fails_alike(self._in_file, others)

    def needs_the_file(self) -> bool:
        """Whether the variables over the defaults alone are valid. (An error that only
        reads otherwise without the file, ``mllp.port`` for ``mllp.listeners[0].port``,
        is still the variable's alone.)"""
        return self._outcome({}, self._env) is None

    def _fails_alike(self, in_file: dict[str, Any], env: Mapping[str, str]) -> bool:
        return self._outcome(in_file, env) == self._error

    def _outcome(self, in_file: dict[str, Any], env: Mapping[str, str]) -> str | None:
        """The error of these settings (None: valid)."""
        raw = copy.deepcopy(in_file)
        try:
            apply_environment(raw, env)
            self._build(raw, self._base)
        except ConfigError as again:
            return str(again)
        except Exception as other:  # another failure is another outcome, never a crash
            return repr(other)
        return None


def _build(raw: dict[str, Any], base: Path) -> ServiceConfig:
    top = _section(
        raw,
        "",
        {
            "data_dir",
            "log_format",
            "log_level",
            "mllp",
            "http",
            "queue",
            "delivery",
            "converter",
            "destinations",
            "routes",
            "amqp",
            "processing_ids",
            "unmatched_senders",
        },
    )
    data_dir = _path(top.get("data_dir", "var"), base, "data_dir")
    log_level = str(top.get("log_level", "INFO")).upper()
    if not isinstance(logging.getLevelName(log_level), int):
        raise ConfigError(
            f"log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got "
            f"{top['log_level']!r}"
        )
    converter = _converter(_section(raw, "converter"), base, ConverterSettings(), "converter")
    destinations = {"default": DestinationConfig(folder=data_dir / "out")}
    for name, section in _section(raw, "destinations").items():
        if not isinstance(section, dict):
            raise ConfigError(f"[destinations.{name}] must be a table")
        destinations[name] = _destination(name, section, base, data_dir)
    mllp = _mllp(_section(raw, "mllp"), base)
    routes_raw = raw.get("routes", []) or []
    if not isinstance(routes_raw, list) or not all(isinstance(r, dict) for r in routes_raw):
        raise ConfigError("routes must be an array of tables ([[routes]])")
    processing_ids = _processing_ids(top.get("processing_ids", []), "processing_ids")
    routes = tuple(
        _route(i, section, base, converter, destinations, processing_ids)
        for i, section in enumerate(routes_raw)
    )
    _check_routes(routes, mllp)
    _check_batch_destinations(destinations, converter, routes)
    queue = _queue(_section(raw, "queue"), base, data_dir)
    amqp = _amqp(_section(raw, "amqp"), base, queue)
    destinations = _resolve_amqp_urls(destinations, amqp)
    _check_amqp(amqp, queue, mllp)
    config = ServiceConfig(
        data_dir=data_dir,
        log_format=_choice(top.get("log_format", "text"), ("text", "json"), "log_format"),
        log_level=log_level,
        mllp=mllp,
        http=_http(_section(raw, "http"), base),
        queue=queue,
        delivery=_delivery(_section(raw, "delivery")),
        converter=converter,
        destinations=destinations,
        routes=routes,
        amqp=amqp,
        processing_ids=processing_ids,
        unmatched_senders=_unmatched_senders(top.get("unmatched_senders", "default"), routes),
    )
    return config


def _unmatched_senders(value: object, routes: tuple[RouteConfig, ...]) -> Any:
    """``unmatched_senders``; "reject" without routes would refuse every message."""
    policy = _choice(value, ("default", "reject"), "unmatched_senders")
    if policy == "reject" and not routes:
        raise ConfigError(
            'unmatched_senders = "reject" refuses the messages no route matches, and no '
            "route is configured: every message would be refused (add the senders' "
            '[[routes]], or keep unmatched_senders = "default")'
        )
    return policy


def _check_routes(routes: tuple[RouteConfig, ...], mllp: MllpConfig) -> None:
    names = [route.name for route in routes]
    for name in names:
        if name == "default":
            raise ConfigError('route name "default" is reserved (the route of unmatched messages)')
        if names.count(name) > 1:
            raise ConfigError(f"route names must be unique: {name!r} is used twice")
    listeners = {listener.name for listener in mllp.listeners}
    for index, route in enumerate(routes):
        if route.listener is not None and route.listener not in listeners:
            raise ConfigError(
                f"routes[{index}].listener {route.listener!r} is not a defined MLLP listener "
                f"({', '.join(sorted(listeners))})"
            )


def _converter(
    section: dict[str, Any], base: Path, default: ConverterSettings, where: str
) -> ConverterSettings:
    _check_keys(section, {f.name for f in fields(ConverterSettings)}, where)
    changes: dict[str, Any] = {}
    if "timezone" in section:
        changes["timezone"] = str(section["timezone"])
        try:
            zoneinfo.ZoneInfo(changes["timezone"])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: too long
            raise ConfigError(
                f"{where}.timezone: unknown time zone {changes['timezone'][:100]!r}"
            ) from None
    if "charset" in section:
        # Stored as the Python codec name ("8859/1" → "iso-8859-1"): the converter, the
        # ACK writer and the header reader use it as a codec.
        changes["charset"] = _charset(section["charset"], f"{where}.charset")
    if "validate" in section:
        changes["validate"] = _bool(section["validate"], f"{where}.validate")
    if "lenient" in section:
        changes["lenient"] = _bool(section["lenient"], f"{where}.lenient")
    if "strict_hl7" in section:
        changes["strict_hl7"] = _bool(section["strict_hl7"], f"{where}.strict_hl7")
    if "request_mode" in section:
        changes["request_mode"] = _choice(
            section["request_mode"],
            ("put", "conditional-create", "conditional-update"),
            f"{where}.request_mode",
        )
    if "request_modes" in section:
        where_modes = f"{where}.request_modes"
        changes["request_modes"] = _request_modes(section["request_modes"], where_modes)
    if "templates" in section:
        changes["templates"] = _paths(section["templates"], base, f"{where}.templates")
    if "id_namespace" in section:
        # A table or a list would namespace every id with its Python text, silently.
        if not isinstance(section["id_namespace"], str):
            raise ConfigError(f"{where}.id_namespace must be a string")
        changes["id_namespace"] = section["id_namespace"]
    return replace(default, **changes)


def _request_modes(value: Any, where: str) -> tuple[tuple[str, RequestMode], ...]:
    """``{Patient = "conditional-create", Encounter = "conditional-create"}``."""
    if not isinstance(value, dict):
        raise ConfigError(
            f'{where} must be a table such as {{ Patient = "conditional-create" }}, got {value!r}'
        )
    # Here, not at the top: any converter module loads the whole converter (see .model).
    from converter.assembly.bundle import REQUEST_MODES, is_resource_type_name

    modes: list[tuple[str, RequestMode]] = []
    for resource_type, mode in value.items():
        if not is_resource_type_name(resource_type):
            raise ConfigError(f"{where}: {resource_type[:100]!r} is not a FHIR resource type")
        modes.append((resource_type, _choice(mode, REQUEST_MODES, f"{where}.{resource_type}")))
    return tuple(modes)


def _http(section: dict[str, Any], base: Path) -> HttpConfig:
    _check_keys(
        section,
        {
            "host",
            "port",
            "api_key",
            "api_key_file",
            "bearer_token",
            "bearer_token_file",
            "max_connections",
            "header_timeout",
            "body_timeout",
            "max_messages",
        },
        "http",
    )
    default = HttpConfig()
    timeouts: dict[str, float] = {}
    for name in ("header_timeout", "body_timeout"):
        seconds = _float(section.get(name, getattr(default, name)), f"http.{name}")
        if seconds <= 0:
            raise ConfigError(f"http.{name} must be above 0")
        timeouts[name] = seconds
    return HttpConfig(
        host=str(section.get("host", "0.0.0.0")),
        port=_port(section.get("port", 8080), "http.port"),
        # An empty key or token (an unset secret rendered as "") would leave the API open.
        api_key=_secret(section, "api_key", base, "http", refuse_empty=True),
        bearer_token=_secret(section, "bearer_token", base, "http", refuse_empty=True),
        max_connections=_int(
            section.get("max_connections", default.max_connections), "http.max_connections", 1
        ),
        header_timeout=timeouts["header_timeout"],
        body_timeout=timeouts["body_timeout"],
        max_messages=_int(
            section.get("max_messages", default.max_messages), "http.max_messages", 1
        ),
    )


def _queue(section: dict[str, Any], base: Path, data_dir: Path) -> QueueConfig:
    _check_keys(
        section, {"backend", "path", "commit_interval_ms", "dead_letter_retention"}, "queue"
    )
    path = (
        _path(section["path"], base, "queue.path") if "path" in section else data_dir / "queue.db"
    )
    if path.is_dir():
        # The queue file, not its folder: the service makes its queue files 0600, and
        # given a directory it took the permissions off it (/tmp became 1700).
        raise ConfigError(
            f"queue.path {path} is a directory: name the queue file ({path / 'queue.db'}), "
            "or set data_dir"
        )
    return QueueConfig(
        backend=_choice(section.get("backend", "sqlite"), ("sqlite", "amqp"), "queue.backend"),
        path=path,
        commit_interval_ms=_float(
            section.get("commit_interval_ms", 2.0), "queue.commit_interval_ms"
        ),
        dead_letter_retention=(
            _duration(section["dead_letter_retention"], "queue.dead_letter_retention")
            if "dead_letter_retention" in section
            else QueueConfig.dead_letter_retention
        ),
    )


def _delivery(section: dict[str, Any]) -> DeliveryConfig:
    _check_keys(section, {f.name for f in fields(DeliveryConfig)}, "delivery")
    default = DeliveryConfig()
    config = DeliveryConfig(
        workers=_int(section.get("workers", default.workers), "delivery.workers", 1),
        # Each conversion process holds a converter (~40 MB): more than a few per core
        # only costs memory, and hundreds would exhaust it.
        convert_processes=_int(
            section.get("convert_processes", 0), "delivery.convert_processes", 0, 256
        ),
        # 0 would retry a failing destination in a tight loop (each pause doubles from it).
        backoff_initial=_float(
            section.get("backoff_initial", default.backoff_initial),
            "delivery.backoff_initial",
            positive=True,
        ),
        backoff_max=_float(section.get("backoff_max", default.backoff_max), "delivery.backoff_max"),
        max_attempts=_int(section.get("max_attempts", 0), "delivery.max_attempts"),
        conversion_timeout=_float(
            section.get("conversion_timeout", default.conversion_timeout),
            "delivery.conversion_timeout",
        ),
    )
    if config.backoff_initial > config.backoff_max:
        raise ConfigError(
            f"delivery.backoff_initial ({config.backoff_initial:g} s) is above "
            f"delivery.backoff_max ({config.backoff_max:g} s)"
        )
    return config


def _route(
    index: int,
    section: dict[str, Any],
    base: Path,
    converter: ConverterSettings,
    destinations: Mapping[str, DestinationConfig],
    processing_ids: tuple[str, ...],
) -> RouteConfig:
    where = f"routes[{index}]"
    _check_keys(
        section,
        {
            "name",
            "sending_application",
            "sending_facility",
            "listener",
            "destination",
            "converter",
            "processing_ids",
        },
        where,
    )
    destination = str(section.get("destination", "default"))
    if destination not in destinations:
        raise ConfigError(f"{where}.destination {destination!r} is not defined")
    matches: dict[str, str | None] = {}
    for key in ("sending_application", "sending_facility", "listener"):
        value = section.get(key)
        # A number would never equal the text of MSH-3/MSH-4: the route would never match.
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}.{key} must be a string, got {value!r}")
        matches[key] = value
    return RouteConfig(
        name=str(section.get("name", f"route-{index + 1}")),
        sending_application=matches["sending_application"],
        sending_facility=matches["sending_facility"],
        listener=matches["listener"],
        destination=destination,
        converter=_converter(section.get("converter", {}), base, converter, f"{where}.converter"),
        processing_ids=(
            _processing_ids(section["processing_ids"], f"{where}.processing_ids")
            if "processing_ids" in section
            else processing_ids
        ),
    )


#: HL7 table 0103, processing id: production, training, debugging.
_PROCESSING_IDS = ("P", "T", "D")


def _processing_ids(value: object, where: str) -> tuple[str, ...]:
    """A list of MSH-11.1 values, or (from the environment) a comma-separated text."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f'{where} must be a list of processing ids such as ["P"], got {value!r}')
    ids = tuple(dict.fromkeys(item.strip().upper() for item in items if item.strip()))
    unknown = [item for item in ids if item not in _PROCESSING_IDS]
    if unknown:
        raise ConfigError(
            f"{where}: {', '.join(unknown)} is not a processing id (HL7 table 0103: "
            "P production, T training, D debugging)"
        )
    return ids
