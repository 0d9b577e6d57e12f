"""Fixtures of the MLLP tests: a throw-away PKI for TLS."""

from __future__ import annotations

import pytest

from tests.support.certs import Pki, make_pki, openssl_available


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if not openssl_available():
        pytest.fail("the openssl command line is needed to create test certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))
