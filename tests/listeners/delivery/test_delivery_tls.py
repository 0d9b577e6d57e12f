"""HTTPS with a custom CA bundle, and mutual TLS (client certificate required)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from listeners.config import ConfigError, DestinationConfig
from listeners.delivery import FhirServerSink
from listeners.errors import DeliveryError, TransientDeliveryError
from tests.listeners.delivery.helpers import destination, make_envelope, start_server
from tests.support.certs import CLIENT_SUBJECT, Pki
from tests.support.fhirserver import FhirServer, ServerTls

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def https_server(pki: Pki) -> Iterator[FhirServer]:
    with start_server(tls=ServerTls(pki.server_cert, pki.server_key), ca_file=pki.ca) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[FhirServer]:
    with start_server(
        tls=ServerTls(pki.server_cert, pki.server_key, client_ca=pki.ca),
        ca_file=pki.ca,
        client_cert=(pki.client_cert, pki.client_key),
    ) as server:
        yield server


async def test_https_with_ca_bundle(
    https_server: FhirServer, pki: Pki, adt_bundle: dict[str, Any]
) -> None:
    https_server.reset()
    assert https_server.base_url.startswith("https://127.0.0.1:")
    async with FhirServerSink(destination(https_server, ca_bundle=pki.ca)) as sink:
        await sink.check()
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200
    assert https_server.count("Patient") == 1


async def test_https_untrusted_certificate(
    https_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(https_server)) as sink:
        with pytest.raises(TransientDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            await sink.deliver(adt_bundle, make_envelope())


async def test_mutual_tls(mtls_server: FhirServer, pki: Pki, adt_bundle: dict[str, Any]) -> None:
    mtls_server.reset()
    config = destination(
        mtls_server, ca_bundle=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key
    )
    async with FhirServerSink(config) as sink:
        await sink.check()
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200
    posts = mtls_server.requests("/fhir/R4")
    assert [r["clientCertCN"] for r in posts] == [CLIENT_SUBJECT.rsplit("CN=", 1)[1]]


@pytest.mark.parametrize("client", ["none", "rogue"])
async def test_mutual_tls_refuses_missing_or_untrusted_cert(
    mtls_server: FhirServer, pki: Pki, adt_bundle: dict[str, Any], client: str
) -> None:
    mtls_server.reset()
    rogue = client == "rogue"
    config = destination(
        mtls_server,
        ca_bundle=pki.ca,
        client_cert=pki.other_client_cert if rogue else None,
        client_key=pki.other_client_key if rogue else None,
    )
    async with FhirServerSink(config) as sink:
        with pytest.raises(TransientDeliveryError, match="cannot reach"):
            await sink.deliver(adt_bundle, make_envelope())
        with pytest.raises(DeliveryError):
            await sink.check()
    assert mtls_server.requests() == []
    assert mtls_server.count("Patient") == 0


def test_unreadable_tls_files_are_config_errors(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "missing.pem"
    config = destination_for_url("https://127.0.0.1:1/fhir/R4", ca_bundle=missing)
    with pytest.raises(ConfigError, match="TLS"):
        FhirServerSink(config)
    config = destination_for_url(
        "https://127.0.0.1:1/fhir/R4", client_cert=missing, client_key=pki.client_key
    )
    with pytest.raises(ConfigError, match="TLS"):
        FhirServerSink(config)


def destination_for_url(url: str, **options: Any) -> DestinationConfig:
    return DestinationConfig(name="tls", url=url, **options)
