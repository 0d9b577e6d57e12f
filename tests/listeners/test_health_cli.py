"""``passerelle health``: the container healthcheck asks the port the service listens on."""

from __future__ import annotations

import pytest

from listeners.cli import health_url, main
from listeners.config import load_config


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:9123/health"),
        ("::", "http://[::1]:9123/health"),
        ("10.1.2.3", "http://10.1.2.3:9123/health"),
        ("fd00::5", "http://[fd00::5]:9123/health"),
    ],
)
def test_the_url_follows_the_configured_host_and_port(host: str, url: str) -> None:
    config = load_config(env={"PASSERELLE_HTTP_HOST": host, "PASSERELLE_HTTP_PORT": "9123"})
    assert health_url(config) == url


def test_nothing_listening_is_unhealthy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PASSERELLE_HTTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PASSERELLE_HTTP_PORT", "1")
    assert main(["health", "--timeout", "2"]) == 1
    assert "http://127.0.0.1:1/health" in capsys.readouterr().err
