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

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from converter import ConverterConfig
from converter.assembly.bundle import RequestMode

__all__ = [
    "ENV_SETTINGS",
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

    def route_for(self, *, application: str, facility: str, listener: str) -> RouteConfig:
        """The first matching route, else the default route (default destination)."""
        for route in self.routes:
            if route.matches(application=application, facility=facility, listener=listener):
                return route
        return RouteConfig(name="default", converter=self.converter)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration for display, secrets masked."""
        plain: dict[str, Any] = _to_plain(self)
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
    "PASSERELLE_HTTP_BEARER_TOKEN": "http.bearer_token",
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
    "PASSERELLE_FHIR_TOKEN": "destinations.default.auth.token",
    "PASSERELLE_FHIR_TOKEN_URL": "destinations.default.auth.token_url",
    "PASSERELLE_FHIR_CLIENT_ID": "destinations.default.auth.client_id",
    "PASSERELLE_FHIR_CLIENT_SECRET": "destinations.default.auth.client_secret",
    "PASSERELLE_OUTPUT_DIR": "destinations.default.folder",
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
            _set_dotted(raw, dotted, env[name])
    base = path.parent if path is not None else Path.cwd()
    return _build(raw, base)


def _set_dotted(raw: dict[str, Any], dotted: str, value: str) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if parts[-1] == "port" and parts[0] == "mllp":
        # One port from the environment: the first listener.
        listeners = node.setdefault("listeners", [{}])
        listeners[0]["port"] = value
        return
    if parts[-1] == "host" and parts[0] == "mllp":
        listeners = node.setdefault("listeners", [{}])
        listeners[0]["host"] = value
        return
    node[parts[-1]] = value


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
        },
    )
    data_dir = _path(top.get("data_dir", "var"), base, "data_dir")
    converter = _converter(_section(raw, "converter"), base, ConverterSettings(), "converter")
    destinations = {"default": DestinationConfig(folder=data_dir / "out")}
    for name, section in _section(raw, "destinations").items():
        destinations[name] = _destination(name, section, base, data_dir)
    routes = tuple(
        _route(i, section, base, converter, destinations)
        for i, section in enumerate(raw.get("routes", []) or [])
    )
    queue = _queue(_section(raw, "queue"), base, data_dir)
    config = ServiceConfig(
        data_dir=data_dir,
        log_format=_choice(top.get("log_format", "text"), ("text", "json"), "log_format"),
        log_level=str(top.get("log_level", "INFO")).upper(),
        mllp=_mllp(_section(raw, "mllp"), base),
        http=_http(_section(raw, "http"), base),
        queue=queue,
        delivery=_delivery(_section(raw, "delivery")),
        converter=converter,
        destinations=destinations,
        routes=routes,
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


def _int(value: Any, where: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{where} must be at least {minimum}")
    return number


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
            return Secret(path.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(f"{where}.{file_key}: cannot read {path}: {exc.strerror}") from None
    return None


def _converter(
    section: dict[str, Any], base: Path, default: ConverterSettings, where: str
) -> ConverterSettings:
    _check_keys(section, {f.name for f in fields(ConverterSettings)}, where)
    changes: dict[str, Any] = {}
    if "timezone" in section:
        changes["timezone"] = str(section["timezone"])
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
    listeners = []
    for i, item in enumerate(listeners_raw):
        where = f"mllp.listeners[{i}]"
        _check_keys(item, {"name", "host", "port", "tls"}, where)
        listeners.append(
            ListenerConfig(
                name=str(item.get("name", "mllp" if i == 0 else f"mllp-{i + 1}")),
                host=str(item.get("host", "0.0.0.0")),
                port=_int(item.get("port", 2575), f"{where}.port"),
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
        port=_int(section.get("port", 8080), "http.port"),
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
        {"url", "folder", "auth", "client_cert", "client_key", "ca_bundle", "headers", "timeout"},
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
