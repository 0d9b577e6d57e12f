"""Transaction bundles and their request modes."""

from __future__ import annotations

from typing import Any

import pytest

from converter.assembly.bundle import build_bundle
from converter.errors import BundleValidationError


def patient(rid: str = "p1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, **extra}


IDENTIFIED = patient(
    "p1",
    identifier=[
        {"system": "urn:oid:1.2.3", "value": "A 12|3&x=/é"},
        {"value": "no-system"},
        {"system": "urn:oid:9.9", "value": "ignored"},
    ],
)
ANONYMOUS = {"resourceType": "Basic", "id": "b1", "code": {"text": "x"}}


def test_put_mode() -> None:
    bundle = build_bundle(
        "bundle-1", [IDENTIFIED, ANONYMOUS], mode="put", timestamp="2024-01-01T00:00:00Z"
    )
    assert bundle == {
        "resourceType": "Bundle",
        "id": "bundle-1",
        "type": "transaction",
        "timestamp": "2024-01-01T00:00:00Z",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": IDENTIFIED,
                "request": {"method": "PUT", "url": "Patient/p1"},
            },
            {
                "fullUrl": "urn:uuid:b1",
                "resource": ANONYMOUS,
                "request": {"method": "PUT", "url": "Basic/b1"},
            },
        ],
    }


def test_conditional_create() -> None:
    bundle = build_bundle("b", [IDENTIFIED, ANONYMOUS], mode="conditional-create")
    assert "timestamp" not in bundle
    assert [entry["request"] for entry in bundle["entry"]] == [
        {
            "method": "POST",
            "url": "Patient",
            "ifNoneExist": "identifier=urn:oid:1.2.3|A%2012%5C%7C3%26x%3D%2F%C3%A9",
        },
        {"method": "PUT", "url": "Basic/b1"},
    ]
    assert [entry["fullUrl"] for entry in bundle["entry"]] == ["urn:uuid:p1", "urn:uuid:b1"]


def test_conditional_update() -> None:
    bundle = build_bundle("b", [IDENTIFIED, ANONYMOUS], mode="conditional-update")
    assert [entry["request"] for entry in bundle["entry"]] == [
        {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.3|A%2012%5C%7C3%26x%3D%2F%C3%A9"},
        {"method": "PUT", "url": "Basic/b1"},
    ]


@pytest.mark.parametrize(
    "identifier",
    [None, [], [{"value": "1"}], [{"system": "s"}], [{"system": "", "value": "1"}]],
)
def test_resources_without_a_usable_identifier_fall_back_to_put(identifier: Any) -> None:
    resource = patient("p2") if identifier is None else patient("p2", identifier=identifier)
    for mode in ("conditional-create", "conditional-update"):
        bundle = build_bundle("b", [resource], mode=mode)  # type: ignore[arg-type]
        assert bundle["entry"][0]["request"] == {"method": "PUT", "url": "Patient/p2"}


def test_system_reserved_characters_are_encoded() -> None:
    resource = patient("p3", identifier=[{"system": "http://x.org/a b?c", "value": "1"}])
    bundle = build_bundle("b", [resource], mode="conditional-create")
    assert bundle["entry"][0]["request"]["ifNoneExist"] == "identifier=http://x.org/a%20b%3Fc|1"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("123,456", "123%5C%2C456"),  # unescaped: patient 123 OR patient 456
        ("C\\D", "C%5C%5CD"),  # unescaped: "\\D" reads as an escaped D, so "CD"
        ("X$Y", "X%5C%24Y"),
        ("P|Q", "P%5C%7CQ"),
        ("a\\,b", "a%5C%5C%5C%2Cb"),
    ],
)
def test_search_separators_in_identifiers_are_escaped(value: str, written: str) -> None:
    resource = patient("p4", identifier=[{"system": "urn:x|y,z", "value": value}])
    bundle = build_bundle("b", [resource], mode="conditional-create")
    expected = f"identifier=urn:x%5C%7Cy%5C%2Cz|{written}"
    assert bundle["entry"][0]["request"]["ifNoneExist"] == expected


