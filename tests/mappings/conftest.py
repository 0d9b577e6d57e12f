"""Fixtures of the mapping tests: the converter they share and the test FHIR server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from converter import Converter, ConverterConfig
from tests.support.fhirserver import FhirServer, require_fhirserver


@pytest.fixture(scope="module")
def converter() -> Converter:
    """The built-in templates, validated, with Europe/Paris for times without an offset (the
    zone the expected bundles of samples/ are written with)."""
    return Converter(ConverterConfig(default_timezone="Europe/Paris"))


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[FhirServer]:
    """A test FHIR server of its own (Medplum-based, see tests/fhirserver)."""
    require_fhirserver()
    with FhirServer.start() as server:
        yield server
