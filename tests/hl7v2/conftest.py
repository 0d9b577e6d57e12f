"""Fixtures of these tests: the shared converter and a test FHIR server (tests/support)."""

from __future__ import annotations

from tests.support.fixtures import converter, fhir_server

__all__ = ["converter", "fhir_server"]
