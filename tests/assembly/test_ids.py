"""Deterministic, UUID-shaped resource ids."""

from __future__ import annotations

import hashlib
import re
import uuid

from hypothesis import given
from hypothesis import strategies as st

from converter.assembly.ids import stable_id

FHIR_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")


def test_known_value() -> None:
    # Pinned: changing the digest would change every id of every deployment.
    assert stable_id("", "Patient", "urn:oid:1.2.3", "12345") == (
        "98f27072-9b69-53d8-b39e-164d39fb355a"
    )
    # The derivation: SHA-256 of the unit-separated parts, shaped as a version-5 UUID.
    digest = hashlib.sha256(b"\x1fPatient\x1furn:oid:1.2.3\x1f12345").hexdigest()
    assert digest.startswith("98f27072" + "9b69")


def test_same_inputs_same_id_and_every_input_matters() -> None:
    base = stable_id("ns", "Patient", "sys", "1")
    assert stable_id("ns", "Patient", "sys", "1") == base
    assert stable_id("other", "Patient", "sys", "1") != base
    assert stable_id("ns", "Encounter", "sys", "1") != base
    assert stable_id("ns", "Patient", "sys2", "1") != base
    assert stable_id("ns", "Patient", "sys", "2") != base
    assert stable_id("ns", "Patient", "sys") != base


def test_parts_are_separated() -> None:
    # "ab" + "c" and "a" + "bc" are different identities.
    assert stable_id("", "Patient", "ab", "c") != stable_id("", "Patient", "a", "bc")
    assert stable_id("", "Patient", "a", "") != stable_id("", "Patient", "a")


@given(
    scope=st.text(max_size=20),
    rtype=st.text(min_size=1, max_size=20),
    parts=st.lists(st.text(max_size=20), max_size=4),
)
def test_ids_are_valid_fhir_ids_and_uuids(scope: str, rtype: str, parts: list[str]) -> None:
    rid = stable_id(scope, rtype, *parts)
    assert FHIR_ID.fullmatch(rid)
    assert len(rid) == 36
    parsed = uuid.UUID(rid)
    assert str(parsed) == rid
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122
    assert rid == stable_id(scope, rtype, *parts)
