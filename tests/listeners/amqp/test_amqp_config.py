"""``[amqp]``, ``[amqp.consumer]`` and ``destinations.<name>.amqp``: parsing, environment,
validation, secrets; ``passerelle worker`` refusing a configuration it cannot use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from listeners.config import ConfigError, load_config

PASSERELLE = str(Path(sys.executable).parent / "passerelle")


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "passerelle.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_amqp() -> None:
    config = load_config(env={})
    assert config.amqp.url is None and not config.amqp.consumer.enabled
    assert config.amqp.partitions == 16
    assert config.destinations["default"].amqp is None


def test_a_full_amqp_configuration(tmp_path: Path) -> None:
    config = load_config(
        config_file(
            tmp_path,
            """
[queue]
backend = "amqp"
[amqp]
url = "amqp://passerelle:pw@rabbit:5672/hl7"
partitions = 32
[amqp.consumer]
enabled = true
mode = "delivery"
queue = "in"
exchange = "in-x"
exchange_type = "direct"
binding_key = "adt"
prefetch = 8
max_attempts = 4
retry_delays = [2, 10]
single_active_consumer = true
[destinations.default]
url = "https://fhir.example.org/fhir"
amqp = { exchange = "bundles", routing_key = "fhir.bundle", queue = "bundles" }
[destinations.other]
amqp = { url = "amqps://u:p@other/", exchange = "x" }
""",
        ),
        env={},
    )
    amqp = config.amqp
    assert amqp.url is not None and amqp.url.reveal() == "amqp://passerelle:pw@rabbit:5672/hl7"
    assert amqp.partitions == 32
    consumer = amqp.consumer
    assert (
        consumer.enabled,
        consumer.mode,
        consumer.queue,
        consumer.exchange,
        consumer.exchange_type,
        consumer.binding_key,
        consumer.prefetch,
        consumer.max_attempts,
        consumer.retry_delays,
        consumer.single_active_consumer,
    ) == (True, "delivery", "in", "in-x", "direct", "adt", 8, 4, (2.0, 10.0), True)
    default = config.destinations["default"].amqp
    assert default is not None and default.url == amqp.url  # inherited from [amqp]
    assert (default.exchange, default.routing_key, default.queue) == (
        "bundles",
        "fhir.bundle",
        "bundles",
    )
    other = config.destinations["other"].amqp
    assert other is not None and other.url is not None
    assert other.url.reveal() == "amqps://u:p@other/"


def test_environment_variables(tmp_path: Path) -> None:
    secret = tmp_path / "amqp-url"
    secret.write_text("amqp://svc:from-file@mq/\n", encoding="utf-8")
    config = load_config(
        env={
            "PASSERELLE_QUEUE_BACKEND": "amqp",
            "PASSERELLE_AMQP_URL_FILE": str(secret),
            "PASSERELLE_AMQP_PARTITIONS": "8",
            "PASSERELLE_AMQP_CONSUMER_ENABLED": "true",
            "PASSERELLE_AMQP_CONSUMER_MODE": "delivery",
            "PASSERELLE_AMQP_CONSUMER_QUEUE": "hl7-in",
            "PASSERELLE_AMQP_BUNDLE_EXCHANGE": "fhir-out",
        }
    )
    assert config.queue.backend == "amqp"
    assert config.amqp.url is not None and config.amqp.url.reveal() == "amqp://svc:from-file@mq/"
    assert config.amqp.partitions == 8
    assert config.amqp.consumer.enabled and config.amqp.consumer.mode == "delivery"
    assert config.amqp.consumer.queue == "hl7-in"
    default = config.destinations["default"].amqp
    assert default is not None and default.exchange == "fhir-out"


def test_size_limit_and_dead_letter_retention(tmp_path: Path) -> None:
    defaults = load_config(env={}).amqp
    # The MLLP listener's frame limit; the SQLite dead letters' retention (30 days).
    assert defaults.max_message_bytes == 10 * 1024 * 1024
    assert defaults.dead_letter_retention == 30 * 86400
    follows = load_config(config_file(tmp_path, '[queue]\ndead_letter_retention = "7d"\n'), env={})
    assert follows.amqp.dead_letter_retention == 7 * 86400
    off = load_config(config_file(tmp_path, '[queue]\ndead_letter_retention = "off"\n'), env={})
    assert off.amqp.dead_letter_retention is None
    own = load_config(
        config_file(
            tmp_path,
            '[queue]\ndead_letter_retention = "7d"\n'
            '[amqp]\ndead_letter_retention = "off"\nmax_message_bytes = 2048\n',
        ),
        env={},
    )
    assert own.amqp.dead_letter_retention is None and own.queue.dead_letter_retention == 7 * 86400
    assert own.amqp.max_message_bytes == 2048
    from_env = load_config(
        env={
            "PASSERELLE_AMQP_MAX_MESSAGE_BYTES": "1048576",
            "PASSERELLE_AMQP_DEAD_LETTER_RETENTION": "12h",
        }
    )
    assert from_env.amqp.max_message_bytes == 1048576
    assert from_env.amqp.dead_letter_retention == 12 * 3600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[amqp]\nmax_message_bytes = 100\n", "amqp.max_message_bytes must be at least 1024"),
        ("[amqp]\ndead_letter_retention = 30\n", "amqp.dead_letter_retention must be a duration"),
        ('[queue]\nbackend = "amqp"\n', "needs [amqp] url"),
        (
            '[queue]\nbackend = "amqp"\n[amqp]\nurl = "amqp://h/"\n'
            '[mllp]\nack_after = "delivery"\n',
            "ack_after",
        ),
        ("[amqp.consumer]\nenabled = true\n", "[amqp.consumer] enabled needs"),
        ('[amqp]\nurl = "http://h/"\n', "amqp.url"),
        ("[amqp]\npartitions = 0\n", "amqp.partitions"),
        ("[amqp]\nwhat = 1\n", "what"),
        ('[amqp.consumer]\nmode = "later"\n', "amqp.consumer.mode"),
        ("[amqp.consumer]\nretry_delays = []\n", "retry_delays"),
        ('[destinations.default.amqp]\nexchange = "x"\n', "destinations.default.amqp needs a url"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(config_file(tmp_path, text), env={})


def test_print_config_masks_the_broker_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    env["PASSERELLE_AMQP_URL"] = "amqp://user:hunter2@mq:5672/"
    env["PASSERELLE_AMQP_BUNDLE_EXCHANGE"] = "out"
    result = subprocess.run(
        [PASSERELLE, "serve", "--print-config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["amqp"]["url"] == "***"
    assert shown["destinations"]["default"]["amqp"]["url"] == "***"


def test_passerelle_worker_needs_the_amqp_backend(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    result = subprocess.run(
        [PASSERELLE, "worker"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert 'queue.backend = "amqp"' in result.stderr and "Traceback" not in result.stderr


def test_passerelle_worker_without_a_broker_cannot_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    env.update(
        {
            "PASSERELLE_QUEUE_BACKEND": "amqp",
            "PASSERELLE_AMQP_URL": "amqp://guest:s3cret@127.0.0.1:1/",
            "PASSERELLE_DATA_DIR": str(tmp_path / "data"),
        }
    )
    path = config_file(tmp_path, "[delivery]\nconvert_processes = 1\n[amqp]\nconfirm_timeout = 3\n")
    result = subprocess.run(
        [PASSERELLE, "worker", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "cannot start" in result.stderr and "cannot connect to RabbitMQ" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
