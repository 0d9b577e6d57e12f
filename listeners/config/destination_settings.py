"""The ``[destinations.NAME]`` sections: a FHIR server (url, auth, TLS) or a folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .amqp_settings import _amqp_publish
from .model import AuthConfig, ConfigError, ConverterSettings, DestinationConfig, RouteConfig
from .values import _check_keys, _choice, _float, _path, _secret


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
            "bundle_type",
            "amqp",
            "proxy",
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
    for key in ("username", "token_url", "client_id", "scope"):
        # A number or a list here failed later: token_url = 5 as a traceback at start-up,
        # client_id = 7 at each token request.
        if auth_raw.get(key) is not None and not isinstance(auth_raw[key], str):
            raise ConfigError(f"{where}.auth.{key} must be a string")
    token_url = auth_raw.get("token_url") or None
    if token_url is not None:
        # A relative or mistyped url would fail every token request, deliveries paused
        # for ever with "transport error".
        try:
            parts = urlsplit(token_url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}.auth.token_url must be an http(s) URL")
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
    given = sorted(key for key in auth_raw if key != "kind" and auth_raw[key] not in (None, ""))
    if kind == "none" and given:
        # Credentials without a kind would be silently unused: every request then goes
        # out unauthenticated and is refused, with nothing to say why.
        raise ConfigError(
            f"{where}.auth: {', '.join(given)} given but no auth kind (set kind = "
            '"basic", "bearer" or "oauth2"; PASSERELLE_FHIR_AUTH for the default destination)'
        )
    # The variables too: the default destination is often configured by them alone.
    if kind == "basic" and (not auth.username or auth.password is None):
        raise ConfigError(
            f"{where}.auth: basic needs username and password (PASSERELLE_FHIR_USERNAME, "
            "PASSERELLE_FHIR_PASSWORD or _FILE for the default destination)"
        )
    if kind == "bearer" and auth.token is None:
        raise ConfigError(
            f"{where}.auth: bearer needs token (or token_file) (PASSERELLE_FHIR_TOKEN or "
            "PASSERELLE_FHIR_TOKEN_FILE for the default destination)"
        )
    if kind == "oauth2" and not (auth.token_url and auth.client_id and auth.client_secret):
        raise ConfigError(
            f"{where}.auth: oauth2 needs token_url, client_id, client_secret "
            "(PASSERELLE_FHIR_TOKEN_URL, PASSERELLE_FHIR_CLIENT_ID, "
            "PASSERELLE_FHIR_CLIENT_SECRET or _FILE for the default destination)"
        )
    url = section.get("url") or None
    if url is not None and not str(url).startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url must be an http(s) URL")
    if url is not None:
        try:
            parts = urlsplit(str(url))
            port = parts.port  # ValueError: not a number, or above 65535
        except ValueError:  # also an unbalanced "[" in the host
            raise ConfigError(
                f"{where}.url is not a valid URL (a port from 1 to 65535, if any)"
            ) from None
        if port == 0 or not parts.hostname:
            # Accepted, it failed every delivery as an "unexpected error", retried for
            # ever, each message acknowledged (CA) and then stuck in the queue.
            raise ConfigError(f"{where}.url needs a host, and a port from 1 to 65535 if any")
        check_url_credentials(name, str(url), kind)
    headers = section.get("headers", {})
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}.headers must be a table")
    _check_headers(headers, where)
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
        # 0 is no "no limit" here: httpx.Timeout(0) fails every request at once.
        timeout=_float(section.get("timeout", 30.0), f"{where}.timeout", positive=True),
        bundle_type=_choice(
            section.get("bundle_type", "transaction"),
            ("transaction", "batch"),
            f"{where}.bundle_type",
        ),
        amqp=_amqp_publish(section["amqp"], base, f"{where}.amqp") if "amqp" in section else None,
        proxy=_proxy(section.get("proxy"), where),
    )


def _proxy(value: Any, where: str) -> str | None:
    """An http(s) proxy URL (``http://[user:password@]host:port``), or None. Refused at
    start-up when it is no such URL: every request would fail, retried for ever as a
    "transport error". The error never quotes the value (it may hold a password)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _is_proxy_url(value):
        raise ConfigError(
            f"{where}.proxy must be the http(s) URL of a proxy, http://host:port (value not shown)"
        )
    return value.rstrip("/")


def _is_proxy_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # an unbalanced "[", a port out of range
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port != 0
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
    )


#: An HTTP field name (RFC 9110 §5.1: a token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Control characters but tab, and DEL: never in an HTTP field value (RFC 9110 §5.5).
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_headers(headers: dict[str, Any], where: str) -> None:
    """Refused at start-up rather than failing every request (each delivery then retried
    for ever as a "transport error"). Values are often API keys: errors name the header,
    never its value."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{where}.headers: {name[:100]!r} is not a valid HTTP header name")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{where}.headers.{name} must be a string")
        if _HEADER_VALUE_BAD.search(str(value)):
            raise ConfigError(
                f"{where}.headers.{name} holds a line break or control character (value not shown)"
            )


def _check_batch_destinations(
    destinations: dict[str, DestinationConfig],
    converter: ConverterSettings,
    routes: tuple[RouteConfig, ...],
) -> None:
    """A destination that sends batches takes only ``put`` bundles: the conditional
    modes' urn:uuid references resolve only inside a transaction."""
    for where, settings, target in (
        ("converter", converter, "default"),
        *((f"route {r.name!r}", r.converter, r.destination) for r in routes),
    ):
        modes = (settings.request_mode, *(m for _, m in settings.request_modes))
        mode = next((m for m in modes if m != "put"), None)
        if destinations[target].bundle_type == "batch" and mode is not None:
            raise ConfigError(
                f"{where}: request_mode {mode!r} needs a transaction, but "
                f'destination {target!r} sends "batch"'
            )


def check_url_credentials(name: str, url: str, auth_kind: str) -> None:
    """Refuse a url carrying credentials (``https://user:password@host/…``) for a destination
    with an ``auth`` kind: httpx would build a Basic ``Authorization`` from them, which
    silently replaces the configured authentication on every request. Also checked by the
    FHIR sink, for configurations built in code."""
    try:
        has_userinfo = "@" in urlsplit(url).netloc
    except ValueError:
        return  # the request will say so
    if has_userinfo and auth_kind != "none":
        raise ConfigError(
            f"destinations.{name}.url holds credentials (user:***@) while "
            f"destinations.{name}.auth.kind is {auth_kind!r}: they would replace the configured "
            "authentication; remove them from the url"
        )
