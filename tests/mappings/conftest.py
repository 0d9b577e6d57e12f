"""Fixtures of the mapping tests: the converter they share and the test FHIR server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from converter import Converter, ConverterConfig
from tests.support.fhirserver import FhirServer, fhirserver_required, fhirserver_unavailable_reason


@pytest.fixture(scope="module")
def converter() -> Converter:
    """The built-in templates, validated, with Europe/Paris for times without an offset (the
    zone the expected bundles of samples/ are written with)."""
    return Converter(ConverterConfig(default_timezone="Europe/Paris"))


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[FhirServer]:
    """A test FHIR server of its own (Medplum-based, see tests/fhirserver)."""
    reason = fhirserver_unavailable_reason()
    if reason is not None:
        if fhirserver_required():
            pytest.fail(f"test FHIR server required but unavailable: {reason}")
        pytest.skip(f"test FHIR server unavailable: {reason}")
    with FhirServer.start() as server:
        yield server
