"""Fixtures of the crash tests: one FHIR server and one message corpus for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.listeners.crash.harness import Outgoing, build_corpus, expected_entries
from tests.support.fhirserver import FhirServer, require_fhirserver

#: Messages of the main scenarios (≥ 2,000) and how they are spread.
MESSAGES = 2000
CONNECTIONS = 8


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "crash: kills the running service (kill -9) and checks nothing acknowledged "
        "is lost or duplicated (selected with -m crash; run by default)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/listeners/crash/" in item.nodeid:
            item.add_marker(pytest.mark.crash)


@pytest.fixture(scope="session")
def crash_fhir_server() -> Iterator[FhirServer]:
    require_fhirserver()
    # Without the server's own profile validation (the service validates its bundles):
    # the crash tests are about what reaches the server, and it halves the server's CPU.
    with FhirServer.start(validate=False) as server:
        yield server


@pytest.fixture
def fhir(crash_fhir_server: FhirServer) -> FhirServer:
    """The session's server, running and emptied (data, faults, request log)."""
    if not crash_fhir_server.running:
        crash_fhir_server.restart()
    crash_fhir_server.reset()
    return crash_fhir_server


@pytest.fixture(scope="session")
def corpus() -> list[Outgoing]:
    """2,000 ADT messages: 1,200 new patients' A01, 80 patients with an A01 and 9 A08."""
    return build_corpus(MESSAGES, repeated_patients=80, messages_per_repeated=10)


@pytest.fixture(scope="session")
def expected(corpus: list[Outgoing]) -> dict[str, tuple[str, ...]]:
    """Control id → ``Type/id`` its conversion writes (default converter settings)."""
    return expected_entries(corpus)
