"""Service configuration: defaults, TOML, environment overrides, secrets, errors, routes."""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from listeners.config import (
    ConfigError,
    DestinationConfig,
    Secret,
    ServiceConfig,
    TlsConfig,
    load_config,
)

PASSERELLE = str(Path(sys.executable).parent / "passerelle")


def toml(tmp_path: Path, text: str, name: str = "passerelle.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PASSERELLE_")}
    environment.update(env or {})
    return subprocess.run(
        [PASSERELLE, *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=60,
        check=False,
    )


# -- defaults ---------------------------------------------------------------------------------
def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    (listener,) = config.mllp.listeners
    assert (listener.name, listener.host, listener.port, listener.tls) == (
        "mllp",
        "0.0.0.0",
        2575,
        None,
    )
    assert config.http.port == 8080 and config.http.host == "0.0.0.0"
    assert config.http.api_key is None and config.http.bearer_token is None
    assert config.data_dir == tmp_path / "var"
    assert config.queue.path == tmp_path / "var" / "queue.db"
    assert config.queue.backend == "sqlite"
    ((name, default),) = config.destinations.items()
    assert name == "default" and default.url is None
    assert default.folder == tmp_path / "var" / "out"
    assert config.mllp.ack_after == "commit" and config.mllp.on_unsupported == "reject"
    assert config.delivery.max_attempts == 0  # retry forever: nothing acknowledged is dropped
    assert config.log_format == "text" and config.log_level == "INFO"
    assert config.routes == ()
    assert config == load_config(None, env={})  # frozen, comparable


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = toml(tmp_path / "etc", 'data_dir = "state"\n[queue]\npath = "q/queue.db"\n')
    config = load_config(path, env={})
    assert config.data_dir == tmp_path / "etc" / "state"
    assert config.queue.path == tmp_path / "etc" / "q" / "queue.db"
    assert config.destinations["default"].folder == tmp_path / "etc" / "state" / "out"


# -- TOML -------------------------------------------------------------------------------------
FULL = """
data_dir = "/srv/passerelle"
log_format = "json"
log_level = "warning"

[mllp]
ack_after = "delivery"
delivery_ack_timeout = 5
on_unsupported = "dead-letter"
max_frame_bytes = 65536
idle_timeout = 60
duplicate_window_hours = 24

[[mllp.listeners]]
name = "adt"
host = "127.0.0.1"
port = 2576

[[mllp.listeners]]
name = "lab"
port = 2577
tls = { cert = "certs/server.pem", key = "certs/server.key", client_ca = "certs/ca.pem" }

[http]
port = 9090
api_key = "inline-key"

[queue]
commit_interval_ms = 5

[delivery]
workers = 8
convert_processes = 2
backoff_initial = 0.5
backoff_max = 60
max_attempts = 10

[converter]
timezone = "Europe/Paris"
request_mode = "conditional-update"
lenient = true
templates = ["maps"]

[destinations.default]
url = "https://fhir.example.org/fhir/"
auth = { kind = "bearer", token = "t" }
headers = { "X-Tenant" = "north" }

[destinations.lab]
url = "https://lab.example.org/fhir"
timeout = 5
auth = { kind = "oauth2", token_url = "https://idp/token", client_id = "pass", client_secret = "s" }

[[routes]]
name = "lab"
listener = "lab"
sending_facility = "LABO"
destination = "lab"
converter = { id_namespace = "lab", timezone = "America/New_York" }
"""


def test_a_full_file(tmp_path: Path) -> None:
    config = load_config(toml(tmp_path, FULL), env={})
    assert config.data_dir == Path("/srv/passerelle")
    assert config.queue.path == Path("/srv/passerelle/queue.db")
    assert config.log_format == "json" and config.log_level == "WARNING"
    assert config.mllp.ack_after == "delivery" and config.mllp.delivery_ack_timeout == 5
    assert config.mllp.on_unsupported == "dead-letter"
    assert config.mllp.max_frame_bytes == 65536 and config.mllp.duplicate_window_hours == 24
    adt, lab = config.mllp.listeners
    assert (adt.name, adt.host, adt.port, adt.tls) == ("adt", "127.0.0.1", 2576, None)
    assert lab.tls == TlsConfig(
        tmp_path / "certs/server.pem", tmp_path / "certs/server.key", tmp_path / "certs/ca.pem"
    )
    assert config.http.port == 9090 and config.http.api_key == Secret("inline-key")
    assert config.delivery.workers == 8 and config.delivery.max_attempts == 10
    assert config.converter.templates == (tmp_path / "maps",)
    assert config.converter.request_mode == "conditional-update" and config.converter.lenient
    default = config.destinations["default"]
    assert default.url == "https://fhir.example.org/fhir"  # trailing slash dropped
    assert default.auth.kind == "bearer" and default.auth.token == Secret("t")
    assert default.headers == {"X-Tenant": "north"}
    assert config.destinations["lab"].auth.client_secret == Secret("s")
    (route,) = config.routes
    # A route inherits the global converter settings and overrides some.
    assert route.converter.timezone == "America/New_York"
    assert route.converter.id_namespace == "lab"
    assert route.converter.request_mode == "conditional-update"
    assert route.converter.templates == (tmp_path / "maps",)


# -- environment ------------------------------------------------------------------------------
def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        '[http]\nport = 9090\n[mllp]\nport = 3000\n[destinations.default]\nurl = "http://a/fhir"\n',
    )
    env = {
        "PASSERELLE_FHIR_URL": "https://fhir.example.org/R4",
        "PASSERELLE_FHIR_AUTH": "basic",
        "PASSERELLE_FHIR_USERNAME": "svc",
        "PASSERELLE_FHIR_PASSWORD": "pw-from-env",
        "PASSERELLE_HTTP_PORT": "9191",
        "PASSERELLE_HTTP_BODY_TIMEOUT": "12.5",
        "PASSERELLE_MLLP_PORT": "3001",
        "PASSERELLE_MLLP_ACK_AFTER": "delivery",
        "PASSERELLE_DELIVERY_WORKERS": "3",
        "PASSERELLE_TIMEZONE": "Europe/Paris",
        "PASSERELLE_LOG_FORMAT": "json",
        "PASSERELLE_DATA_DIR": str(tmp_path / "data"),
        "PASSERELLE_QUEUE_PATH": str(tmp_path / "q.db"),
        "PASSERELLE_TEMPLATES": os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]),
        "PASSERELLE_LOG_LEVEL": "",  # empty: ignored
    }
    config = load_config(path, env=env)
    default = config.destinations["default"]
    assert default.url == "https://fhir.example.org/R4"
    assert default.auth.kind == "basic" and default.auth.username == "svc"
    assert default.auth.password == Secret("pw-from-env")
    assert config.http.port == 9191 and config.mllp.listeners[0].port == 3001
    assert config.http.body_timeout == 12.5
    assert config.mllp.ack_after == "delivery" and config.delivery.workers == 3
    assert config.converter.timezone == "Europe/Paris" and config.log_format == "json"
    assert config.data_dir == tmp_path / "data" and config.queue.path == tmp_path / "q.db"
    assert config.converter.templates == (tmp_path / "a", tmp_path / "b")
    assert config.log_level == "INFO"
    # Without a file at all.
    assert (
        load_config(None, env={"PASSERELLE_FHIR_URL": "http://x/fhir"}).destinations["default"].url
        == "http://x/fhir"
    )


