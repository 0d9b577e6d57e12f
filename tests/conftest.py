"""Fixtures shared by the whole suite: the R4 validator process and the shared corpora."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.r4validator import (
    R4Validator,
    r4validator_required,
    r4validator_unavailable_reason,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# A copy of the tree (the compiled build's, scripts/build_compiled.py) is told where the
# corpora are: its parent is not the checkout's.
SHARED_DIR = Path(os.environ.get("PASSERELLE_SHARED_DIR") or REPO_ROOT.parent / "shared")
SAMPLES_DIR = REPO_ROOT / "samples"


@pytest.fixture(scope="session")
def r4validator() -> Iterator[R4Validator]:
    """One Node validator process (official R4 StructureDefinitions) for the session."""
    reason = r4validator_unavailable_reason()
    if reason is not None:
        if r4validator_required():
            pytest.fail(f"FHIR R4 validator required but unavailable: {reason}")
        pytest.skip(f"FHIR R4 validator unavailable: {reason}")
    with R4Validator.start() as validator:
        yield validator


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (corpora and IG tables); tests using it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} is absent: the shared corpora are not available here")
    return SHARED_DIR
