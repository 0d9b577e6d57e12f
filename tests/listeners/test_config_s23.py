"""Session 23, where a configuration error comes from: the file, an environment variable
or both, found by validating without each (listeners/config/loading.py), not by looking
for the names of settings in the error's text."""

from __future__ import annotations

from pathlib import Path

import pytest

from listeners.config import ConfigError, load_config


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "passerelle.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        # PASSERELLE_MLLP_PORT sets the first listener's port, not the second's.
        (
            '[[mllp.listeners]]\nname = "a"\nport = 2575\n'
            '[[mllp.listeners]]\nname = "b"\nport = 99999\n',
            {"PASSERELLE_MLLP_PORT": "2600"},
            "mllp.listeners[1].port must be at most 65535",
        ),
        # "http" and "port" are in the error's text: PASSERELLE_HTTP_PORT is not to blame.
        (
            "[http]\nportt = 1\n",
            {"PASSERELLE_HTTP_PORT": "8081"},
            "unknown setting(s) ['portt'] in [http]",
        ),
        # PASSERELLE_FHIR_URL sets the default destination's url, not this one's.
        (
            '[destinations.lab]\nurl = "ftp://lab.example.org"\n',
            {"PASSERELLE_FHIR_URL": "https://fhir.example.org/fhir"},
            "destinations.lab.url must be an http(s) URL",
        ),
    ],
    ids=["second listener", "unknown key", "another destination"],
)
def test_an_error_of_the_file_is_not_blamed_on_a_variable(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    # Before: "(from PASSERELLE_…)" on the message and no file named (path None) for
    # the first and the third: the engineer looked at a variable that was right.
    path = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert str(caught.value) == expected
    assert caught.value.path == path


def test_an_error_of_a_variable_names_it_and_not_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[[mllp.listeners]]\nname = "a"\nport = 2575\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"PASSERELLE_MLLP_PORT": "99999", "PASSERELLE_HTTP_PORT": "81"})
    assert str(caught.value) == (
        "mllp.listeners[0].port must be at most 65535 (from PASSERELLE_MLLP_PORT)"
    )
    assert caught.value.path is None


def test_an_error_between_a_variable_and_the_file_names_both(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[delivery]\nbackoff_max = 10\n")
    env = {"PASSERELLE_DELIVERY_BACKOFF_INITIAL": "20", "PASSERELLE_HTTP_PORT": "81"}
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert str(caught.value) == (
        "delivery.backoff_initial (20 s) is above delivery.backoff_max (10 s)"
        " (from PASSERELLE_DELIVERY_BACKOFF_INITIAL)"
    )
    assert caught.value.path == path


def test_a_variable_over_a_wrong_value_of_the_file_is_the_one_named(tmp_path: Path) -> None:
    # The file's value is overridden: only the variable's is used, and wrong.
    path = _toml(tmp_path, "[http]\nport = 99999\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"PASSERELLE_HTTP_PORT": "abc"})
    assert (
        str(caught.value) == "http.port must be an integer, got 'abc' (from PASSERELLE_HTTP_PORT)"
    )
    assert caught.value.path is None