def test_env_mllp_port_keeps_the_files_listener_settings(tmp_path: Path) -> None:
    """PASSERELLE_MLLP_PORT changes the port only: TLS and host from the file stay."""
    path = toml(
        tmp_path,
        '[mllp]\nhost = "127.0.0.1"\nport = 2999\ntls = { cert = "c.pem", key = "k.pem" }\n',
    )
    (listener,) = load_config(path, env={"PASSERELLE_MLLP_PORT": "3001"}).mllp.listeners
    assert listener.port == 3001
    assert listener.host == "127.0.0.1"
    assert listener.tls == TlsConfig(tmp_path / "c.pem", tmp_path / "k.pem")
    # With [[mllp.listeners]], the first listener's.
    path = toml(
        tmp_path,
        '[[mllp.listeners]]\nname = "a"\nport = 1\n[[mllp.listeners]]\nname = "b"\nport = 2\n',
    )
    a, b = load_config(
        path, env={"PASSERELLE_MLLP_PORT": "11", "PASSERELLE_MLLP_HOST": "::1"}
    ).mllp.listeners
    assert (a.name, a.host, a.port) == ("a", "::1", 11) and b.port == 2


def test_env_auth_over_the_auth_shorthand(tmp_path: Path) -> None:
    path = toml(tmp_path, '[destinations.default]\nurl = "http://a/fhir"\nauth = "basic"\n')
    env = {"PASSERELLE_FHIR_USERNAME": "u", "PASSERELLE_FHIR_PASSWORD": "p"}
    auth = load_config(path, env=env).destinations["default"].auth
    assert (auth.kind, auth.username, auth.password) == ("basic", "u", Secret("p"))


# -- secrets ----------------------------------------------------------------------------------
def test_secrets_from_files_and_env_files(tmp_path: Path) -> None:
    (tmp_path / "api.key").write_text("key-from-file\n")
    (tmp_path / "fhir.pw").write_text("pw-from-file")
    (tmp_path / "token").write_text("token-from-env-file\n")
    path = toml(
        tmp_path,
        '[http]\napi_key_file = "api.key"\n'
        '[destinations.default]\nurl = "http://a/fhir"\n'
        'auth = { kind = "basic", username = "u", password = "inline",'
        ' password_file = "fhir.pw" }\n',
    )
    config = load_config(path, env={})
    assert config.http.api_key == Secret("key-from-file")
    # An explicit value wins over a file given in the same table ...
    assert config.destinations["default"].auth.password == Secret("inline")
    # ... but a file named by the environment overrides the file's settings.
    env = {
        "PASSERELLE_FHIR_PASSWORD_FILE": str(tmp_path / "fhir.pw"),
        "PASSERELLE_HTTP_BEARER_TOKEN_FILE": str(tmp_path / "token"),
    }
    config = load_config(path, env=env)
    assert config.destinations["default"].auth.password == Secret("pw-from-file")
    assert config.http.bearer_token == Secret("token-from-env-file")


