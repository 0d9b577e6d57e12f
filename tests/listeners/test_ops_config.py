"""What an operator meets at start-up: values refused by name (never with a traceback or a
secret), environment variables that are misspelt or injected by Kubernetes, relative paths
from the environment, a queue path naming a directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from listeners.config import ConfigError, environment, load_config
from tests.listeners.test_config import cli


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "passerelle.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- a queue path naming a directory ---------------------------------------------------------
def test_a_queue_path_naming_a_directory_is_refused_and_the_directory_left_alone(
    tmp_path: Path,
) -> None:
    # queue.path = "/tmp" (or PASSERELLE_QUEUE_PATH=/data, taken for the data directory):
    # the service made its "queue file" 0600 and so took the permissions off the folder
    # (/tmp went from 1777 to 1700, every other user of the host locked out of it).
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    config = _toml(tmp_path, f'[mllp]\nport = 0\n[http]\nport = 0\n[queue]\npath = "{shared}"\n')
    result = cli("serve", "--config", str(config), env={}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"passerelle: {config}: queue.path {shared} is a directory: name the queue file "
        f"({shared / 'queue.db'}), or set data_dir"
    ]
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    with pytest.raises(ConfigError, match=r"queue\.path .* is a directory.*PASSERELLE_QUEUE_PATH"):
        load_config(None, env={"PASSERELLE_QUEUE_PATH": str(shared)})


# -- destination settings checked at start-up ------------------------------------------------
@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ("token_url = 5", "destinations.default.auth.token_url must be a string"),
        ('token_url = "idp/token"', "destinations.default.auth.token_url must be an http(s) URL"),
        ('token_url = "https://"', "destinations.default.auth.token_url must be an http(s) URL"),
        ("client_id = 7", "destinations.default.auth.client_id must be a string"),
        ('scope = ["a", "b"]', "destinations.default.auth.scope must be a string"),
    ],
)
def test_oauth2_settings_of_the_wrong_kind_are_refused_in_one_line(
    tmp_path: Path, auth: str, expected: str
) -> None:
    values = {"token_url": '"https://idp.example.org/token"', "client_id": '"c"'}
    key = auth.split(" ", 1)[0]
    values[key] = auth.split(" = ", 1)[1]
    settings = ", ".join(f"{k} = {v}" for k, v in values.items())
    config = _toml(
        tmp_path,
        '[destinations.default]\nurl = "https://fhir.example.org/fhir"\n'
        f'auth = {{ kind = "oauth2", client_secret = "s3cr3t-value", {settings} }}\n',
    )
    # token_url = 5 was an AttributeError traceback from `serve` and `--print-config`.
    result = cli("serve", "--config", str(config), "--print-config", env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"passerelle: {config}: {expected}"]
    assert "s3cr3t-value" not in result.stderr


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            '{ "X-Api-Key" = "k3y-value\\r\\nX-Injected: 1" }',
            "destinations.default.headers.X-Api-Key holds a line break or control character",
        ),
        ('{ "X Tenant" = "a" }', "destinations.default.headers: 'X Tenant' is not a valid HTTP"),
        ('{ "X-Tenant" = { a = 1 } }', "destinations.default.headers.X-Tenant must be a string"),
    ],
)
def test_destination_headers_that_no_request_could_carry_are_refused(
    tmp_path: Path, headers: str, expected: str
) -> None:
    # Accepted before: every delivery then failed as a "transport error" (LocalProtocolError),
    # the destination paused and /ready red for ever, with nothing naming the header.
    path = _toml(
        tmp_path,
        f'[destinations.default]\nurl = "https://fhir.example.org/fhir"\nheaders = {headers}\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).startswith(expected)
    assert "k3y-value" not in str(caught.value)  # header values are often API keys


def test_valid_headers_still_pass(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        '[destinations.default]\nurl = "https://fhir.example.org/fhir"\n'
        'headers = { "X-Tenant" = "warehouse", "X-Api-Key" = "a b\\tc", "X-Count" = 3 }\n',
    )
    headers = load_config(path, env={}).destinations["default"].headers
    assert dict(headers) == {"X-Tenant": "warehouse", "X-Api-Key": "a b\tc", "X-Count": "3"}


def test_an_id_namespace_that_is_not_text_is_refused(tmp_path: Path) -> None:
    # A table was taken as its Python text ("{'a': 1}") and namespaced every id with it.
    path = _toml(tmp_path, "[converter]\nid_namespace = { a = 1 }\n")
    with pytest.raises(ConfigError, match=r"^converter\.id_namespace must be a string$"):
        load_config(path, env={})
    path = _toml(tmp_path, '[[routes]]\nname = "r"\nconverter = { id_namespace = ["x"] }\n')
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.converter\.id_namespace must be"):
        load_config(path, env={})


# -- environment variables -------------------------------------------------------------------
def test_relative_paths_from_the_environment_are_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PASSERELLE_DATA_DIR=var with --config /etc/passerelle/passerelle.toml was
    # /etc/passerelle/var: the file's folder, which the operator never named.
    work = tmp_path / "work"
    (work / "secrets").mkdir(parents=True)
    (work / "secrets" / "api_key").write_text("k\n")
    monkeypatch.chdir(work)
    path = _toml(tmp_path, 'data_dir = "from-file"\n')
    env = {
        "PASSERELLE_DATA_DIR": "var",
        "PASSERELLE_TEMPLATES": os.pathsep.join(["tpl-a", str(tmp_path / "tpl-b")]),
        "PASSERELLE_HTTP_API_KEY_FILE": "secrets/api_key",
    }
    config = load_config(path, env=env)
    assert config.data_dir == work / "var"
    assert config.queue.path == work / "var" / "queue.db"
    assert config.converter.templates == (work / "tpl-a", tmp_path / "tpl-b")
    assert config.http.api_key is not None and config.http.api_key.reveal() == "k"
    # The file's own relative paths keep being resolved against its folder.
    assert load_config(path, env={}).data_dir == tmp_path / "conf" / "from-file"


def test_kubernetes_service_links_in_port_variables_are_ignored(tmp_path: Path) -> None:
    # A Service named passerelle-mllp (or -http) in the namespace makes Kubernetes inject
    # PASSERELLE_MLLP_PORT=tcp://10.0.0.5:2575 into every pod: the service refused to
    # start ("must be an integer") and so did its healthcheck.
    env = {
        "PASSERELLE_MLLP_PORT": "tcp://10.0.0.5:2575",
        "PASSERELLE_MLLP_PORT_2575_TCP_ADDR": "10.0.0.5",
        "PASSERELLE_MLLP_SERVICE_HOST": "10.0.0.5",
        "PASSERELLE_HTTP_PORT": "tcp://10.0.0.6:8080",
    }
    path = _toml(tmp_path, "[mllp]\nport = 2600\n[http]\nport = 8090\n")
    config = load_config(path, env=env)
    assert (config.mllp.listeners[0].port, config.http.port) == (2600, 8090)
    warnings = environment.environment_warnings(env)
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "PASSERELLE_HTTP_PORT='tcp://10.0.0.6:8080' is a Kubernetes service link "
        "(a Service named passerelle-http), not a port: ignored"
    )
    # A number is still a port.
    assert load_config(path, env={"PASSERELLE_MLLP_PORT": "2601"}).mllp.listeners[0].port == 2601


def test_misspelt_variables_are_named_at_start_up(tmp_path: Path) -> None:
    # PASSERELLE_FHIR_URI was ignored without a word: bundles went to data_dir/out, /ready
    # green, and the FHIR server never received anything.
    env = {
        "PASSERELLE_FHIR_URI": "https://fhir.example.org/fhir",
        "PASSERELLE_HTTP_APIKEY": "k",
        "PASSERELLE_NOTHING_LIKE_IT": "1",
        "PASSERELLE_REQUIRE_RABBITMQ": "1",  # the test harness's
        "PASSERELLE_SERVICE_HOST": "10.0.0.7",  # a Service named passerelle
        "PASSERELLE_PORT": "tcp://10.0.0.7:8080",
        "PASSERELLE_LOG_LEVEL": "INFO",
    }
    assert environment.environment_warnings(env) == [
        "PASSERELLE_FHIR_URI is not a Passerelle setting: ignored "
        "(did you mean PASSERELLE_FHIR_URL?)",
        "PASSERELLE_HTTP_APIKEY is not a Passerelle setting: ignored "
        "(did you mean PASSERELLE_HTTP_API_KEY?)",
        "PASSERELLE_NOTHING_LIKE_IT is not a Passerelle setting: ignored",
    ]
    result = cli(
        "serve", "--print-config", env={"PASSERELLE_FHIR_URI": "https://x/fhir"}, cwd=tmp_path
    )
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "passerelle: warning: PASSERELLE_FHIR_URI is not a Passerelle setting: ignored "
        "(did you mean PASSERELLE_FHIR_URL?)"
    ]


# -- how long dead letters are kept ----------------------------------------------------------
def test_dead_letter_retention_is_thirty_days_unless_set(tmp_path: Path) -> None:
    assert load_config(None, env={}).queue.dead_letter_retention == 30 * 86400
    for text, seconds in (('"90d"', 90 * 86400), ('"12h"', 43200), ('"off"', None), ("0", None)):
        config = load_config(_toml(tmp_path, f"[queue]\ndead_letter_retention = {text}\n"), env={})
        assert config.queue.dead_letter_retention == seconds, text
    from_env = load_config(None, env={"PASSERELLE_QUEUE_DEAD_LETTER_RETENTION": "7d"})
    assert from_env.queue.dead_letter_retention == 7 * 86400
    assert "PASSERELLE_QUEUE_DEAD_LETTER_RETENTION" in environment.ENV_SETTINGS


@pytest.mark.parametrize("text", ["30", '"30"', '"0d"', '"-1d"', '"30 days"', "true", "1.5"])
def test_a_dead_letter_retention_without_its_unit_is_refused(tmp_path: Path, text: str) -> None:
    # A bare 30 read as seconds would delete every dead letter half a minute after it
    # failed; read as days, it would be a guess. "0d": at once, or never?
    path = _toml(tmp_path, f"[queue]\ndead_letter_retention = {text}\n")
    with pytest.raises(ConfigError, match=r"queue\.dead_letter_retention must be a duration"):
        load_config(path, env={})


# -- a template directory given one level too deep ---------------------------------------------
def test_the_service_refuses_a_template_directory_one_level_too_deep(tmp_path: Path) -> None:
    # templates = ["/srv/maps/hl7v2"]: resources/Patient.j2 there is no name the converter
    # loads, so every override was ignored without a word (the CLI said so, not the service).
    deep = tmp_path / "maps" / "hl7v2"
    (deep / "resources").mkdir(parents=True)
    (deep / "resources" / "Patient.j2").write_text('{"resourceType": "Patient"}')
    config = _toml(
        tmp_path,
        f'[mllp]\nport = 0\n[http]\nport = 0\n[converter]\ntemplates = ["{deep}"]\n',
    )
    result = cli("serve", "--config", str(config), env={}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"template directory {deep} holds no hl7v2/, cda/ or codemaps/ folder" in (result.stderr)
    assert "Traceback" not in result.stderr
