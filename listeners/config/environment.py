"""Environment variables over the configuration file: which variable sets which setting.

Each ``PASSERELLE_…`` variable of :data:`ENV_SETTINGS` overrides one dotted setting of
the TOML file (``mllp.port``, ``destinations.default.url``…) before the configuration is
validated, so a value from the environment is checked exactly as one from the file, and
an error about it names the variable.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .model import ConfigError

__all__ = [
    "ENV_SETTINGS",
    "apply_environment",
    "environment_warnings",
]

#: Environment variable → dotted setting path it overrides.
ENV_SETTINGS: Mapping[str, str] = {
    "PASSERELLE_DATA_DIR": "data_dir",
    "PASSERELLE_LOG_FORMAT": "log_format",
    "PASSERELLE_LOG_LEVEL": "log_level",
    "PASSERELLE_PROCESSING_IDS": "processing_ids",
    "PASSERELLE_UNMATCHED_SENDERS": "unmatched_senders",
    "PASSERELLE_MLLP_HOST": "mllp.host",
    "PASSERELLE_MLLP_PORT": "mllp.port",
    "PASSERELLE_MLLP_ACK_AFTER": "mllp.ack_after",
    "PASSERELLE_MLLP_MAX_FRAME_BYTES": "mllp.max_frame_bytes",
    "PASSERELLE_MLLP_IDLE_TIMEOUT": "mllp.idle_timeout",
    "PASSERELLE_MLLP_ON_UNSUPPORTED": "mllp.on_unsupported",
    "PASSERELLE_MLLP_DELIVERY_ACK_TIMEOUT": "mllp.delivery_ack_timeout",
    "PASSERELLE_MLLP_MAX_CONNECTIONS": "mllp.max_connections",
    "PASSERELLE_MLLP_FRAME_TIMEOUT": "mllp.frame_timeout",
    "PASSERELLE_MLLP_WRITE_TIMEOUT": "mllp.write_timeout",
    "PASSERELLE_MLLP_MAX_UNFINISHED_BYTES": "mllp.max_unfinished_bytes",
    "PASSERELLE_MLLP_RELEASE": "mllp.release",
    "PASSERELLE_HTTP_HOST": "http.host",
    "PASSERELLE_HTTP_PORT": "http.port",
    "PASSERELLE_HTTP_API_KEY": "http.api_key",
    "PASSERELLE_HTTP_API_KEY_FILE": "http.api_key_file",
    "PASSERELLE_HTTP_BEARER_TOKEN": "http.bearer_token",
    "PASSERELLE_HTTP_BEARER_TOKEN_FILE": "http.bearer_token_file",
    "PASSERELLE_HTTP_MAX_CONNECTIONS": "http.max_connections",
    "PASSERELLE_HTTP_HEADER_TIMEOUT": "http.header_timeout",
    "PASSERELLE_HTTP_BODY_TIMEOUT": "http.body_timeout",
    "PASSERELLE_HTTP_MAX_MESSAGES": "http.max_messages",
    "PASSERELLE_QUEUE_BACKEND": "queue.backend",
    "PASSERELLE_QUEUE_PATH": "queue.path",
    "PASSERELLE_QUEUE_DEAD_LETTER_RETENTION": "queue.dead_letter_retention",
    "PASSERELLE_DELIVERY_WORKERS": "delivery.workers",
    # One conversion process per CPU by default, counted on the host: a container limited
    # to 2 CPUs on a 64-CPU node started 64 (40 MB each before its first message).
    "PASSERELLE_DELIVERY_CONVERT_PROCESSES": "delivery.convert_processes",
    "PASSERELLE_DELIVERY_MAX_ATTEMPTS": "delivery.max_attempts",
    "PASSERELLE_DELIVERY_BACKOFF_INITIAL": "delivery.backoff_initial",
    "PASSERELLE_DELIVERY_BACKOFF_MAX": "delivery.backoff_max",
    "PASSERELLE_DELIVERY_CONVERSION_TIMEOUT": "delivery.conversion_timeout",
    "PASSERELLE_TIMEZONE": "converter.timezone",
    "PASSERELLE_TEMPLATES": "converter.templates",
    "PASSERELLE_FHIR_URL": "destinations.default.url",
    "PASSERELLE_FHIR_BUNDLE_TYPE": "destinations.default.bundle_type",
    "PASSERELLE_FHIR_TIMEOUT": "destinations.default.timeout",
    "PASSERELLE_FHIR_PROXY": "destinations.default.proxy",
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
    # The OAuth2 settings had a variable each but this one: a server requiring a scope
    # (SMART backend services: system/*.write) needed a mounted file for it alone.
    "PASSERELLE_FHIR_SCOPE": "destinations.default.auth.scope",
    "PASSERELLE_OUTPUT_DIR": "destinations.default.folder",
    "PASSERELLE_AMQP_URL": "amqp.url",
    "PASSERELLE_AMQP_URL_FILE": "amqp.url_file",
    "PASSERELLE_AMQP_PARTITIONS": "amqp.partitions",
    "PASSERELLE_AMQP_MAX_MESSAGE_BYTES": "amqp.max_message_bytes",
    "PASSERELLE_AMQP_DEAD_LETTER_RETENTION": "amqp.dead_letter_retention",
    "PASSERELLE_AMQP_CONSUMER_ENABLED": "amqp.consumer.enabled",
    "PASSERELLE_AMQP_CONSUMER_MODE": "amqp.consumer.mode",
    "PASSERELLE_AMQP_CONSUMER_QUEUE": "amqp.consumer.queue",
    "PASSERELLE_AMQP_BUNDLE_EXCHANGE": "destinations.default.amqp.exchange",
    "PASSERELLE_AMQP_BUNDLE_ROUTING_KEY": "destinations.default.amqp.routing_key",
}


_REFUSED_EMPTY = frozenset(
    {
        "PASSERELLE_HTTP_API_KEY",
        "PASSERELLE_HTTP_API_KEY_FILE",
        "PASSERELLE_HTTP_BEARER_TOKEN",
        "PASSERELLE_HTTP_BEARER_TOKEN_FILE",
    }
)


#: Variables holding paths (``PASSERELLE_TEMPLATES``: several, ``os.pathsep`` between).
_PATH_VARIABLES = frozenset(
    {
        "PASSERELLE_DATA_DIR",
        "PASSERELLE_QUEUE_PATH",
        "PASSERELLE_OUTPUT_DIR",
        "PASSERELLE_TEMPLATES",
    }
    | {name for name in ENV_SETTINGS if name.endswith("_FILE")}
)

#: What Kubernetes injects for a Service named ``passerelle[-…]`` in the namespace
#: (service links: ``PASSERELLE_MLLP_PORT=tcp://10.0.0.5:2575`` for one named
#: ``passerelle-mllp``): not settings.
_SERVICE_LINK_NAME = re.compile(
    r"PASSERELLE(?:_[A-Z0-9_]+?)?_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT"
    r"|PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)"
)
_SERVICE_LINK_VALUE = re.compile(r"(?:tcp|udp|sctp)://", re.IGNORECASE)
#: Read by the test harness, not by the service.
_OTHER_VARIABLES = re.compile(r"PASSERELLE_REQUIRE_[A-Z0-9_]+")


def _service_link(name: str, value: str) -> bool:
    """``PASSERELLE_MLLP_PORT=tcp://…``: a Kubernetes service link, not a port number."""
    return name.endswith("_PORT") and bool(_SERVICE_LINK_VALUE.match(value))


