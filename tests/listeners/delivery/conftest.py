"""Fixtures of the delivery tests: the real test FHIR server, certificates, converted bundles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.assembly.bundle import RequestMode
from tests.listeners.delivery.helpers import ADT_SAMPLE, fresh, start_server
from tests.support.certs import Pki, make_pki, openssl_available
from tests.support.fhirserver import FhirServer


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirServer]:
    """One plain server (no auth, transactions on) for the session."""
    with start_server() as server:
        yield server


@pytest.fixture
def server(fhir_server: FhirServer) -> FhirServer:
    """The plain server, running and emptied (data, faults, request log) for this test."""
    return fresh(fhir_server)


@pytest.fixture(scope="session")
def batch_server_session() -> Iterator[FhirServer]:
    """A server processing transaction Bundles as batches (--transactions off)."""
    with start_server(transactions=False) as server:
        yield server


@pytest.fixture
def batch_server(batch_server_session: FhirServer) -> FhirServer:
    return fresh(batch_server_session)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if not openssl_available():
        # A failure, as in tests/listeners/{mllp,service}/conftest.py: a skip would pass
        # every TLS delivery test silently on a machine without openssl.
        pytest.fail("the openssl command line is needed to create test certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))


def _convert(request_mode: RequestMode) -> dict[str, Any]:
    config = ConverterConfig(default_timezone="Europe/Paris", request_mode=request_mode)
    bundle: dict[str, Any] = Converter(config).convert(ADT_SAMPLE.read_bytes())[0].bundle
    return bundle


@pytest.fixture(scope="session")
def adt_bundle() -> dict[str, Any]:
    """The ADT^A01 sample converted in the default "put" mode (stable ids)."""
    return _convert("put")


@pytest.fixture(scope="session")
def adt_conditional_bundle() -> dict[str, Any]:
    """The same message converted with request_mode="conditional-create"."""
    return _convert("conditional-create")
