"""Service configuration: a TOML file, environment variables over it, frozen objects out.

Built once by ``passerelle serve`` and passed down through constructors; nothing else
reads the environment. Every setting has an embedded default, so the service starts with
no file at all: MLLP on 2575, HTTP on 8080, the queue in ``var/queue.db`` and, without a
FHIR server, bundles written to ``var/out``.

Environment variables (``PASSERELLE_…``) override the file; see :data:`ENV_SETTINGS`.
Secrets (passwords, tokens, client secrets, API keys) come from the environment or from
files (``…_file`` settings, e.g. Docker/Kubernetes secrets) and are never printed.
"""

from __future__ import annotations

import logging
import os
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from converter import ConverterConfig
from converter.assembly.bundle import RequestMode

__all__ = [
    "ENV_SETTINGS",
    "AmqpConfig",
    "AmqpConsumerConfig",
    "AmqpPublishConfig",
    "AuthConfig",
    "ConfigError",
    "ConverterSettings",
    "DeliveryConfig",
    "DestinationConfig",
    "HttpConfig",
    "ListenerConfig",
    "MllpConfig",
    "QueueConfig",
    "RouteConfig",
    "Secret",
    "ServiceConfig",
    "TlsConfig",
    "load_config",
]


class ConfigError(Exception):
    """The configuration file or environment is invalid; the message names the setting."""


class Secret:
    """A secret value that never shows in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class TlsConfig:
    """TLS on an MLLP listener; ``client_ca`` set means mutual TLS (certificate required)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ListenerConfig:
    """One MLLP listening socket."""

    name: str = "mllp"
    host: str = "0.0.0.0"
    port: int = 2575
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class MllpConfig:
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    max_frame_bytes: int = 10 * 1024 * 1024
    idle_timeout: float = 300.0
    #: "commit": AA once durably queued; "delivery": AA once the FHIR server accepted it.
    ack_after: Literal["commit", "delivery"] = "commit"
    #: How long an ack_after="delivery" sender waits before getting an AE.
    delivery_ack_timeout: float = 60.0
    #: Unreadable MSH or unsupported type/version: "reject" (AR) or "dead-letter" (AA,
    #: stored as a dead letter for inspection).
    on_unsupported: Literal["reject", "dead-letter"] = "reject"
    #: Retransmissions (same sender, same MSH-10) within this window are acknowledged
    #: again but not delivered twice.
    duplicate_window_hours: float = 168.0


@dataclass(frozen=True)
class HttpConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    #: Optional protection of the API (not of /health and /ready): X-API-Key or Bearer.
    api_key: Secret | None = None
    bearer_token: Secret | None = None


@dataclass(frozen=True)
class QueueConfig:
    backend: Literal["sqlite", "amqp"] = "sqlite"
    path: Path = Path("var/queue.db")
    #: Longest wait to group commits: more messages per fsync under load.
    commit_interval_ms: float = 2.0


@dataclass(frozen=True)
class AmqpConsumerConfig:
    """``[amqp.consumer]``: messages to convert, consumed from a RabbitMQ queue."""

    enabled: bool = False
    #: "commit": acked once stored in the service's queue; "delivery": once delivered.
    mode: Literal["commit", "delivery"] = "commit"
    #: Listener name of the consumed messages (envelopes, routes, logs, metrics).
    name: str = "amqp"
    exchange: str = "passerelle.ingress"
    exchange_type: Literal["direct", "topic", "fanout", "headers"] = "topic"
    queue: str = "passerelle.ingress"
    binding_key: str = "#"
    prefetch: int = 32
    #: Declare the queue with x-single-active-consumer (standby consumers, kept order).
    single_active_consumer: bool = False
    #: Mode "delivery": transient failures go through the retry queues this many times,
    #: then to the dead-letter exchange.
    max_attempts: int = 10
    #: Delay of each retry queue (seconds); attempt n waits retry_delays[n - 1] (the last
    #: one for later attempts).
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)