def test_secret_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http\.api_key_file: cannot read .*missing"):
        load_config(toml(tmp_path, '[http]\napi_key_file = "missing"\n'), env={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"http\.api_key_file: .*empty is empty"):
        load_config(toml(tmp_path, '[http]\napi_key_file = "empty"\n'), env={})


def test_secret_never_shows() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('***')" and str(secret) == "Secret('***')"
    assert f"{secret}" == "Secret('***')" and "hunter2" not in f"{secret!r}"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2") and secret != Secret("other") and secret != "hunter2"
    assert len({secret, Secret("hunter2")}) == 1


def test_secrets_are_masked_in_repr_and_redacted(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        '[http]\napi_key = "API-SECRET-1"\nbearer_token = "BEARER-SECRET-2"\n'
        '[destinations.default]\nurl = "https://fhir.example.org/R4?apikey=URL-SECRET-7"\n'
        'headers = { "Ocp-Apim-Subscription-Key" = "HEADER-SECRET-4" }\n'
        'auth = { kind = "oauth2", token_url = "https://idp/token", client_id = "c",'
        ' client_secret = "CLIENT-SECRET-5" }\n'
        # Credentials in a url only without an auth kind (they would replace it).
        '[destinations.legacy]\nurl = "https://svc:URL-SECRET-3@fhir-legacy.example.org/R4"\n',
    )
    config = load_config(path, env={"PASSERELLE_FHIR_PASSWORD": "PW-SECRET-6"})
    secrets = [f"SECRET-{n}" for n in range(1, 7) if n != 3 and n != 4]
    text = repr(config)
    assert not [s for s in secrets if s in text]
    redacted = json.dumps(config.redacted())
    leaks = [
        s for s in (*secrets, "URL-SECRET-3", "HEADER-SECRET-4", "URL-SECRET-7") if s in redacted
    ]
    assert not leaks
    assert "https://fhir.example.org/R4?***" in redacted
    assert "https://svc:***@fhir-legacy.example.org/R4" in redacted
    assert '"Ocp-Apim-Subscription-Key": "***"' in redacted


def test_print_config_masks_secrets(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        '[http]\nport = 9999\napi_key = "API-SECRET-1"\n'
        '[destinations.default]\nurl = "http://fhir/R4"\nheaders = { "X-Key" = "HDR-SECRET" }\n',
    )
    result = cli(
        "serve",
        "--config",
        str(path),
        "--print-config",
        env={"PASSERELLE_FHIR_TOKEN": "TOKEN-SECRET", "PASSERELLE_FHIR_AUTH": "bearer"},
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["http"]["port"] == 9999
    assert shown["http"]["api_key"] == "***"
    assert shown["destinations"]["default"]["auth"]["token"] == "***"
    assert shown["destinations"]["default"]["auth"]["kind"] == "bearer"
    for secret in ("API-SECRET-1", "HDR-SECRET", "TOKEN-SECRET"):
        assert secret not in result.stdout + result.stderr


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 1\n", r"unknown setting\(s\) \['colour'\] in \[top level\]"),
        ("[mllp]\nprot = 1\n", r"unknown setting\(s\) \['prot'\] in \[mllp\]"),
        ("[http]\napikey = 'x'\n", r"\['apikey'\] in \[http\]"),
        ("[delivery]\nworker = 2\n", r"\['worker'\] in \[delivery\]"),
        ("[converter]\ntimezon = 'UTC'\n", r"\['timezon'\] in \[converter\]"),
        ("[queue]\nfile = 'q'\n", r"\['file'\] in \[queue\]"),
        (
            "[destinations.x]\nurl = 'http://a'\ntoken = 't'\n",
            r"\['token'\] in \[destinations\.x\]",
        ),
        ("[destinations.x]\nauth = { kind = 'basic', user = 'u' }\n", r"destinations\.x\.auth"),
        ("[[mllp.listeners]]\nname = 'a'\nports = 1\n", r"\['ports'\] in \[mllp\.listeners\[0\]\]"),
        ("[[routes]]\nname = 'r'\nfacility = 'X'\n", r"\['facility'\] in \[routes\[0\]\]"),
        # Named as the file says it ([mllp] has no listeners[0] of its own).
        ("[mllp]\ntls = { cert = 'c', key = 'k', ca = 'x' }\n", r"\['ca'\] in \[mllp\.tls\]"),
    ],
)
def test_unknown_settings_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(toml(tmp_path, text), env={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[http]\nport = 'eighty'\n", r"http\.port must be an integer, got 'eighty'"),
        ("[http]\nport = 70000\n", r"http\.port must be at most 65535"),
        ("[mllp]\nport = -1\n", r"mllp\.port must be at least 0"),
        ("[mllp]\nport = 65536\n", r"mllp\.port must be at most 65535"),
        ("[mllp]\nack_after = 'never'\n", r"mllp\.ack_after must be one of commit, delivery"),
        ("[mllp]\non_unsupported = 'drop'\n", r"mllp\.on_unsupported must be one of"),
        ("[mllp]\nmax_frame_bytes = 10\n", r"mllp\.max_frame_bytes must be at least 1024"),
        ("[mllp]\nidle_timeout = -5\n", r"mllp\.idle_timeout must not be negative"),
        ("[delivery]\nworkers = 0\n", r"delivery\.workers must be at least 1"),
        ("[delivery]\nbackoff_initial = 'soon'\n", r"delivery\.backoff_initial must be a number"),
        ("log_format = 'xml'\n", r"log_format must be one of text, json"),
        ("log_level = 'verbose'\n", r"log_level must be one of DEBUG, INFO"),
        ("[converter]\nvalidate = 'perhaps'\n", r"converter\.validate must be true or false"),
        ("[converter]\nrequest_mode = 'post'\n", r"converter\.request_mode must be one of"),
        ("[converter]\ntimezone = 'Europe/Pariss'\n", r"converter\.timezone: unknown time zone"),
        ("[destinations.x]\nurl = 'ftp://a'\n", r"destinations\.x\.url must be an http\(s\) URL"),
        (
            "[destinations.x]\nauth = 'basic'\n",
            r"destinations\.x\.auth: basic needs username and password \(PASSERELLE_FHIR_USERNAME",
        ),
        (
            "[destinations.x]\nauth = 'bearer'\n",
            r"bearer needs token \(or token_file\) \(PASSERELLE_FHIR_TOKEN or PASSERELLE_FHIR_TO",
        ),
        (
            "[destinations.x]\nauth = 'oauth2'\n",
            r"oauth2 needs token_url, client_id, client_secret \(PASSERELLE_FHIR_TOKEN_URL",
        ),
        ("[destinations.x]\nauth = 'kerberos'\n", r"destinations\.x\.auth\.kind must be one of"),
        ("[mllp]\ntls = { cert = 'c' }\n", r"mllp\.tls needs cert and key"),
        ("mllp = 3\n", r"\[mllp\] must be a table"),
        ("[[routes]]\nname = 'r'\nconverter = 5\n", r"\[routes\[0\]\.converter\] must be a table"),
        ("[destinations.x]\nauth = 5\n", r"\[destinations\.x\.auth\] must be a table"),
        ("[[routes]]\nname = 'r'\nsending_facility = 5\n", r"sending_facility must be a string"),
        (
            "[delivery]\nbackoff_initial = 60\nbackoff_max = 5\n",
            r"backoff_initial \(60 s\) is above",
        ),
        ("[delivery]\nconvert_processes = 1000\n", r"convert_processes must be at most 256"),
        (
            "[destinations.x]\nauth = { username = 'u', password = 'p' }\n",
            r"password, username given but no auth kind",
        ),
        ("routes = { name = 'r' }\n", r"routes must be an array of tables"),
        ("[mllp]\nlisteners = []\n", r"mllp\.listeners must be a non-empty array"),
        (
            "[mllp]\nport = 1\n[[mllp.listeners]]\nname = 'a'\n",
            r"\[mllp\] port and \[\[mllp\.listeners\]\] are exclusive",
        ),
        (
            "[[mllp.listeners]]\nname = 'a'\n[[mllp.listeners]]\nname = 'a'\nport = 2\n",
            r"listener names must be unique",
        ),
        (
            "[[routes]]\nname = 'r'\ndestination = 'nowhere'\n",
            r"routes\[0\]\.destination 'nowhere'",
        ),
        (
            "[[routes]]\nname = 'r'\nlistener = 'mlp'\n",
            r"routes\[0\]\.listener 'mlp' is not a defined",
        ),
        ("[[routes]]\nname = 'r'\n[[routes]]\nname = 'r'\n", r"route names must be unique: 'r'"),
        ("[[routes]]\nname = 'default'\n", r'route name "default" is reserved'),
        (
            "[[routes]]\nname = 'r'\nconverter = { timezone = 'Mars/Olympus' }\n",
            r"routes\[0\]\.converter\.timezone: unknown time zone",
        ),
        (
            "[destinations.medplum]\nurl = 'http://x'\nbundle_type = 'bulk'\n",
            r"destinations\.medplum\.bundle_type must be one of",
        ),
        (
            "[converter]\nrequest_mode = 'conditional-create'\n"
            "[destinations.default]\nbundle_type = 'batch'\n",
            r"converter: request_mode 'conditional-create' needs a transaction, but "
            r"destination 'default' sends \"batch\"",
        ),
        (
            "[destinations.medplum]\nurl = 'http://x'\nbundle_type = 'batch'\n"
            "[[routes]]\nname = 'lyon'\ndestination = 'medplum'\n"
            "converter = { request_mode = 'conditional-update' }\n",
            r"route 'lyon': request_mode 'conditional-update' needs a transaction",
        ),
        ("[http\nport = 1\n", r"passerelle\.toml: "),  # TOML syntax
        # Found by fuzzing the settings: an OverflowError, a silent truncation, a NaN
        # that no comparison would catch, an OSError from a time zone too long.
        ("[http]\nport = inf\n", r"http\.port must be an integer, got inf"),
        ("[mllp]\nport = 2575.9\n", r"mllp\.port must be an integer, got 2575\.9"),
        ("[delivery]\nworkers = true\n", r"delivery\.workers must be an integer, got True"),
        ("[mllp]\nidle_timeout = nan\n", r"mllp\.idle_timeout must be a finite number"),
        ("[delivery]\nbackoff_max = inf\n", r"delivery\.backoff_max must be a finite number"),
        ("[converter]\ntimezone = '" + "A" * 5000 + "'\n", r"converter\.timezone: unknown time"),
        ("[delivery]\nconversion_timeout = -1\n", r"delivery\.conversion_timeout must not be"),
        (
            "[converter]\nrequest_modes = { Patient = 'upsert' }\n",
            r"converter\.request_modes\.Patient must be one of put, conditional-create",
        ),
        ("[converter]\nrequest_modes = 'x'\n", r"converter\.request_modes must be a table"),
        (
            "[converter]\nrequest_modes = { patient = 'put' }\n",
            r"converter\.request_modes: 'patient' is not a FHIR resource type",
        ),
        (
            "[destinations.default]\nbundle_type = 'batch'\n"
            "[[routes]]\nname = 'lab'\n"
            "converter = { request_modes = { Patient = 'conditional-create' } }\n",
            r"route 'lab': request_mode 'conditional-create' needs a transaction",
        ),
        ("processing_ids = ['X']\n", r"processing_ids: X is not a processing id \(HL7 table 0103"),
        ("processing_ids = 5\n", r"processing_ids must be a list of processing ids"),
        (
            "[[routes]]\nname = 'r'\nprocessing_ids = ['P', 'Q']\n",
            r"routes\[0\]\.processing_ids: Q is not a processing id",
        ),
    ],
)
def test_invalid_values_are_clear_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(toml(tmp_path, text), env={})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("'nope'", r"converter\.charset: unknown character set: 'nope'"),
        ("''", r"converter\.charset: unknown character set: ''"),
        ("'rot13'", r"converter\.charset: character set is not supported .*: 'rot13'"),
        ("'utf-16'", r"converter\.charset: character set is not supported .*: 'utf-16'"),
        ("'cp037'", r"converter\.charset: character set is not supported"),  # EBCDIC
        ("8", r"converter\.charset must be a character set name, got 8"),
    ],
)
def test_a_default_charset_follows_the_msh18_rules(
    tmp_path: Path, value: str, expected: str
) -> None:
    # Once accepted: every message with an empty MSH-18 then failed at conversion.
    with pytest.raises(ConfigError, match=expected):
        load_config(toml(tmp_path, f"[converter]\ncharset = {value}\n"), env={})
    route = f"[[routes]]\nname = 'r'\nconverter = {{ charset = {value} }}\n"
    with pytest.raises(ConfigError, match=r"routes\[0\]\.converter\.charset"):
        load_config(toml(tmp_path, route), env={})


