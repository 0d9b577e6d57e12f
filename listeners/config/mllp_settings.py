"""The ``[mllp]`` section: the listeners (ports, TLS, connection limits) and the limits
and timeouts every MLLP connection shares. Split out of :mod:`.loading`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from .model import ConfigError, ListenerConfig, MllpConfig, TlsConfig
from .values import _check_keys, _choice, _float, _int, _path, _port


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


def _release(value: Any, where: str) -> Literal[1, 2]:
    """MLLP release 1 (frames only) or 2 (commit acknowledgement blocks too)."""
    number = _int(value, where, 1, 2)
    return 1 if number == 1 else 2


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
            "frame_timeout",
            "write_timeout",
            "max_unfinished_bytes",
            "max_connections",
            "release",
            "host",
            "port",
            "tls",
        },
        "mllp",
    )
    # Each listener's, unless it sets its own.
    max_connections = _int(
        section.get("max_connections", ListenerConfig.max_connections), "mllp.max_connections", 1
    )
    release = _release(section.get("release", ListenerConfig.release), "mllp.release")
    listeners_raw = section.get("listeners")
    # The name errors give the listener: "mllp.port" for the one of the [mllp] table
    # itself (what the file says), not "mllp.listeners[0].port", which it has not.
    implicit = listeners_raw is None
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
        where = "mllp" if implicit else f"mllp.listeners[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(item, {"name", "host", "port", "tls", "max_connections", "release"}, where)
        listeners.append(
            ListenerConfig(
                name=str(item.get("name", "mllp" if i == 0 else f"mllp-{i + 1}")),
                host=str(item.get("host", "0.0.0.0")),
                port=_port(item.get("port", 2575), f"{where}.port"),
                tls=_tls(item.get("tls"), base, where),
                max_connections=_int(
                    item.get("max_connections", max_connections), f"{where}.max_connections", 1
                ),
                release=_release(item.get("release", release), f"{where}.release"),
            )
        )
    names = [listener.name for listener in listeners]
    if len(set(names)) != len(names):
        raise ConfigError("mllp listener names must be unique")
    max_frame_bytes = _int(
        section.get("max_frame_bytes", MllpConfig.max_frame_bytes), "mllp.max_frame_bytes", 1024
    )
    if "max_unfinished_bytes" in section:
        max_unfinished_bytes = _int(section["max_unfinished_bytes"], "mllp.max_unfinished_bytes")
        if max_unfinished_bytes < max_frame_bytes:
            raise ConfigError(
                f"mllp.max_unfinished_bytes ({max_unfinished_bytes}) is below "
                f"mllp.max_frame_bytes ({max_frame_bytes}): a frame of the maximum size "
                "could never be received"
            )
    else:
        # Room for two frames of the maximum size at least.
        max_unfinished_bytes = max(MllpConfig.max_unfinished_bytes, 2 * max_frame_bytes)
    return MllpConfig(
        listeners=tuple(listeners),
        max_frame_bytes=max_frame_bytes,
        idle_timeout=_float(
            section.get("idle_timeout", MllpConfig.idle_timeout), "mllp.idle_timeout"
        ),
        frame_timeout=_float(
            section.get("frame_timeout", MllpConfig.frame_timeout), "mllp.frame_timeout"
        ),
        write_timeout=_float(
            section.get("write_timeout", MllpConfig.write_timeout), "mllp.write_timeout"
        ),
        max_unfinished_bytes=max_unfinished_bytes,
        ack_after=_choice(
            section.get("ack_after", "commit"), ("commit", "delivery"), "mllp.ack_after"
        ),
        delivery_ack_timeout=_float(
            section.get("delivery_ack_timeout", MllpConfig.delivery_ack_timeout),
            "mllp.delivery_ack_timeout",
            # 0 would answer AE "not confirmed in time" to every message, delivered or not.
            positive=True,
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
