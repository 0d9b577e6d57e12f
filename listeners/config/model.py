"""The configuration objects: frozen, built once at the edge, passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .durations import duration_text

if TYPE_CHECKING:
    # Imported when used: ``passerelle health`` reads the configuration and must not load
    # the converter (its templates, pydantic models: seconds on a loaded host).
    from converter import ConverterConfig
    from converter.assembly.bundle import RequestMode

#: Seconds a dead letter is kept after it failed, unless configured otherwise
#: (``queue.dead_letter_retention``): 30 days. A dead letter is a patient's message kept
#: only so that an operator can fix and retry it; GDPR's storage limitation and data
#: protection by default (art. 5(1)(e), 25(2)) call for a finite period, and the sender
#: (the source of record) still holds the message after it. Defined here, and the queue
#: takes it from here: importing the queue package loads SQLite's queue and, through it,
#: the converter, which ``passerelle health`` (reading this module) must not.
DEFAULT_DEAD_LETTER_RETENTION = 30 * 86400.0

_K = TypeVar("_K")
_V = TypeVar("_V")


class ConfigError(Exception):
    """The configuration file or environment is invalid; the message names the setting
    (and the environment variable, when one gave it).

    ``path``: the configuration file the faulty setting came from (None: the environment,
    the defaults, or no file). The message does not repeat it, so that it reads the same
    whichever file it was; the command line puts it in front (``/etc/passerelle.toml:
    mllp.port must be at most 65535``).
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


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
    #: Connections open at once; a further one is closed as soon as it is accepted
    #: (``[mllp] max_connections`` unless the listener sets its own).
    max_connections: int = 100
    #: MLLP release the senders of this listener speak: 2 adds a commit acknowledgement
    #: block (``VT 0x06 FS CR``) before each reply, a commit NAK (0x15) for a message
    #: not taken (``[mllp] release`` unless the listener sets its own).
    release: Literal[1, 2] = 1


@dataclass(frozen=True)
class MllpConfig:
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    max_frame_bytes: int = 10 * 1024 * 1024
    idle_timeout: float = 300.0
    #: Seconds from a frame's start block to its end block, plus 1 s per 16 KiB received
    #: (up to max_frame_bytes); then the connection is closed without an ACK (a peer
    #: trickling bytes defeats idle_timeout). 0 = no limit.
    frame_timeout: float = 60.0
    #: Bytes of unfinished frames held by all MLLP connections together (each may hold
    #: up to max_frame_bytes); a frame going over it closes its connection without an ACK.
    max_unfinished_bytes: int = 128 * 1024 * 1024
    #: Seconds an ACK may wait for the peer to take it; then the connection is aborted (a
    #: peer that sends but never reads its ACKs). Never more than idle_timeout when that
    #: is set; 0 = no limit of its own (idle_timeout's only).
    write_timeout: float = 60.0
    #: "commit": AA once durably queued; "delivery": AA once the FHIR server accepted it.
    ack_after: Literal["commit", "delivery"] = "commit"
    #: How long an ack_after="delivery" sender waits before getting an AE (above 0).
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
    #: Open connections served at once; a request on a further connection is answered 503
    #: at once (but ``/health``), and beyond twice as many, new connections are closed unread.
    max_connections: int = 100
    #: Seconds a connection may take to send a complete request head (request line and
    #: headers), from its opening or the end of its previous response; then it is closed.
    header_timeout: float = 10.0
    #: Seconds a request may take to send its whole body, from the end of its head; then it
    #: is answered 408 and the connection closed (a slowly sent body holds a connection slot).
    body_timeout: float = 30.0
    #: Messages in one ``POST /convert`` body; more is a 413 before anything is converted.
    max_messages: int = 100


@dataclass(frozen=True)
class QueueConfig:
    backend: Literal["sqlite", "amqp"] = "sqlite"
    path: Path = Path("var/queue.db")
    #: Longest wait to group commits: more messages per fsync under load.
    commit_interval_ms: float = 2.0
    #: Seconds a dead letter is kept after it failed, then deleted by the service (None:
    #: kept until purged by hand). Dead letters hold patients' messages (GDPR).
    dead_letter_retention: float | None = DEFAULT_DEAD_LETTER_RETENTION


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
    #: Larger consumed messages are dead-lettered before any parsing or conversion (the
    #: MLLP listener's ``max_frame_bytes``, for the AMQP consumer).
    max_message_bytes: int = 10 * 1024 * 1024
    #: ``x-message-ttl`` (seconds) of ``dead_letter_queue`` when Passerelle declares it
    #: (None: no TTL). Defaults to ``queue.dead_letter_retention``: dead letters hold
    #: patients' messages (GDPR storage limitation).
    dead_letter_retention: float | None = DEFAULT_DEAD_LETTER_RETENTION


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
    #: Read-only (a :class:`types.MappingProxyType`), whatever was given.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Seconds (connect, read, write, pool) of each request; above 0.
    timeout: float = 30.0
    #: "batch": each bundle is POSTed as a batch (entries independent, not atomic), for
    #: servers that cap transactions (Medplum: 50 updates). Only with request_mode "put":
    #: the conditional modes' urn:uuid references resolve only inside a transaction.
    bundle_type: Literal["transaction", "batch"] = "transaction"
    #: Bundles (also) published to RabbitMQ; with ``url`` too, both must take them.
    amqp: AmqpPublishConfig | None = None
    #: The outbound HTTP proxy of the FHIR server's requests (and of its OAuth2 token
    #: endpoint): ``http://proxy:3128``, credentials in the url if it needs them. Never
    #: taken from ``HTTP(S)_PROXY``: see listeners/delivery/fhir.py.
    proxy: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _frozen(self.headers))