def test_a_default_charset_is_kept_as_its_codec(tmp_path: Path) -> None:
    # HL7 table 0211 names work as in MSH-18; the converter and the ACK use the codec.
    text = (
        "[converter]\ncharset = '8859/1'\n"
        "[[routes]]\nname = 'r'\nconverter = { charset = 'latin-1' }\n"
    )
    config = load_config(toml(tmp_path, text), env={})
    assert config.converter.charset == "iso-8859-1"
    assert config.routes[0].converter.charset == "iso8859-1"
    # The converter's config checks it again (it may be built without this loader).
    assert codecs.lookup(config.converter.converter_config().default_charset).name == "iso8859-1"


def test_print_config_refuses_an_unknown_charset(tmp_path: Path) -> None:
    path = toml(tmp_path, "[converter]\ncharset = 'nope'\n")
    result = cli("serve", "--print-config", "--config", str(path))
    assert result.returncode == 2, result.stdout
    # The file first: the operator may have several (session 22).
    assert (
        result.stderr == f"passerelle: {path}: converter.charset: unknown character set: 'nope'\n"
    )


def test_invalid_environment_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http\.port must be an integer, got 'abc'"):
        load_config(None, env={"PASSERELLE_HTTP_PORT": "abc"})
    # The operator set a variable, not a setting path: the error names both.
    with pytest.raises(
        ConfigError, match=r"port must be at most 65535 \(from PASSERELLE_MLLP_PORT\)"
    ):
        load_config(None, env={"PASSERELLE_MLLP_PORT": "99999"})
    with pytest.raises(ConfigError, match=r"no auth kind .*\(from PASSERELLE_FHIR_USERNAME"):
        load_config(
            None,
            env={"PASSERELLE_FHIR_URL": "http://x", "PASSERELLE_FHIR_USERNAME": "u"},
        )
    with pytest.raises(ConfigError, match=r"mllp\.ack_after must be one of"):
        load_config(None, env={"PASSERELLE_MLLP_ACK_AFTER": "later"})
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_config(tmp_path / "absent.toml", env={})
    binary_secret = tmp_path / "api-key"
    binary_secret.write_bytes(b"\xff\xfe-not-text")  # once a UnicodeDecodeError
    for file_value in (str(binary_secret), "a\x00b"):  # a NUL: once a ValueError
        with pytest.raises(ConfigError, match=r"http\.api_key_file: .* is not a readable text"):
            load_config(None, env={"PASSERELLE_HTTP_API_KEY_FILE": file_value})
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes("[mllp]\n# réglages\n".encode("latin-1"))  # once a UnicodeDecodeError
    with pytest.raises(ConfigError, match=r"latin1\.toml is not UTF-8 text \(byte 10\)"):
        load_config(latin1, env={})