@dataclass(frozen=True)
class AmqpConfig:
    """``[amqp]``: the RabbitMQ broker, its dead-letter exchange and the partition queues of
    ``queue.backend = "amqp"``."""

    #: ``amqp[s]://user:password@host:port/vhost`` (a secret: it holds the password).
    url: Secret | None = None
    #: Longest wait for a publisher confirm (and for a reconnection while publishing).
    confirm_timeout: float = 10.0
    #: Pause between reconnection attempts after the broker went away.
    reconnect_interval: float = 2.0
    dead_letter_exchange: str = "passerelle.dead-letter"
    #: Declared and bound to the dead-letter exchange ("" = do not declare one).
    dead_letter_queue: str = "passerelle.dead-letter"
    #: queue.backend = "amqp": ordering keys are hashed onto this many partition queues.
    partitions: int = 16
    partition_exchange: str = "passerelle.partitions"
    partition_queue_prefix: str = "passerelle.partition"
    #: Queue whose consumer count is the number of live ``passerelle worker`` processes.
    presence_queue: str = "passerelle.workers"
    rebalance_interval: float = 2.0
    consumer: AmqpConsumerConfig = field(default_factory=AmqpConsumerConfig)


@dataclass(frozen=True)
class AmqpPublishConfig:
    """``destinations.<name>.amqp``: bundles published to a RabbitMQ exchange."""

    url: Secret | None = None
    exchange: str = "passerelle.bundles"
    exchange_type: Literal["direct", "topic", "fanout", "headers"] = "topic"
    routing_key: str = "bundle"
    #: Declared and bound with ``routing_key`` when set (else bind your own queue).
    queue: str | None = None
    confirm_timeout: float = 10.0
    reconnect_interval: float = 2.0


@dataclass(frozen=True)
class AuthConfig:
    """How to authenticate to a FHIR server."""

    kind: Literal["none", "basic", "bearer", "oauth2"] = "none"
    username: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    scope: str | None = None


@dataclass(frozen=True)
class DestinationConfig:
    """Where bundles go: a FHIR server (``url``) or, without one, a folder."""

    name: str = "default"
    url: str | None = None
    folder: Path = Path("var/out")
    auth: AuthConfig = field(default_factory=AuthConfig)
    client_cert: Path | None = None
    client_key: Path | None = None
    ca_bundle: Path | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    #: Bundles (also) published to RabbitMQ; with ``url`` too, both must take them.
    amqp: AmqpPublishConfig | None = None


@dataclass(frozen=True)
class DeliveryConfig:
    workers: int = 4
    #: Conversion processes (CPU-bound work off the event loop); 0 = one per CPU.
    convert_processes: int = 0
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    #: 0 = retry transient failures forever (nothing acknowledged is ever dropped).
    max_attempts: int = 0


@dataclass(frozen=True)
class ConverterSettings:
    """Conversion settings; routes may override any of them."""

    timezone: str = "UTC"
    charset: str = "utf-8"
    validate: bool = True
    request_mode: RequestMode = "put"
    lenient: bool = False
    templates: tuple[Path, ...] = ()
    id_namespace: str = ""

    def converter_config(self) -> ConverterConfig:
        return ConverterConfig(
            template_dirs=self.templates,
            validate=self.validate,
            default_timezone=self.timezone,
            default_charset=self.charset,
            request_mode=self.request_mode,
            strict_values=not self.lenient,
            id_namespace=self.id_namespace,
        )