@dataclass(frozen=True)
class DeliveryConfig:
    workers: int = 4
    #: Conversion processes (CPU-bound work off the event loop); 0 = one per CPU.
    convert_processes: int = 0
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    #: 0 = retry transient failures forever (nothing acknowledged is ever dropped).
    max_attempts: int = 0
    #: Seconds one message's conversion may take before it is stopped and dead-lettered
    #: (a pathological message must not hold a conversion process, and shutdown, for
    #: minutes); 0 = no limit.
    conversion_timeout: float = 60.0


@dataclass(frozen=True)
class ConverterSettings:
    """Conversion settings; routes may override any of them."""

    timezone: str = "UTC"
    charset: str = "utf-8"
    validate: bool = True
    request_mode: RequestMode = "put"
    #: Per resource type, over ``request_mode`` (``{Patient = "conditional-create"}``).
    request_modes: tuple[tuple[str, RequestMode], ...] = ()
    lenient: bool = False
    strict_hl7: bool = False
    templates: tuple[Path, ...] = ()
    id_namespace: str = ""

    def converter_config(self) -> ConverterConfig:
        from converter import ConverterConfig

        return ConverterConfig(
            template_dirs=self.templates,
            validate=self.validate,
            default_timezone=self.timezone,
            default_charset=self.charset,
            request_mode=self.request_mode,
            request_modes=self.request_modes,
            strict_values=not self.lenient,
            strict_hl7=self.strict_hl7,
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
    #: MSH-11.1 values this route takes (HL7 table 0103: P production, T training, D
    #: debugging); others get AR 202. Empty: any.
    processing_ids: tuple[str, ...] = ()

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
    #: MSH-11.1 values accepted by the default route and by routes that do not say.
    processing_ids: tuple[str, ...] = ()
    #: What becomes of a message no configured route matches: "default" delivers it to
    #: the default destination (as before), "reject" refuses it before it is stored (MLLP
    #: AR, AMQP dead letter): a sender nobody configured (a mistyped MSH-3, a new
    #: training system) must not reach a destination that may be production.
    unmatched_senders: Literal["default", "reject"] = "default"

    def __post_init__(self) -> None:
        # Frozen means frozen: a dict here could be changed in place by any holder.
        object.__setattr__(self, "destinations", _frozen(self.destinations))

    def default_route(self) -> RouteConfig:
        """The route of messages no configured route matches."""
        return RouteConfig(
            name="default", converter=self.converter, processing_ids=self.processing_ids
        )

    def route_for(self, *, application: str, facility: str, listener: str) -> RouteConfig:
        """The first matching route, else the default route (default destination)."""
        for route in self.routes:
            if route.matches(application=application, facility=facility, listener=listener):
                return route
        return self.default_route()

    def unmatched(self, route: RouteConfig) -> bool:
        """Whether ``route`` (of :meth:`route_for`) means that no configured route matched:
        the default route while routes are configured (without any, the default route is
        every sender's, as intended)."""
        return bool(self.routes) and route.name == "default"

    def redacted(self) -> dict[str, Any]:
        """The effective configuration for display, secrets masked (``Secret`` values, the
        values of destination headers — often API keys — and passwords in URLs), durations
        as the file writes them (``"30d"``, ``"off"``), not in seconds."""
        plain: dict[str, Any] = _to_plain(self)
        plain["queue"]["dead_letter_retention"] = duration_text(self.queue.dead_letter_retention)
        plain["amqp"]["dead_letter_retention"] = duration_text(self.amqp.dead_letter_retention)
        for destination in plain["destinations"].values():
            destination["headers"] = {name: "***" for name in destination["headers"]}
            destination["url"] = mask_url(destination["url"])
            destination["auth"]["token_url"] = mask_url(destination["auth"]["token_url"])
            destination["proxy"] = mask_url(destination["proxy"])
        return plain


def _frozen(mapping: Mapping[_K, _V]) -> Mapping[_K, _V]:
    """A read-only copy of ``mapping`` (a copy: the caller's dict may change later)."""
    return MappingProxyType(dict(mapping))


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


def mask_url(url: str | None) -> str | None:
    """``https://user:password@host/…?apikey=k`` → ``https://user:***@host/…?***``: the
    secrets a URL may carry (the password of its userinfo, API keys in its query) masked
    for display (``--print-config``, errors, ``/ready``, dead letters)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced "[" in the host: show nothing rather than all
        return "(url not shown: unparseable)"
    parts = parts._replace(query="***" if parts.query else "")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return urlunsplit(parts)
    # user:password → user:***; a lone user part may itself be a token → ***.
    masked = f"{userinfo.split(':', 1)[0]}:***" if ":" in userinfo else "***"
    return urlunsplit(parts._replace(netloc=f"{masked}@{hostport}"))