def test_a_destination_can_send_batches(tmp_path: Path) -> None:
    text = "[destinations.medplum]\nurl = 'http://x'\nbundle_type = 'batch'\n"
    config = load_config(toml(tmp_path, text), env={})
    assert config.destinations["medplum"].bundle_type == "batch"
    assert config.destinations["default"].bundle_type == "transaction"
    from_env = load_config(None, env={"PASSERELLE_FHIR_BUNDLE_TYPE": "batch"})
    assert from_env.destinations["default"].bundle_type == "batch"


def test_cli_exit_status_2_names_the_key(tmp_path: Path) -> None:
    path = toml(tmp_path, "[delivery]\nworkerz = 4\n")
    for args in (("serve", "--config", str(path)), ("dead-letters", "list", "--config", str(path))):
        result = cli(*args)
        assert result.returncode == 2, result
        assert "workerz" in result.stderr and "[delivery]" in result.stderr
        assert "Traceback" not in result.stderr
    bad_env = cli("serve", "--print-config", env={"PASSERELLE_HTTP_PORT": "x"}, cwd=tmp_path)
    assert bad_env.returncode == 2 and "http.port" in bad_env.stderr
    bad_level = cli("serve", "--config", str(toml(tmp_path, "log_level = 'loud'\n", "l.toml")))
    assert bad_level.returncode == 2 and "log_level" in bad_level.stderr
    assert "Traceback" not in bad_level.stderr


