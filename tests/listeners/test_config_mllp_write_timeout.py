"""``[mllp] write_timeout``: how long an ACK may wait for the peer to take it. Configured,
validated and read from the environment as ``idle_timeout`` and ``frame_timeout`` are
(the server side: tests/listeners/mllp/test_keepalives.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from listeners.config import ENV_SETTINGS, ConfigError, load_config
from tests.listeners.test_config import toml


def test_the_default_is_sixty_seconds() -> None:
    assert load_config(None, env={}).mllp.write_timeout == 60.0


def test_from_the_file_and_from_the_environment_over_it(tmp_path: Path) -> None:
    path = toml(tmp_path, "[mllp]\nwrite_timeout = 15\n")
    assert load_config(path, env={}).mllp.write_timeout == 15.0
    env = {"PASSERELLE_MLLP_WRITE_TIMEOUT": "2.5"}
    assert load_config(path, env=env).mllp.write_timeout == 2.5
    assert ENV_SETTINGS["PASSERELLE_MLLP_WRITE_TIMEOUT"] == "mllp.write_timeout"


def test_zero_is_no_limit_of_its_own_as_for_the_other_mllp_timeouts(tmp_path: Path) -> None:
    path = toml(tmp_path, "[mllp]\nwrite_timeout = 0\nidle_timeout = 0\nframe_timeout = 0\n")
    mllp = load_config(path, env={}).mllp
    assert (mllp.write_timeout, mllp.idle_timeout, mllp.frame_timeout) == (0, 0, 0)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[mllp]\nwrite_timeout = -1\n", {}, r"^mllp\.write_timeout must not be negative$"),
        ("[mllp]\nwrite_timeout = 'soon'\n", {}, r"^mllp\.write_timeout must be a number"),
        ("[mllp]\nwrite_timeout = true\n", {}, r"^mllp\.write_timeout must be a number"),
        ("[mllp]\nwrite_timeout = inf\n", {}, r"^mllp\.write_timeout must be a finite number"),
        (
            "",
            {"PASSERELLE_MLLP_WRITE_TIMEOUT": "60s"},
            r"mllp\.write_timeout must be a number, got '60s' "
            r"\(from PASSERELLE_MLLP_WRITE_TIMEOUT\)",
        ),
        # One value for every listener, as idle_timeout and frame_timeout.
        (
            "[[mllp.listeners]]\nname = 'chu'\nwrite_timeout = 5\n",
            {},
            r"unknown setting\(s\) \['write_timeout'\] in \[mllp\.listeners\[0\]\]",
        ),
    ],
)
def test_invalid_values_are_refused_by_name(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(toml(tmp_path, text), env=env)