@dataclass(frozen=True)
class RouteConfig:
    """Messages matching all given criteria go to ``destination`` with these settings."""

    name: str
    sending_application: str | None = None
    sending_facility: str | None = None
    listener: str | None = None
    destination: str = "default"
    converter: ConverterSettings = field(default_factory=ConverterSettings)

    def matches(self, *, application: str, facility: str, listener: str) -> bool:
        return (
            (self.sending_application is None or self.sending_application == application)
            and (self.sending_facility is None or self.sending_facility == facility)
            and (self.listener is None or self.listener == listener)
        )


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path = Path("var")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    mllp: MllpConfig = field(default_factory=MllpConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    converter: ConverterSettings = field(default_factory=ConverterSettings)
    destinations: Mapping[str, DestinationConfig] = field(
        default_factory=lambda: {"default": DestinationConfig()}
    )
    routes: tuple[RouteConfig, ...] = ()
    amqp: AmqpConfig = field(default_factory=AmqpConfig)

    def route_for(self, *, application: str, facility: str, listener: str) -> RouteConfig:
        """The first matching route, else the default route (default destination)."""
        for route in self.routes:
            if route.matches(application=application, facility=facility, listener=listener):
                return route
        return RouteConfig(name="default", converter=self.converter)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration for display, secrets masked (``Secret`` values, the
        values of destination headers — often API keys — and passwords in URLs)."""
        plain: dict[str, Any] = _to_plain(self)
        for destination in plain["destinations"].values():
            destination["headers"] = {name: "***" for name in destination["headers"]}
            destination["url"] = _mask_url(destination["url"])
            destination["auth"]["token_url"] = _mask_url(destination["auth"]["token_url"])
        return plain


#: Environment variable → dotted setting path it overrides.
ENV_SETTINGS: Mapping[str, str] = {
    "PASSERELLE_DATA_DIR": "data_dir",
    "PASSERELLE_LOG_FORMAT": "log_format",
    "PASSERELLE_LOG_LEVEL": "log_level",
    "PASSERELLE_MLLP_HOST": "mllp.host",
    "PASSERELLE_MLLP_PORT": "mllp.port",
    "PASSERELLE_MLLP_ACK_AFTER": "mllp.ack_after",
    "PASSERELLE_MLLP_MAX_FRAME_BYTES": "mllp.max_frame_bytes",
    "PASSERELLE_MLLP_IDLE_TIMEOUT": "mllp.idle_timeout",
    "PASSERELLE_MLLP_ON_UNSUPPORTED": "mllp.on_unsupported",
    "PASSERELLE_HTTP_HOST": "http.host",
    "PASSERELLE_HTTP_PORT": "http.port",
    "PASSERELLE_HTTP_API_KEY": "http.api_key",
    "PASSERELLE_HTTP_API_KEY_FILE": "http.api_key_file",
    "PASSERELLE_HTTP_BEARER_TOKEN": "http.bearer_token",
    "PASSERELLE_HTTP_BEARER_TOKEN_FILE": "http.bearer_token_file",
    "PASSERELLE_QUEUE_BACKEND": "queue.backend",
    "PASSERELLE_QUEUE_PATH": "queue.path",
    "PASSERELLE_DELIVERY_WORKERS": "delivery.workers",
    "PASSERELLE_DELIVERY_MAX_ATTEMPTS": "delivery.max_attempts",
    "PASSERELLE_TIMEZONE": "converter.timezone",
    "PASSERELLE_TEMPLATES": "converter.templates",
    "PASSERELLE_FHIR_URL": "destinations.default.url",
    "PASSERELLE_FHIR_AUTH": "destinations.default.auth.kind",
    "PASSERELLE_FHIR_USERNAME": "destinations.default.auth.username",
    "PASSERELLE_FHIR_PASSWORD": "destinations.default.auth.password",
    "PASSERELLE_FHIR_PASSWORD_FILE": "destinations.default.auth.password_file",
    "PASSERELLE_FHIR_TOKEN": "destinations.default.auth.token",
    "PASSERELLE_FHIR_TOKEN_FILE": "destinations.default.auth.token_file",
    "PASSERELLE_FHIR_TOKEN_URL": "destinations.default.auth.token_url",
    "PASSERELLE_FHIR_CLIENT_ID": "destinations.default.auth.client_id",
    "PASSERELLE_FHIR_CLIENT_SECRET": "destinations.default.auth.client_secret",
    "PASSERELLE_FHIR_CLIENT_SECRET_FILE": "destinations.default.auth.client_secret_file",
    "PASSERELLE_OUTPUT_DIR": "destinations.default.folder",
    "PASSERELLE_AMQP_URL": "amqp.url",
    "PASSERELLE_AMQP_URL_FILE": "amqp.url_file",
    "PASSERELLE_AMQP_PARTITIONS": "amqp.partitions",
    "PASSERELLE_AMQP_CONSUMER_ENABLED": "amqp.consumer.enabled",
    "PASSERELLE_AMQP_CONSUMER_MODE": "amqp.consumer.mode",
    "PASSERELLE_AMQP_CONSUMER_QUEUE": "amqp.consumer.queue",
    "PASSERELLE_AMQP_BUNDLE_EXCHANGE": "destinations.default.amqp.exchange",
    "PASSERELLE_AMQP_BUNDLE_ROUTING_KEY": "destinations.default.amqp.routing_key",
}


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read ``path`` (optional), apply ``env`` overrides, validate, freeze."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for name, dotted in ENV_SETTINGS.items():
        if name in env and env[name] != "":
            _set_dotted(raw, dotted, env[name], name)
    base = path.parent if path is not None else Path.cwd()
    return _build(raw, base)


def _set_dotted(raw: dict[str, Any], dotted: str, value: str, variable: str) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if part == "auth" and isinstance(child, str):  # auth = "basic" shorthand
            child = node[part] = {"kind": child}
        if not isinstance(child, dict):
            raise ConfigError(f"{variable} cannot override {dotted}: [{part}] is not a table")
        node = child
    key = parts[-1]
    if parts[0] == "mllp" and key in ("port", "host"):
        # The first listener: the [[mllp.listeners]] list when there is one, else the
        # [mllp] table's own host/port, keeping its other settings (TLS) as they are.
        listeners = node.get("listeners")
        if isinstance(listeners, list) and listeners and isinstance(listeners[0], dict):
            listeners[0][key] = value
            return
    if key.endswith("_file"):
        node.pop(key.removesuffix("_file"), None)  # the file named here wins
    node[key] = value


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
    routes = tuple(
        _route(i, section, base, converter, destinations) for i, section in enumerate(routes_raw)
    )
    _check_routes(routes, mllp)
    queue = _queue(_section(raw, "queue"), base, data_dir)
    amqp = _amqp(_section(raw, "amqp"), base)
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
    )
    return config


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
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)} in [{where}]")


def _int(value: Any, where: str, minimum: int = 0, maximum: int | None = None) -> int:
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


def _mask_url(url: str | None) -> str | None:
    """``https://user:password@host/…`` → ``https://user:***@host/…`` (no userinfo: as is)."""
    if not url:
        return url
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url
    # user:password → user:***; a lone user part may itself be a token → ***.
    masked = f"{userinfo.split(':', 1)[0]}:***" if ":" in userinfo else "***"
    netloc = f"{masked}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def _float(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{where} must not be negative")
    return number


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