# -- routes -----------------------------------------------------------------------------------
ROUTES = """
[[mllp.listeners]]
name = "adt"
[[mllp.listeners]]
name = "lab"
port = 2577

[destinations.lab]
folder = "lab"
[destinations.pharma]
folder = "pharma"

[[routes]]
name = "lab-on-lab-port"
listener = "lab"
sending_application = "LIS"
destination = "lab"

[[routes]]
name = "pharmacy"
sending_facility = "PHARMA"
destination = "pharma"
converter = { id_namespace = "ph" }

[[routes]]
name = "any-lis"
sending_application = "LIS"
destination = "lab"
"""


def test_routes_match_first_wins(tmp_path: Path) -> None:
    config: ServiceConfig = load_config(toml(tmp_path, ROUTES), env={})

    def route(app: str, facility: str, listener: str) -> str:
        return config.route_for(application=app, facility=facility, listener=listener).name

    assert route("LIS", "HOSP", "lab") == "lab-on-lab-port"
    assert route("LIS", "HOSP", "adt") == "any-lis"
    assert route("LIS", "PHARMA", "adt") == "pharmacy"  # listed before any-lis
    assert route("LIS", "PHARMA", "lab") == "lab-on-lab-port"
    assert route("EHR", "HOSP", "adt") == "default"
    assert route("lis", "HOSP", "adt") == "default"  # exact, case-sensitive match
    default = config.route_for(application="X", facility="Y", listener="adt")
    assert default.destination == "default" and default.converter == config.converter
    pharmacy = config.route_for(application="X", facility="PHARMA", listener="adt")
    assert pharmacy.destination == "pharma" and pharmacy.converter.id_namespace == "ph"
    assert config.destinations["lab"].folder == tmp_path / "lab"
    # Unnamed routes get a name from their position.
    unnamed = load_config(toml(tmp_path, "[[routes]]\nsending_facility = 'A'\n", "u.toml"), env={})
    assert unnamed.routes[0].name == "route-1"