def apply_environment(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Write the variables of ``env`` found in :data:`ENV_SETTINGS` into the raw settings
    ``raw`` (the parsed file); returns variable → dotted setting of those applied.

    A relative path from a variable is taken from the working directory, as a shell user
    expects (relative paths of the file are resolved against the file's folder)."""
    applied: dict[str, str] = {}
    for name, dotted in ENV_SETTINGS.items():
        # An empty variable means "not set", except for the API's credentials: set empty,
        # they would leave the conversion endpoints open without a word.
        if name in env and (env[name] != "" or name in _REFUSED_EMPTY):
            if _service_link(name, env[name]):
                continue  # see environment_warnings
            value = env[name]
            if name in _PATH_VARIABLES and value:
                value = _absolute(value, several=name == "PASSERELLE_TEMPLATES")
            _set_dotted(raw, dotted, value, name)
            applied[name] = dotted
    return applied


def _absolute(value: str, *, several: bool) -> str:
    parts = value.split(os.pathsep) if several else [value]
    return os.pathsep.join(
        str(Path.cwd() / Path(part).expanduser()) if part else part for part in parts
    )


def environment_warnings(env: Mapping[str, str]) -> list[str]:
    """What the service says at start-up about ``PASSERELLE_…`` variables it does not use:
    a misspelt name (``PASSERELLE_FHIR_URI``) is otherwise ignored without a word — the
    bundles then go to the local folder, ``/ready`` green — and a Kubernetes service link
    in a port variable is ignored."""
    warnings = []
    for name in sorted(env):
        if not name.startswith("PASSERELLE_"):
            continue
        if name in ENV_SETTINGS:
            if _service_link(name, env[name]):
                warnings.append(
                    f"{name}={env[name][:60]!r} is a Kubernetes service link (a Service "
                    f"named {name.removesuffix('_PORT').lower().replace('_', '-')}), not a "
                    "port: ignored (set enableServiceLinks: false in the pod spec, or "
                    "rename the Service)"
                )
            continue
        if _SERVICE_LINK_NAME.fullmatch(name) or _OTHER_VARIABLES.fullmatch(name):
            continue
        close = difflib.get_close_matches(name, ENV_SETTINGS, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name} is not a Passerelle setting: ignored{hint}")
    return warnings


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