def _secret(section: dict[str, Any], key: str, base: Path, where: str) -> Secret | None:
    if section.get(key) not in (None, ""):
        return Secret(str(section[key]))
    file_key = f"{key}_file"
    if section.get(file_key):
        path = _path(section[file_key], base, f"{where}.{file_key}")
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}.{file_key}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{where}.{file_key}: {path} is empty")
        return Secret(value)
    return None


def _converter(
    section: dict[str, Any], base: Path, default: ConverterSettings, where: str
) -> ConverterSettings:
    _check_keys(section, {f.name for f in fields(ConverterSettings)}, where)
    changes: dict[str, Any] = {}
    if "timezone" in section:
        changes["timezone"] = str(section["timezone"])
        try:
            zoneinfo.ZoneInfo(changes["timezone"])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{where}.timezone: unknown time zone {changes['timezone']!r}"
            ) from None
    if "charset" in section:
        changes["charset"] = str(section["charset"])
    if "validate" in section:
        changes["validate"] = _bool(section["validate"], f"{where}.validate")
    if "lenient" in section:
        changes["lenient"] = _bool(section["lenient"], f"{where}.lenient")
    if "request_mode" in section:
        changes["request_mode"] = _choice(
            section["request_mode"],
            ("put", "conditional-create", "conditional-update"),
            f"{where}.request_mode",
        )
    if "templates" in section:
        changes["templates"] = _paths(section["templates"], base, f"{where}.templates")
    if "id_namespace" in section:
        changes["id_namespace"] = str(section["id_namespace"])
    return replace(default, **changes)