def test_two_resources_sharing_a_conditional_identifier_are_refused() -> None:
    # A source that reuses one id for two different entries (seen in C-CDA examples).
    shared = [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:e6f1ba43"}]
    first = {"resourceType": "Immunization", "id": "i1", "identifier": shared}
    second = {"resourceType": "Immunization", "id": "i2", "identifier": shared}
    other_type = {"resourceType": "Procedure", "id": "p1", "identifier": shared}
    for mode in ("conditional-create", "conditional-update"):
        with pytest.raises(BundleValidationError) as caught:
            build_bundle("b", [first, other_type, second], mode=mode)  # type: ignore[arg-type]
        assert caught.value.location == "Bundle.entry[0] and Bundle.entry[2]"
        assert "e6f1ba43" not in str(caught.value)
        build_bundle("b", [first, other_type], mode=mode)  # type: ignore[arg-type]
    # PUT writes both, by their own ids.
    assert len(build_bundle("b", [first, second], mode="put")["entry"]) == 2


def test_empty_bundle() -> None:
    assert build_bundle("b", [], mode="put")["entry"] == []


# --- DELETE entries (ADT^A29 / A23: deleted= names them) ------------------------------------


def test_a_deleted_resource_is_a_delete_entry_without_resource_or_full_url() -> None:
    bundle = build_bundle(
        "b", [IDENTIFIED, ANONYMOUS], mode="put", deleted={("Patient", "p1"): "R.j2:1"}
    )
    assert bundle["entry"] == [
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
        {
            "fullUrl": "urn:uuid:b1",
            "resource": ANONYMOUS,
            "request": {"method": "PUT", "url": "Basic/b1"},
        },
    ]
    # Only that type and id: another Patient, or a Basic with the id p1, is written.
    kept = build_bundle("b", [IDENTIFIED, ANONYMOUS], mode="put", deleted={("Basic", "p1")})
    assert [e["request"]["method"] for e in kept["entry"]] == ["PUT", "PUT"]


def test_in_conditional_modes_a_delete_names_the_identifier_search() -> None:
    search = "identifier=urn:oid:1.2.3|A%2012%5C%7C3%26x%3D%2F%C3%A9"
    for mode in ("conditional-create", "conditional-update"):
        bundle = build_bundle(
            "b",
            [IDENTIFIED, ANONYMOUS],
            mode=mode,  # type: ignore[arg-type]
            deleted={("Patient", "p1"), ("Basic", "b1")},
        )
        assert bundle["entry"] == [
            {"request": {"method": "DELETE", "url": f"Patient?{search}"}},
            # Without an identifier: by id, as its write would be.
            {"request": {"method": "DELETE", "url": "Basic/b1"}},
        ]
    # A per-type mode: only that type goes by identifier.
    bundle = build_bundle(
        "b",
        [IDENTIFIED],
        mode="put",
        modes={"Patient": "conditional-create"},
        deleted={("Patient", "p1")},
    )
    assert bundle["entry"] == [{"request": {"method": "DELETE", "url": f"Patient?{search}"}}]


def test_a_delete_sharing_a_conditional_identifier_with_a_write_is_refused() -> None:
    # Deleting one resource and writing another under the same identifier search in one
    # transaction: the server could not tell which is meant.
    shared = [{"system": "urn:oid:1.2.3", "value": "42"}]
    first = patient("p1", identifier=shared)
    second = patient("p2", identifier=shared)
    with pytest.raises(BundleValidationError) as caught:
        build_bundle("b", [first, second], mode="conditional-update", deleted={("Patient", "p1")})
    assert caught.value.location == "Bundle.entry[0] and Bundle.entry[1]"
    # By id (PUT mode), they are two resources.
    entries = build_bundle("b", [first, second], mode="put", deleted={("Patient", "p1")})["entry"]
    assert [e["request"] for e in entries] == [
        {"method": "DELETE", "url": "Patient/p1"},
        {"method": "PUT", "url": "Patient/p2"},
    ]


def test_a_patient_is_matched_on_its_first_identifier_or_written_by_id() -> None:
    """A Patient's first identifier is its record number, which its id derives from. Without
    a system (a namespace the code maps do not know), the search fell to the next one, the
    INS every hospital's record of the person holds: one hospital's record replaced
    another's, and an A29 deleted the person as every hospital wrote it."""
    ins = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "291127511108785"}
    record = patient("p1", identifier=[{"value": "A-111"}, ins])
    for mode in ("conditional-create", "conditional-update"):
        written = build_bundle("b", [record], mode=mode)  # type: ignore[arg-type]
        assert written["entry"][0]["request"] == {"method": "PUT", "url": "Patient/p1"}
        assert written["entry"][0]["resource"]["id"] == "p1"
        deleted = build_bundle(
            "b",
            [record],
            mode=mode,  # type: ignore[arg-type]
            deleted={("Patient", "p1")},
        )
        assert deleted["entry"] == [{"request": {"method": "DELETE", "url": "Patient/p1"}}]
    # Another type is still matched on its first identifier with a system.
    order = {"resourceType": "ServiceRequest", "id": "s1", "identifier": [{"value": "1"}, ins]}
    [entry] = build_bundle("b", [order], mode="conditional-update")["entry"]
    assert entry["request"]["url"] == (
        "ServiceRequest?identifier=urn:oid:1.2.250.1.213.1.4.8|291127511108785"
    )