def test_processing_ids_from_file_and_environment_and_inherited_by_routes(tmp_path: Path) -> None:
    text = (
        "processing_ids = ['p', 'P']\n"
        "[[routes]]\nname = 'training'\nsending_facility = 'TRAIN'\nprocessing_ids = ['T', 'D']\n"
        "[[routes]]\nname = 'inherits'\nsending_facility = 'WARD'\n"
    )
    config = load_config(toml(tmp_path, text), env={})
    assert config.processing_ids == ("P",)  # upper-cased, once
    assert [r.processing_ids for r in config.routes] == [("T", "D"), ("P",)]
    assert config.route_for(application="X", facility="Y", listener="mllp").processing_ids == ("P",)
    from_env = load_config(toml(tmp_path, text), env={"PASSERELLE_PROCESSING_IDS": "P, T"})
    assert from_env.processing_ids == ("P", "T")
    assert from_env.routes[1].processing_ids == ("P", "T")
    assert load_config(None, env={}).processing_ids == ()  # any, by default
    with pytest.raises(ConfigError, match=r"PASSERELLE_PROCESSING_IDS"):
        load_config(None, env={"PASSERELLE_PROCESSING_IDS": "PROD"})


def test_request_modes_per_resource_type_for_a_route(tmp_path: Path) -> None:
    text = (
        "[converter]\nrequest_modes = { Patient = 'conditional-update' }\n"
        "[[routes]]\nname = 'lab'\nsending_application = 'LIS'\n"
        "converter = { request_modes = { Patient = 'conditional-create', "
        "Encounter = 'conditional-create' } }\n"
    )
    config = load_config(toml(tmp_path, text), env={})
    assert config.converter.request_modes == (("Patient", "conditional-update"),)
    lab = config.routes[0].converter.converter_config()
    assert lab.request_modes == (
        ("Patient", "conditional-create"),
        ("Encounter", "conditional-create"),
    )
    assert lab.request_mode == "put" and not lab.all_put


