"""Fixtures of the service tests: one real FHIR server per module, certificates, logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from listeners.logs import configure_logging
from tests.listeners.service.support import fresh
from tests.support.certs import Pki, make_pki, openssl_available
from tests.support.fhirserver import FhirServer, require_fhirserver


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


@pytest.fixture
def captured_text_logs() -> Iterator[io.StringIO]:
    """The service's text logs at DEBUG, plus everything any other logger emits."""
    stream = io.StringIO()
    logger = logging.getLogger("passerelle")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    root = logging.getLogger()
    catch_all = logging.StreamHandler(stream)
    catch_all.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_level = root.level
    # configure_logging also takes over these loggers (propagate off): left so, they would
    # hide their records from later tests' caplog (test_server.py's asyncio check).
    others = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "py.warnings", "asyncio")]
    saved_others = [(list(o.handlers), o.propagate) for o in others]
    access = logging.getLogger("uvicorn.access")
    httpx_logger = logging.getLogger("httpx")
    saved_access, saved_httpx = access.disabled, httpx_logger.level
    last_resort = logging.lastResort  # configure_logging writes unconfigured loggers there
    root.addHandler(catch_all)
    root.setLevel(logging.DEBUG)
    configure_logging("text", "DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(catch_all)
        root.setLevel(root_level)
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
        for other, (handlers, propagate) in zip(others, saved_others, strict=True):
            other.handlers[:] = handlers
            other.propagate = propagate
        access.disabled = saved_access
        httpx_logger.setLevel(saved_httpx)
        logging.lastResort = last_resort
        logging.captureWarnings(False)
