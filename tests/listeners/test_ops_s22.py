"""Operations at the service edge (session 22): configuration errors name the file they
came from, ``passerelle health`` without the converter, AMQP URLs checked when set."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from listeners.cli import main
from listeners.config import ConfigError, load_config, load_http_config
from tests.listeners.service.support import REPO_ROOT, RunningService, make_config


def _toml(directory: Path, text: str, name: str = "passerelle.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def _serve_error(path: Path | None, capsys: pytest.CaptureFixture[str]) -> str:
    """The line ``passerelle serve --print-config`` prints for a configuration error."""
    argv = ["serve", "--print-config"] + (["--config", str(path)] if path else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.strip()


# -- configuration errors name the file -------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mllp]\nport = 99999\n", "mllp.port must be at most 65535"),
        (
            '[[mllp.listeners]]\nport = 2575\n[[mllp.listeners]]\nname = "b"\nport = 70000\n',
            "mllp.listeners[1].port must be at most 65535",
        ),
        ("[http]\nport = 8080\nfoo = 2\n", "unknown setting(s) ['foo'] in [http]"),
        ('[http]\napi_key_file = "missing-key"\n', "http.api_key_file: cannot read"),
    ],
)
def test_an_error_in_the_file_names_the_file_and_the_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    expected: str,
) -> None:
    # Several configuration files on one host: which one says port = 99999?
    for name in [n for n in os.environ if n.startswith("PASSERELLE_")]:
        monkeypatch.delenv(name)
    path = _toml(tmp_path, text, "site-b.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.path == path
    assert str(caught.value).startswith(expected)
    assert _serve_error(path, capsys).startswith(f"passerelle: {path}: {expected}")


def test_an_error_in_a_variable_names_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _toml(tmp_path, "[mllp]\nport = 2575\n[http]\nport = 8080\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"PASSERELLE_MLLP_PORT": "25x75"})
    assert caught.value.path is None
    assert str(caught.value) == (
        "mllp.port must be an integer, got '25x75' (from PASSERELLE_MLLP_PORT)"
    )
    monkeypatch.setenv("PASSERELLE_MLLP_PORT", "25x75")
    assert _serve_error(path, capsys) == (
        "passerelle: mllp.port must be an integer, got '25x75' (from PASSERELLE_MLLP_PORT)"
    )


def test_an_error_between_a_variable_and_the_file_names_both(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[delivery]\nbackoff_max = 5\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"PASSERELLE_DELIVERY_BACKOFF_INITIAL": "10"})
    assert caught.value.path == path
    assert "(from PASSERELLE_DELIVERY_BACKOFF_INITIAL)" in str(caught.value)


def test_without_a_file_no_file_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"PASSERELLE_HTTP_PORT": "http"})
    assert caught.value.path is None


def test_a_secret_of_the_file_is_not_shown_in_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("PASSERELLE_")]:
        monkeypatch.delenv(name)
    path = _toml(tmp_path, '[amqp]\nurl = "amqp://passerelle:S3cr3t-pw@broker:567200/"\n')
    line = _serve_error(path, capsys)
    assert line.startswith(f"passerelle: {path}: amqp.url: its port must be a number")
    assert "S3cr3t" not in line and "broker" not in line


# -- AMQP URLs are checked whenever they are set ----------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:pw@broker:99999/",
        "amqp://guest:pw@broker:5672x/",
        "amqps://guest:pw@broker:0/vhost",
    ],
)
@pytest.mark.parametrize("where", ["amqp", "destinations.warehouse.amqp"])
def test_an_amqp_url_with_a_bad_port_is_refused_even_unused(
    tmp_path: Path, url: str, where: str
) -> None:
    # queue.backend stays "sqlite" and no route uses the destination: the URL is unused
    # today (it stopped `passerelle serve` with a traceback the day it was used).
    extra = ', exchange = "bundles"' if where != "amqp" else ""
    head = "amqp" if where == "amqp" else "destinations.warehouse"
    key = "url" if where == "amqp" else "amqp"
    value = f'"{url}"' if where == "amqp" else f'{{ url = "{url}"{extra} }}'
    path = _toml(tmp_path, f"[{head}]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=r"url: its port must be a number from 1 to 65535"):
        load_config(path, env={})


@pytest.mark.parametrize(
    "url",
    ["amqp://guest:pw@broker/", "amqps://u:p@broker:5671/vhost", "amqp://[::1]:5672/", "amqp://"],
)
def test_amqp_urls_with_a_good_or_no_port_are_kept(tmp_path: Path, url: str) -> None:
    path = _toml(tmp_path, f'[amqp]\nurl = "{url}"\n')
    config = load_config(path, env={})
    assert config.amqp.url is not None and config.amqp.url.reveal() == url


def test_the_config_default_dead_letter_retention_is_the_queues() -> None:
    # Repeated in listeners.config.model so that it imports no queue (nor converter).
    from listeners.config.model import DEFAULT_DEAD_LETTER_RETENTION as in_config
    from listeners.queue.base import DEFAULT_DEAD_LETTER_RETENTION as in_queue

    assert in_config == in_queue


# -- passerelle health imports no converter ---------------------------------------------------
#: Runs the command line's ``main`` for ``health`` as the ``passerelle`` script does, then
#: says which of the converter's and the service's heavy modules got imported.
_HEALTH_PROBE = """
import sys
from listeners import cli
status = cli.main(["health", "--timeout", "10"])
heavy = sorted(
    name for name in ("converter", "converter.templates", "listeners.queue", "asyncio",
                      "listeners.mllp", "uvicorn")
    if name in sys.modules
)
print(status, ",".join(heavy) or "-")
"""


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with RunningService(make_config(tmp_path_factory.mktemp("health"))) as service:
        yield service


def _health_probe(env: dict[str, str]) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-c", _HEALTH_PROBE],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    status, heavy = result.stdout.split()
    return int(status), heavy, result.stderr


def test_health_against_the_running_service_loads_no_converter(
    running: RunningService,
) -> None:
    port = running.http_url.rsplit(":", 1)[1]
    status, heavy, stderr = _health_probe(
        {"PASSERELLE_HTTP_HOST": "127.0.0.1", "PASSERELLE_HTTP_PORT": port}
    )
    assert (status, stderr) == (0, "")
    assert heavy == "-"


def test_health_with_nothing_listening_fails_and_still_loads_no_converter() -> None:
    status, heavy, stderr = _health_probe(
        {"PASSERELLE_HTTP_HOST": "127.0.0.1", "PASSERELLE_HTTP_PORT": "1"}
    )
    assert status == 1 and "http://127.0.0.1:1/health" in stderr
    assert heavy == "-"


def test_health_reads_the_http_section_as_the_service_does(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[http]\nhost = "::"\nport = 9191\n[converter]\ncharset = "8859/1"\n')
    http = load_http_config(path, env={"PASSERELLE_HTTP_PORT": "9192"})
    assert http == load_config(path, env={"PASSERELLE_HTTP_PORT": "9192"}).http
    assert (http.host, http.port) == ("::", 9192)


def test_health_names_the_file_of_a_bad_http_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("PASSERELLE_")]:
        monkeypatch.delenv(name)
    path = _toml(tmp_path, "[http]\nport = 80800\n")
    assert main(["health", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"passerelle: {path}: http.port must be at most 65535\n"


# -- a FHIR destination URL with a bad port ---------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://fhir.example.org:99999/fhir",
        "https://fhir.example.org:8443x/fhir",
        "https://fhir.example.org:0/fhir",
        "https:///fhir",
    ],
)
def test_a_fhir_url_with_a_bad_port_or_no_host_is_refused_at_start(
    tmp_path: Path, url: str
) -> None:
    # Accepted, the service started and acknowledged (CA) every message, then retried
    # each delivery for ever as an "unexpected error" (InvalidURL, ExceptionGroup).
    path = _toml(tmp_path, f'[destinations.default]\nurl = "{url}"\n')
    with pytest.raises(ConfigError, match=r"destinations\.default\.url ") as caught:
        load_config(path, env={})
    assert url not in str(caught.value)
    with pytest.raises(ConfigError, match=r"\(from PASSERELLE_FHIR_URL\)"):
        load_config(None, env={"PASSERELLE_FHIR_URL": url})


@pytest.mark.parametrize(
    "url",
    ["https://u:p@fhir.example.org:8443/fhir", "http://[::1]:8080/fhir", "http://fhir/r4"],
)
def test_fhir_urls_with_a_host_and_a_good_or_no_port_are_kept(tmp_path: Path, url: str) -> None:
    path = _toml(tmp_path, f'[destinations.default]\nurl = "{url}"\n')
    assert load_config(path, env={}).destinations["default"].url == url


# -- a large HTTP body is joined off the event loop ------------------------------------------
def test_a_large_body_is_joined_in_a_thread_not_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # b"".join of a 20 MB body ran on the loop: 5-50 ms during which no MLLP ACK or /ready
    # answer was written. A small body is still joined on the loop (a thread costs more).
    import asyncio

    import httpx

    from tests.listeners.service.support import adt, running

    joined: list[int] = []
    to_thread = asyncio.to_thread

    async def recording(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        if getattr(func, "__self__", None) == b"" and getattr(func, "__name__", "") == "join":
            joined.append(sum(len(part) for part in args[0]))
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", recording)
    small = adt("JOIN-1")
    # Above the 256 KiB from which bodies are read in a thread, within http.max_messages.
    padding = b"ZPD|" + b"x" * 20_000 + b"\r"
    large = small + b"".join(adt(f"JOIN-{n}") + padding for n in range(2, 40))
    with running(make_config(tmp_path / "service")) as service:
        for body in (small, large):
            answer = httpx.post(
                f"{service.http_url}/convert",
                content=body,
                headers={"content-type": "x-application/hl7-v2+er7"},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text[:200]
    assert joined == [len(large)], (joined, len(small), len(large))


# -- the conversion processes keep compiled templates in data_dir ------------------------------
def test_the_service_keeps_compiled_templates_in_a_private_cache(tmp_path: Path) -> None:
    # Every conversion process compiled the templates of each message type again, at
    # every start (0.7-1.8 s for its first message, against its deadline).
    from tests.listeners.service.support import adt, running

    config = make_config(tmp_path / "service")
    with running(config) as service:
        [ack] = service.send([adt("CACHE-1")])
        assert ack.code in ("AA", "CA"), ack
        service.drained()
    cache = config.data_dir / "template-cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    entries = list(cache.iterdir())
    assert entries, "no compiled template kept"
    assert all(stat.S_IMODE(entry.stat().st_mode) & 0o077 == 0 for entry in entries)


def test_a_template_cache_another_process_opened_is_made_private_again(tmp_path: Path) -> None:
    # Kubernetes' fsGroup adds group permissions to a volume's contents at each mount:
    # the converter refuses a cache others may enter, which must not stop the service.
    from listeners.file_modes import template_cache_dir

    cache = tmp_path / "template-cache"
    cache.mkdir()
    cache.chmod(0o2770)
    assert template_cache_dir(tmp_path) == cache
    assert stat.S_IMODE(cache.stat().st_mode) & 0o077 == 0


def test_an_unusable_template_cache_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from listeners.file_modes import template_cache_dir

    (tmp_path / "template-cache").write_text("not a directory")
    assert template_cache_dir(tmp_path) is None
    if os.getuid() == 0:
        other = tmp_path / "other"
        (other / "template-cache").mkdir(parents=True)
        os.chown(other / "template-cache", 65534, 65534)
        assert template_cache_dir(other) is None
    assert any(r.__dict__.get("event") == "template_cache_unused" for r in caplog.records)