def _tls(section: Any, base: Path, where: str) -> TlsConfig | None:
    if not section:
        return None
    if not isinstance(section, dict) or "cert" not in section or "key" not in section:
        raise ConfigError(f"{where}.tls needs cert and key")
    _check_keys(section, {"cert", "key", "client_ca"}, f"{where}.tls")
    return TlsConfig(
        cert=_path(section["cert"], base, f"{where}.tls.cert"),
        key=_path(section["key"], base, f"{where}.tls.key"),
        client_ca=_path(section["client_ca"], base, f"{where}.tls.client_ca")
        if section.get("client_ca")
        else None,
    )


def _mllp(section: dict[str, Any], base: Path) -> MllpConfig:
    _check_keys(
        section,
        {
            "listeners",
            "max_frame_bytes",
            "idle_timeout",
            "ack_after",
            "delivery_ack_timeout",
            "on_unsupported",
            "duplicate_window_hours",
            "host",
            "port",
            "tls",
        },
        "mllp",
    )
    listeners_raw = section.get("listeners")
    if listeners_raw is None:
        listeners_raw = [{k: section[k] for k in ("host", "port", "tls") if k in section}]
    else:
        both = sorted(k for k in ("host", "port", "tls") if k in section)
        if both:
            raise ConfigError(
                f"[mllp] {', '.join(both)} and [[mllp.listeners]] are exclusive: set "
                "them on each listener"
            )
        if not isinstance(listeners_raw, list) or not listeners_raw:
            raise ConfigError("mllp.listeners must be a non-empty array of tables")
    listeners = []
    for i, item in enumerate(listeners_raw):
        where = f"mllp.listeners[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(item, {"name", "host", "port", "tls"}, where)
        listeners.append(
            ListenerConfig(
                name=str(item.get("name", "mllp" if i == 0 else f"mllp-{i + 1}")),
                host=str(item.get("host", "0.0.0.0")),
                port=_port(item.get("port", 2575), f"{where}.port"),
                tls=_tls(item.get("tls"), base, where),
            )
        )
    names = [listener.name for listener in listeners]
    if len(set(names)) != len(names):
        raise ConfigError("mllp listener names must be unique")
    return MllpConfig(
        listeners=tuple(listeners),
        max_frame_bytes=_int(
            section.get("max_frame_bytes", MllpConfig.max_frame_bytes), "mllp.max_frame_bytes", 1024
        ),
        idle_timeout=_float(
            section.get("idle_timeout", MllpConfig.idle_timeout), "mllp.idle_timeout"
        ),
        ack_after=_choice(
            section.get("ack_after", "commit"), ("commit", "delivery"), "mllp.ack_after"
        ),
        delivery_ack_timeout=_float(
            section.get("delivery_ack_timeout", MllpConfig.delivery_ack_timeout),
            "mllp.delivery_ack_timeout",
        ),
        on_unsupported=_choice(
            section.get("on_unsupported", "reject"),
            ("reject", "dead-letter"),
            "mllp.on_unsupported",
        ),
        duplicate_window_hours=_float(
            section.get("duplicate_window_hours", MllpConfig.duplicate_window_hours),
            "mllp.duplicate_window_hours",
        ),
    )


def _http(section: dict[str, Any], base: Path) -> HttpConfig:
    _check_keys(
        section,
        {"host", "port", "api_key", "api_key_file", "bearer_token", "bearer_token_file"},
        "http",
    )
    return HttpConfig(
        host=str(section.get("host", "0.0.0.0")),
        port=_port(section.get("port", 8080), "http.port"),
        api_key=_secret(section, "api_key", base, "http"),
        bearer_token=_secret(section, "bearer_token", base, "http"),
    )


