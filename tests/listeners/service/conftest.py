"""Fixtures of the service tests: one real FHIR server per module, certificates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.listeners.service.support import fresh, require_fhirserver
from tests.support.certs import Pki, make_pki, openssl_available
from tests.support.fhirserver import FhirServer


@pytest.fixture(scope="module")
def fhir_server_module() -> Iterator[FhirServer]:
    """One test FHIR server (Medplum engine, transactions on) for the module."""
    require_fhirserver()
    with FhirServer.start() as server:
        yield server


@pytest.fixture
def fhir(fhir_server_module: FhirServer) -> FhirServer:
    """The module's FHIR server, running and emptied (data, faults, request log)."""
    return fresh(fhir_server_module)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if not openssl_available():
        pytest.fail("the openssl command line is needed to create test certificates")
    return make_pki(tmp_path_factory.mktemp("service-pki"))