# -- MLLP limits --------------------------------------------------------------------------------
def test_mllp_limits_defaults_file_per_listener_and_environment(tmp_path: Path) -> None:
    mllp = load_config(None, env={}).mllp
    assert [listener.max_connections for listener in mllp.listeners] == [100]
    assert mllp.frame_timeout == 60.0
    assert mllp.max_unfinished_bytes == 128 * 1024 * 1024
    # Room for two frames of the maximum size at least, unless set.
    big = load_config(toml(tmp_path, "[mllp]\nmax_frame_bytes = 100000000\n"), env={}).mllp
    assert big.max_unfinished_bytes == 200_000_000
    text = (
        "[mllp]\nmax_connections = 20\nframe_timeout = 0\nmax_unfinished_bytes = 20000000\n"
        "[[mllp.listeners]]\nname = 'noisy'\nport = 1\n"
        "[[mllp.listeners]]\nname = 'chu'\nport = 2\nmax_connections = 500\n"
    )
    config = load_config(toml(tmp_path, text), env={})
    noisy, chu = config.mllp.listeners
    assert (noisy.max_connections, chu.max_connections) == (20, 500)
    assert config.mllp.frame_timeout == 0  # no limit, as idle_timeout = 0
    assert config.mllp.max_unfinished_bytes == 20_000_000
    env = {
        "PASSERELLE_MLLP_MAX_CONNECTIONS": "7",
        "PASSERELLE_MLLP_FRAME_TIMEOUT": "90",
        "PASSERELLE_MLLP_MAX_UNFINISHED_BYTES": "50000000",
    }
    from_env = load_config(toml(tmp_path, text), env=env)
    # The variable is [mllp] max_connections: the listeners that do not set their own.
    assert [x.max_connections for x in from_env.mllp.listeners] == [7, 500]
    assert from_env.mllp.frame_timeout == 90
    assert from_env.mllp.max_unfinished_bytes == 50_000_000


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[mllp]\nmax_connections = 0\n", {}, r"mllp\.max_connections must be at least 1"),
        (
            "[[mllp.listeners]]\nname = 'a'\nmax_connections = 0\n",
            {},
            r"mllp\.listeners\[0\]\.max_connections must be at least 1",
        ),
        (
            "",
            {"PASSERELLE_MLLP_MAX_CONNECTIONS": "none"},
            r"mllp\.max_connections must be an integer, got 'none' "
            r"\(from PASSERELLE_MLLP_MAX_CONNECTIONS\)",
        ),
        ("[mllp]\nframe_timeout = -1\n", {}, r"mllp\.frame_timeout must not be negative"),
        (
            "[mllp]\nmax_frame_bytes = 2000000\nmax_unfinished_bytes = 1000000\n",
            {},
            r"mllp\.max_unfinished_bytes \(1000000\) is below mllp\.max_frame_bytes "
            r"\(2000000\): a frame of the maximum size could never be received",
        ),
    ],
)
def test_mllp_limits_errors(tmp_path: Path, text: str, env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(toml(tmp_path, text), env=env)


# -- zero where it means nothing ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        # Every message then got AE "delivery not confirmed in time", delivered or not.
        (
            "[mllp]\ndelivery_ack_timeout = 0\n",
            {},
            r"^mllp\.delivery_ack_timeout must be above 0$",
        ),
        (
            "",
            {"PASSERELLE_MLLP_DELIVERY_ACK_TIMEOUT": "0"},
            r"mllp\.delivery_ack_timeout must be above 0 "
            r"\(from PASSERELLE_MLLP_DELIVERY_ACK_TIMEOUT\)",
        ),
        # A failing FHIR server was then retried in a tight loop (286 requests in 3 s).
        ("[delivery]\nbackoff_initial = 0\n", {}, r"^delivery\.backoff_initial must be above 0$"),
        (
            "",
            {"PASSERELLE_DELIVERY_BACKOFF_INITIAL": "0.0"},
            r"delivery\.backoff_initial must be above 0 "
            r"\(from PASSERELLE_DELIVERY_BACKOFF_INITIAL\)",
        ),
        (
            "[delivery]\nbackoff_initial = 0\nbackoff_max = 0\n",
            {},
            r"delivery\.backoff_initial must be above 0",
        ),
        # httpx.Timeout(0) then failed every request to the FHIR server.
        (
            "[destinations.lyon]\nurl = 'https://x/fhir'\ntimeout = 0\n",
            {},
            r"^destinations\.lyon\.timeout must be above 0$",
        ),
        (
            "",
            {"PASSERELLE_FHIR_URL": "https://x/fhir", "PASSERELLE_FHIR_TIMEOUT": "0"},
            r"destinations\.default\.timeout must be above 0 \(from PASSERELLE_FHIR_TIMEOUT\)",
        ),
        (
            "[destinations.default]\ntimeout = -2\n",
            {},
            r"destinations\.default\.timeout must not be negative",
        ),
    ],
)
def test_zero_is_refused_where_it_would_break_the_service(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(toml(tmp_path, text), env=env)


def test_zero_stays_no_limit_where_documented_so(tmp_path: Path) -> None:
    text = (
        "[mllp]\nidle_timeout = 0\nframe_timeout = 0\n"
        "[delivery]\nconversion_timeout = 0\nmax_attempts = 0\n"
    )
    config = load_config(toml(tmp_path, text), env={})
    assert (config.mllp.idle_timeout, config.mllp.frame_timeout) == (0, 0)
    assert (config.delivery.conversion_timeout, config.delivery.max_attempts) == (0, 0)


def test_new_environment_variables_set_their_settings() -> None:
    config = load_config(
        None,
        env={
            "PASSERELLE_MLLP_DELIVERY_ACK_TIMEOUT": "12.5",
            "PASSERELLE_DELIVERY_BACKOFF_INITIAL": "0.25",
            "PASSERELLE_DELIVERY_BACKOFF_MAX": "30",
            "PASSERELLE_FHIR_URL": "https://x/fhir",
            "PASSERELLE_FHIR_TIMEOUT": "7",
        },
    )
    assert config.mllp.delivery_ack_timeout == 12.5
    assert (config.delivery.backoff_initial, config.delivery.backoff_max) == (0.25, 30)
    assert config.destinations["default"].timeout == 7


# -- frozen -------------------------------------------------------------------------------------
def test_the_configuration_cannot_be_changed_in_place(tmp_path: Path) -> None:
    text = (
        "[destinations.default]\nurl = 'https://x/fhir'\nheaders = { 'X-Tenant' = 'a' }\n"
        "[destinations.lyon]\nurl = 'https://lyon/fhir'\n"
    )
    config = load_config(toml(tmp_path, text), env={})
    default = config.destinations["default"]
    with pytest.raises(TypeError):
        config.destinations["evil"] = default  # type: ignore[index]
    with pytest.raises(TypeError):
        del config.destinations["lyon"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        default.headers["X-Tenant"] = "someone-else"  # type: ignore[index]
    assert list(config.destinations) == ["default", "lyon"]
    assert default.headers == {"X-Tenant": "a"}
    # Mappings still read as before (and compare equal to dicts).
    assert dict(default.headers) == {"X-Tenant": "a"} and "lyon" in config.destinations
    assert config == load_config(toml(tmp_path, text), env={})
    assert config.redacted()["destinations"]["default"]["headers"] == {"X-Tenant": "***"}
    # Built in code, too: the caller's dicts are copied, not kept.
    headers = {"X-Tenant": "b"}
    destinations = {"default": DestinationConfig(headers=headers)}
    built = ServiceConfig(destinations=destinations)
    headers["X-Tenant"] = "c"
    destinations["other"] = DestinationConfig()
    assert list(built.destinations) == ["default"]
    assert built.destinations["default"].headers == {"X-Tenant": "b"}
    with pytest.raises(TypeError):
        built.destinations["default"].headers["X"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        ServiceConfig().destinations["x"] = DestinationConfig()  # type: ignore[index]
