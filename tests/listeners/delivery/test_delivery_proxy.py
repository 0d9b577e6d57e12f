"""``destinations.NAME.proxy``: deliveries through an outbound HTTP proxy.

Hospitals often reach an external FHIR server only through their outbound proxy. The sink's
client never reads ``HTTP(S)_PROXY`` (``trust_env=False``: set for the image's other tools,
they would send patient data through a proxy nobody configured for Passerelle); the proxy
is a setting. A real local proxy (tests/listeners/delivery/proxies.py: CONNECT tunnels,
absolute-form requests, optional Basic proxy authentication) stands between the sink and
the real test FHIR server, plain and TLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from listeners.config import ConfigError, load_config
from listeners.delivery import FhirServerSink
from listeners.errors import TransientDeliveryError
from tests.listeners.delivery.helpers import destination, make_envelope, start_server
from tests.listeners.delivery.proxies import ForwardProxy
from tests.support.certs import Pki
from tests.support.fhirserver import FhirServer, ServerTls

pytestmark = pytest.mark.anyio

PATIENT = "Patient"


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[FhirServer]:
    with start_server(tls=ServerTls(pki.server_cert, pki.server_key), ca_file=pki.ca) as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


async def test_an_http_destination_goes_through_the_proxy(
    server: FhirServer, proxy: ForwardProxy, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(server, proxy=proxy.url)) as sink:
        await sink.check()
        receipt = await sink.deliver(adt_bundle, make_envelope())
    assert receipt.status == 200
    assert server.count(PATIENT) == 1
    assert [(method, target) for method, target, _ in proxy.seen] == [
        ("GET", f"{server.base_url}/metadata"),
        ("POST", server.base_url),
    ]


async def test_an_https_destination_is_tunnelled_with_connect(
    tls_server: FhirServer, pki: Pki, proxy: ForwardProxy, adt_bundle: dict[str, Any]
) -> None:
    tls_server.reset()
    config = destination(tls_server, ca_bundle=pki.ca, proxy=proxy.url)
    async with FhirServerSink(config) as sink:
        receipt = await sink.deliver(adt_bundle, make_envelope())
    assert receipt.status == 200
    assert tls_server.count(PATIENT) == 1
    assert [(method, target) for method, target, _ in proxy.seen] == [
        ("CONNECT", f"127.0.0.1:{tls_server.port}")
    ]


async def test_proxy_credentials_from_the_url_and_a_refusal_in_safe_words(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    with ForwardProxy(credentials="passerelle:s3cret-proxy") as proxy:
        port = proxy.port
        good = f"http://passerelle:s3cret-proxy@127.0.0.1:{port}"
        async with FhirServerSink(destination(server, proxy=good)) as sink:
            assert (await sink.deliver(adt_bundle, make_envelope())).status == 200
        assert [authorized for _, _, authorized in proxy.seen] == [True]
        wrong = f"http://passerelle:wrong-password@127.0.0.1:{port}"
        # An https destination: the proxy refuses the CONNECT (407) itself.
        config = replace(destination(server, proxy=wrong), url=f"https://127.0.0.1:{server.port}")
        async with FhirServerSink(config) as sink:
            with pytest.raises(TransientDeliveryError) as caught:
                await sink.deliver(adt_bundle, make_envelope())
    text = str(caught.value)
    assert "wrong-password" not in text and "passerelle:***@" in text
    assert "the proxy refused the tunnel to the server" in text
    assert "HTTP 407 Proxy Authentication Required" in text


async def test_a_proxy_that_is_down_is_named_in_the_error(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    with ForwardProxy() as gone:
        url = gone.url  # a port nothing listens on once it is closed
    async with FhirServerSink(destination(server, proxy=url)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert f"through the proxy {url}: " in str(caught.value)
    assert "connection refused" in str(caught.value)
    assert server.count(PATIENT) == 0


async def test_the_environments_proxy_variables_are_not_read(
    server: FhirServer,
    proxy: ForwardProxy,
    adt_bundle: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with FhirServerSink(destination(server)) as sink:
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200
    assert proxy.seen == []


def _config(tmp_path: Path, proxy: str, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "passerelle.toml"
    line = f"proxy = {proxy!r}\n" if proxy else ""
    path.write_text(
        f'data_dir = "data"\n[destinations.default]\nurl = "https://fhir.example.org/fhir"\n{line}',
        encoding="utf-8",
    )
    return load_config(path, env=env or {})


def test_the_proxy_setting_is_read_checked_and_masked(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://user:pw@proxy.example.org:3128/")
    assert config.destinations["default"].proxy == "http://user:pw@proxy.example.org:3128"
    shown = config.redacted()["destinations"]["default"]["proxy"]
    assert shown == "http://user:***@proxy.example.org:3128"
    from_env = _config(tmp_path, "", {"PASSERELLE_FHIR_PROXY": "http://10.0.0.1:8080"})
    assert from_env.destinations["default"].proxy == "http://10.0.0.1:8080"
    assert _config(tmp_path, "").destinations["default"].proxy is None


@pytest.mark.parametrize(
    "value",
    [
        "proxy.example.org:3128",
        "socks5://proxy.example.org:1080",
        "http://:3128",
        "http://proxy.example.org:3128/path",
        "http://u:secret-pw@proxy.example.org:99999",
    ],
)
def test_a_proxy_that_is_no_proxy_url_is_refused_at_start(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"destinations\.default\.proxy must be") as caught:
        _config(tmp_path, value)
    assert "secret-pw" not in str(caught.value)
