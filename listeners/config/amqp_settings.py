"""The ``[amqp]`` section: broker, consumer, publishing, scale-out partitions."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .model import (
    AmqpConfig,
    AmqpConsumerConfig,
    AmqpPublishConfig,
    ConfigError,
    DestinationConfig,
    MllpConfig,
    QueueConfig,
    Secret,
)
from .values import _bool, _check_keys, _choice, _duration, _float, _int, _name, _secret

_EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")


def _amqp_url(section: dict[str, Any], base: Path, where: str) -> Secret | None:
    """The broker URL, checked whenever it is set, used or not (a section kept for later,
    or a destination no route uses yet, fails on the day it is used otherwise: a port out
    of range stopped ``passerelle serve`` with a traceback). Errors never quote the URL:
    it holds the broker's password."""
    url = _secret(section, "url", base, where)
    if url is None:
        return None
    text = url.reveal()
    if not text.startswith(("amqp://", "amqps://")):
        raise ConfigError(f"{where}.url must be an amqp:// or amqps:// URL")
    try:
        port = urlsplit(text).port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        raise ConfigError(
            f"{where}.url: its port must be a number from 1 to 65535 (the URL is not "
            "shown: it may hold a password)"
        )
    return url


def _amqp(section: dict[str, Any], base: Path, queue: QueueConfig | None = None) -> AmqpConfig:
    allowed = {f.name for f in fields(AmqpConfig)} | {"url_file"}
    _check_keys(section, allowed, "amqp")
    default = AmqpConfig()
    retention = (queue or QueueConfig()).dead_letter_retention
    if "dead_letter_retention" in section:
        retention = _duration(section["dead_letter_retention"], "amqp.dead_letter_retention")
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
        max_message_bytes=_int(
            section.get("max_message_bytes", default.max_message_bytes),
            "amqp.max_message_bytes",
            1024,
        ),
        dead_letter_retention=retention,
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
