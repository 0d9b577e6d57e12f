"""``passerelle serve --print-config``: durations shown as the configuration writes them;
``[mllp] write_timeout`` shown with the other MLLP timeouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from listeners.config import load_config
from listeners.config.durations import duration_text
from listeners.config.values import _duration
from tests.listeners.test_config import cli, toml


def printed(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = cli("serve", "--config", str(toml(tmp_path, text)), "--print-config", env=env)
    assert result.returncode == 0, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


@pytest.mark.parametrize(
    ("text", "env", "queue", "amqp"),
    [
        # The default: 2592000 (seconds) was shown, where the docs and the file say "30d".
        ("", {}, "30d", "30d"),
        ('[queue]\ndead_letter_retention = "12h"\n', {}, "12h", "12h"),
        ('[queue]\ndead_letter_retention = "off"\n', {}, "off", "off"),
        (
            '[queue]\ndead_letter_retention = "7d"\n[amqp]\ndead_letter_retention = "90m"\n',
            {},
            "7d",
            "90m",
        ),
        ("", {"PASSERELLE_QUEUE_DEAD_LETTER_RETENTION": "3601s"}, "3601s", "3601s"),
    ],
)
def test_print_config_shows_the_dead_letter_retention_as_written(
    tmp_path: Path, text: str, env: dict[str, str], queue: str, amqp: str
) -> None:
    shown = printed(tmp_path, text, env)
    assert shown["queue"]["dead_letter_retention"] == queue
    assert shown["amqp"]["dead_letter_retention"] == amqp


def test_the_service_still_holds_the_retention_in_seconds(tmp_path: Path) -> None:
    config = load_config(toml(tmp_path, '[queue]\ndead_letter_retention = "12h"\n'), env={})
    assert config.queue.dead_letter_retention == 12 * 3600
    assert config.redacted()["queue"]["dead_letter_retention"] == "12h"


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("30d", "30d"),
        ("12h", "12h"),
        ("90m", "90m"),
        ("3600s", "1h"),  # the same duration, in the largest unit that holds it whole
        ("1.5d", "36h"),
        ("0.5s", "0.5s"),
        ("off", "off"),
    ],
)
def test_what_is_shown_reads_back_as_the_same_duration(written: str, shown: str) -> None:
    seconds = _duration(written, "x")
    assert duration_text(seconds) == shown
    assert _duration(shown, "x") == seconds


def test_print_config_shows_the_mllp_write_timeout(tmp_path: Path) -> None:
    assert printed(tmp_path, "")["mllp"]["write_timeout"] == 60.0
    assert printed(tmp_path, "[mllp]\nwrite_timeout = 20\n")["mllp"]["write_timeout"] == 20.0
    from_env = printed(tmp_path, "", {"PASSERELLE_MLLP_WRITE_TIMEOUT": "5"})
    assert from_env["mllp"]["write_timeout"] == 5.0
