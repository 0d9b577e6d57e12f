"""``release`` (MLLP release 1 or 2) in ``[mllp]`` and on each listener; the server side:
tests/listeners/mllp/test_release2_commits_s28.py, the service:
tests/listeners/service/test_release2_service_s28.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from listeners.config import ENV_SETTINGS, ConfigError, load_config
from tests.listeners.test_config import toml


def test_release_1_by_default() -> None:
    assert [lst.release for lst in load_config(None, env={}).mllp.listeners] == [1]


def test_the_mllp_table_sets_every_listener_s_unless_it_sets_its_own(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        "[mllp]\nrelease = 2\n"
        "[[mllp.listeners]]\nname = 'mirth'\nport = 2575\n"
        "[[mllp.listeners]]\nname = 'lab'\nport = 2576\nrelease = 1\n",
    )
    listeners = load_config(path, env={}).mllp.listeners
    assert [(lst.name, lst.release) for lst in listeners] == [("mirth", 2), ("lab", 1)]


def test_from_the_environment(tmp_path: Path) -> None:
    assert ENV_SETTINGS["PASSERELLE_MLLP_RELEASE"] == "mllp.release"
    config = load_config(None, env={"PASSERELLE_MLLP_RELEASE": "2"})
    assert [lst.release for lst in config.mllp.listeners] == [2]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[mllp]\nrelease = 3\n", {}, r"^mllp\.release must be at most 2$"),
        ("[mllp]\nrelease = 0\n", {}, r"^mllp\.release must be at least 1$"),
        ("[mllp]\nrelease = '2.0'\n", {}, r"^mllp\.release must be an integer"),
        (
            "[[mllp.listeners]]\nname = 'a'\nrelease = true\n",
            {},
            r"^mllp\.listeners\[0\]\.release must be an integer",
        ),
        ("", {"PASSERELLE_MLLP_RELEASE": "v2"}, r"mllp\.release must be an integer, got 'v2'"),
    ],
)
def test_invalid_values_are_refused_by_name(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(toml(tmp_path, text), env=env)