def _queue(section: dict[str, Any], base: Path, data_dir: Path) -> QueueConfig:
    _check_keys(section, {"backend", "path", "commit_interval_ms"}, "queue")
    return QueueConfig(
        backend=_choice(section.get("backend", "sqlite"), ("sqlite", "amqp"), "queue.backend"),
        path=_path(section["path"], base, "queue.path")
        if "path" in section
        else data_dir / "queue.db",
        commit_interval_ms=_float(
            section.get("commit_interval_ms", 2.0), "queue.commit_interval_ms"
        ),
    )


def _delivery(section: dict[str, Any]) -> DeliveryConfig:
    _check_keys(section, {f.name for f in fields(DeliveryConfig)}, "delivery")
    default = DeliveryConfig()
    return DeliveryConfig(
        workers=_int(section.get("workers", default.workers), "delivery.workers", 1),
        convert_processes=_int(section.get("convert_processes", 0), "delivery.convert_processes"),
        backoff_initial=_float(
            section.get("backoff_initial", default.backoff_initial), "delivery.backoff_initial"
        ),
        backoff_max=_float(section.get("backoff_max", default.backoff_max), "delivery.backoff_max"),
        max_attempts=_int(section.get("max_attempts", 0), "delivery.max_attempts"),
    )


def _destination(
    name: str, section: dict[str, Any], base: Path, data_dir: Path
) -> DestinationConfig:
    where = f"destinations.{name}"
    _check_keys(
        section,
        {
            "url",
            "folder",
            "auth",
            "client_cert",
            "client_key",
            "ca_bundle",
            "headers",
            "timeout",
            "amqp",
        },
        where,
    )
    auth_raw = section.get("auth", {})
    if isinstance(auth_raw, str):
        auth_raw = {"kind": auth_raw}
    _check_keys(
        auth_raw,
        {
            "kind",
            "username",
            "password",
            "password_file",
            "token",
            "token_file",
            "token_url",
            "client_id",
            "client_secret",
            "client_secret_file",
            "scope",
        },
        f"{where}.auth",
    )
    kind = _choice(
        auth_raw.get("kind", "none"), ("none", "basic", "bearer", "oauth2"), f"{where}.auth.kind"
    )
    auth = AuthConfig(
        kind=kind,
        username=auth_raw.get("username"),
        password=_secret(auth_raw, "password", base, f"{where}.auth"),
        token=_secret(auth_raw, "token", base, f"{where}.auth"),
        token_url=auth_raw.get("token_url"),
        client_id=auth_raw.get("client_id"),
        client_secret=_secret(auth_raw, "client_secret", base, f"{where}.auth"),
        scope=auth_raw.get("scope"),
    )
    if kind == "basic" and (not auth.username or auth.password is None):
        raise ConfigError(f"{where}.auth: basic needs username and password")
    if kind == "bearer" and auth.token is None:
        raise ConfigError(f"{where}.auth: bearer needs token (or token_file)")
    if kind == "oauth2" and not (auth.token_url and auth.client_id and auth.client_secret):
        raise ConfigError(f"{where}.auth: oauth2 needs token_url, client_id, client_secret")
    url = section.get("url") or None
    if url is not None and not str(url).startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url must be an http(s) URL")
    headers = section.get("headers", {})
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}.headers must be a table")
    return DestinationConfig(
        name=name,
        url=str(url).rstrip("/") if url else None,
        folder=_path(section["folder"], base, f"{where}.folder")
        if "folder" in section
        else data_dir / "out" / ("" if name == "default" else name),
        auth=auth,
        client_cert=_path(section["client_cert"], base, f"{where}.client_cert")
        if section.get("client_cert")
        else None,
        client_key=_path(section["client_key"], base, f"{where}.client_key")
        if section.get("client_key")
        else None,
        ca_bundle=_path(section["ca_bundle"], base, f"{where}.ca_bundle")
        if section.get("ca_bundle")
        else None,
        headers={str(k): str(v) for k, v in headers.items()},
        timeout=_float(section.get("timeout", 30.0), f"{where}.timeout"),
        amqp=_amqp_publish(section["amqp"], base, f"{where}.amqp") if "amqp" in section else None,
    )


