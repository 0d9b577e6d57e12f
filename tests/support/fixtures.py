"""Fixtures shared by the mapping tests (imported by their folders' conftest.py): the
converter they use and a test FHIR server of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from converter import Converter, ConverterConfig
from tests.support.fhirserver import FhirServer, require_fhirserver

__all__ = ["converter", "fhir_server"]


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