def _route(
    index: int,
    section: dict[str, Any],
    base: Path,
    converter: ConverterSettings,
    destinations: Mapping[str, DestinationConfig],
) -> RouteConfig:
    where = f"routes[{index}]"
    _check_keys(
        section,
        {"name", "sending_application", "sending_facility", "listener", "destination", "converter"},
        where,
    )
    destination = str(section.get("destination", "default"))
    if destination not in destinations:
        raise ConfigError(f"{where}.destination {destination!r} is not defined")
    return RouteConfig(
        name=str(section.get("name", f"route-{index + 1}")),
        sending_application=section.get("sending_application"),
        sending_facility=section.get("sending_facility"),
        listener=section.get("listener"),
        destination=destination,
        converter=_converter(section.get("converter", {}), base, converter, f"{where}.converter"),
    )


_EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")


def _name(value: Any, where: str, *, empty: bool = False) -> str:
    """An AMQP exchange/queue name (or routing key): a string of at most 255 bytes."""
    if not isinstance(value, str) or (not value and not empty):
        raise ConfigError(f"{where} must be a non-empty string")
    if len(value.encode("utf-8")) > 255:
        raise ConfigError(f"{where} is longer than 255 bytes")
    return value


def _amqp_url(section: dict[str, Any], base: Path, where: str) -> Secret | None:
    url = _secret(section, "url", base, where)
    if url is not None and not url.reveal().startswith(("amqp://", "amqps://")):
        raise ConfigError(f"{where}.url must be an amqp:// or amqps:// URL")
    return url


def _amqp(section: dict[str, Any], base: Path) -> AmqpConfig:
    allowed = {f.name for f in fields(AmqpConfig)} | {"url_file"}
    _check_keys(section, allowed, "amqp")
    default = AmqpConfig()
    consumer_raw = section.get("consumer", {})
    if not isinstance(consumer_raw, dict):
        raise ConfigError("[amqp.consumer] must be a table")
    return AmqpConfig(
        url=_amqp_url(section, base, "amqp"),
        confirm_timeout=_float(
            section.get("confirm_timeout", default.confirm_timeout), "amqp.confirm_timeout"
        ),
        reconnect_interval=_float(
            section.get("reconnect_interval", default.reconnect_interval),
            "amqp.reconnect_interval",
        ),
        dead_letter_exchange=_name(
            section.get("dead_letter_exchange", default.dead_letter_exchange),
            "amqp.dead_letter_exchange",
        ),
        dead_letter_queue=_name(
            section.get("dead_letter_queue", default.dead_letter_queue),
            "amqp.dead_letter_queue",
            empty=True,
        ),
        partitions=_int(section.get("partitions", default.partitions), "amqp.partitions", 1, 1024),
        partition_exchange=_name(
            section.get("partition_exchange", default.partition_exchange),
            "amqp.partition_exchange",
        ),
        partition_queue_prefix=_name(
            section.get("partition_queue_prefix", default.partition_queue_prefix),
            "amqp.partition_queue_prefix",
        ),
        presence_queue=_name(
            section.get("presence_queue", default.presence_queue), "amqp.presence_queue"
        ),
        rebalance_interval=_float(
            section.get("rebalance_interval", default.rebalance_interval),
            "amqp.rebalance_interval",
        ),
        consumer=_amqp_consumer(consumer_raw),
    )


def _amqp_consumer(section: dict[str, Any]) -> AmqpConsumerConfig:
    where = "amqp.consumer"
    _check_keys(section, {f.name for f in fields(AmqpConsumerConfig)}, where)
    default = AmqpConsumerConfig()
    delays_raw = section.get("retry_delays", list(default.retry_delays))
    if isinstance(delays_raw, str):
        delays_raw = [part for part in delays_raw.split(",") if part.strip()]
    if not isinstance(delays_raw, list) or not delays_raw:
        raise ConfigError(f"{where}.retry_delays must be a non-empty list of seconds")
    delays = tuple(_float(value, f"{where}.retry_delays") for value in delays_raw)
    if any(delay <= 0 for delay in delays):
        raise ConfigError(f"{where}.retry_delays must be positive")
    return AmqpConsumerConfig(
        enabled=_bool(section.get("enabled", False), f"{where}.enabled"),
        mode=_choice(section.get("mode", "commit"), ("commit", "delivery"), f"{where}.mode"),
        name=_name(section.get("name", default.name), f"{where}.name"),
        exchange=_name(section.get("exchange", default.exchange), f"{where}.exchange"),
        exchange_type=_choice(
            section.get("exchange_type", default.exchange_type),
            _EXCHANGE_TYPES,
            f"{where}.exchange_type",
        ),
        queue=_name(section.get("queue", default.queue), f"{where}.queue"),
        binding_key=_name(
            section.get("binding_key", default.binding_key), f"{where}.binding_key", empty=True
        ),
        prefetch=_int(section.get("prefetch", default.prefetch), f"{where}.prefetch", 1, 65535),
        single_active_consumer=_bool(
            section.get("single_active_consumer", False), f"{where}.single_active_consumer"
        ),
        max_attempts=_int(
            section.get("max_attempts", default.max_attempts), f"{where}.max_attempts", 1
        ),
        retry_delays=delays,
    )


def _amqp_publish(section: Any, base: Path, where: str) -> AmqpPublishConfig:
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a table")
    _check_keys(section, {f.name for f in fields(AmqpPublishConfig)} | {"url_file"}, where)
    default = AmqpPublishConfig()
    return AmqpPublishConfig(
        url=_amqp_url(section, base, where),
        exchange=_name(section.get("exchange", default.exchange), f"{where}.exchange"),
        exchange_type=_choice(
            section.get("exchange_type", default.exchange_type),
            _EXCHANGE_TYPES,
            f"{where}.exchange_type",
        ),
        routing_key=_name(
            section.get("routing_key", default.routing_key), f"{where}.routing_key", empty=True
        ),
        queue=_name(section["queue"], f"{where}.queue") if section.get("queue") else None,
        confirm_timeout=_float(
            section.get("confirm_timeout", default.confirm_timeout), f"{where}.confirm_timeout"
        ),
        reconnect_interval=_float(
            section.get("reconnect_interval", default.reconnect_interval),
            f"{where}.reconnect_interval",
        ),
    )


def _resolve_amqp_urls(
    destinations: dict[str, DestinationConfig], amqp: AmqpConfig
) -> dict[str, DestinationConfig]:
    """Destinations publishing to AMQP without their own url use ``[amqp] url``."""
    resolved = dict(destinations)
    for name, destination in destinations.items():
        publish = destination.amqp
        if publish is None or publish.url is not None:
            continue
        if amqp.url is None:
            raise ConfigError(f"destinations.{name}.amqp needs a url (or [amqp] url)")
        resolved[name] = replace(destination, amqp=replace(publish, url=amqp.url))
    return resolved


def _check_amqp(amqp: AmqpConfig, queue: QueueConfig, mllp: MllpConfig) -> None:
    if queue.backend == "amqp":
        if amqp.url is None:
            raise ConfigError('queue.backend = "amqp" needs [amqp] url (or PASSERELLE_AMQP_URL)')
        if mllp.ack_after == "delivery":
            raise ConfigError(
                'queue.backend = "amqp" delivers in `passerelle worker` processes: '
                'mllp.ack_after = "delivery" is not available with it'
            )
    if amqp.consumer.enabled and amqp.url is None:
        raise ConfigError("[amqp.consumer] enabled needs [amqp] url (or PASSERELLE_AMQP_URL)")


def _to_plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return "***"
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
