"""Self-tests for the offline FHIR R4 validator harness (tests/r4validator + tests/support).

They prove the validator both accepts valid resources and rejects invalid ones, so that a bundle
test passing through it means something. Skipped (with the reason) when Node or the npm
dependencies are missing, unless PASSERELLE_REQUIRE_R4VALIDATOR is set.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

try:
    from tests.support.r4validator import (
        VALIDATOR_DIR,
        VALIDATOR_SCRIPT,
        R4Validator,
        r4validator_required,
        r4validator_unavailable_reason,
    )
except ImportError:  # tests/ itself is the import root (pytest's default rootdir-less layout)
    from support.r4validator import (  # type: ignore[no-redef]
        VALIDATOR_DIR,
        VALIDATOR_SCRIPT,
        R4Validator,
        r4validator_required,
        r4validator_unavailable_reason,
    )


def _require_validator() -> None:
    reason = r4validator_unavailable_reason()
    if reason is None:
        return
    if r4validator_required():
        pytest.fail(f"FHIR R4 validator required but unavailable: {reason}")
    pytest.skip(f"FHIR R4 validator unavailable: {reason}")


@pytest.fixture(scope="module")
def validator() -> Iterator[R4Validator]:
    _require_validator()
    with R4Validator.start() as running:
        yield running


def _uuid(n: int) -> str:
    return f"urn:uuid:00000000-0000-4000-8000-{n:012d}"


def _patient(**extra: Any) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "pat-1",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1800199000000"}],
        "name": [{"use": "official", "family": "Durand", "given": ["Marie"]}],
        "gender": "female",
        "birthDate": "1980-02-29",
    }
    patient.update(extra)
    return patient


def _observation(**extra: Any) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "effectiveDateTime": "2024-03-01T09:00:00+01:00",
        "valueQuantity": {
            "value": 72,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    observation.update(extra)
    return observation


def _transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": _uuid(i + 1),
                "resource": resource,
                "request": {"method": "POST", "url": resource.get("resourceType", "Basic")},
            }
            for i, resource in enumerate(resources)
        ],
    }


def _paths(issues: list[dict[str, Any]]) -> list[str]:
    return [str(issue["path"]) for issue in issues]


def test_valid_patient_has_no_issue_at_all(validator: R4Validator) -> None:
    assert validator.validate_all(_patient()) == []


def test_valid_transaction_bundle_has_no_issue(validator: R4Validator) -> None:
    observation = _observation(subject={"reference": _uuid(1)})
    assert validator.validate_all(_transaction(_patient(), observation)) == []


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        pytest.param({"gender": "mle"}, "Patient.gender", id="gender-not-in-required-valueset"),
        pytest.param({"birthDate": "1980-13-45"}, "Patient.birthDate", id="birthdate-bad-format"),
        pytest.param({"birthDate": "1981-02-29"}, "Patient.birthDate", id="birthdate-no-such-day"),
        pytest.param({"foo": 1}, "Patient.foo", id="unknown-element"),
        pytest.param({"gender": ["female"]}, "Patient.gender", id="array-for-single-value"),
        pytest.param({"active": "yes"}, "Patient.active", id="string-for-boolean"),
        pytest.param({"id": "pat_1"}, "Patient.id", id="bad-resource-id"),
        pytest.param({"name": [{"family": ""}]}, "Patient.name[0].family", id="empty-string"),
    ],
)
def test_invalid_patient_is_rejected(
    validator: R4Validator, extra: dict[str, Any], path: str
) -> None:
    errors = validator.validate(_patient(**extra))
    assert errors, f"expected an error for {extra}"
    assert path in _paths(errors), errors


def test_observation_missing_required_elements(validator: R4Validator) -> None:
    observation = _observation()
    del observation["status"]
    del observation["code"]
    paths = _paths(validator.validate(observation))
    assert "Observation.status" in paths
    assert "Observation.code" in paths


def test_observation_status_must_come_from_required_valueset(validator: R4Validator) -> None:
    errors = validator.validate(_observation(status="done"))
    assert _paths(errors) == ["Observation.status"], errors


def test_datetime_with_time_needs_a_time_zone(validator: R4Validator) -> None:
    errors = validator.validate(_observation(effectiveDateTime="2024-03-01T09:00:00"))
    assert len(errors) == 1, errors
    assert errors[0]["path"].startswith("Observation.effective"), errors


def test_invalid_entry_resource_is_reported_inside_the_entry(validator: R4Validator) -> None:
    observation = _observation(subject={"reference": _uuid(1)})
    del observation["status"]
    bundle = _transaction(_patient(gender="mle"), observation)
    paths = _paths(validator.validate(bundle))
    assert "Bundle.entry[0].resource.gender" in paths
    assert "Bundle.entry[1].resource.status" in paths


def test_an_entry_resources_own_invariants_are_checked_inside_a_bundle(
    validator: R4Validator,
) -> None:
    """Medplum recurses into entries for their elements but not for their resource-level
    invariants: obs-6 (dataAbsentReason only without a value) broken by an Observation must
    be reported inside a Bundle as it is on its own, once, under the entry's path."""
    observation = _observation(dataAbsentReason={"text": "not measured"})
    alone = validator.validate(observation)
    assert any("obs-6" in issue["message"] for issue in alone), alone
    issues = validator.validate(_transaction(_patient(), observation))
    found = [issue for issue in issues if "obs-6" in issue["message"]]
    assert [(issue["severity"], issue["path"]) for issue in found] == [
        ("error", "Bundle.entry[1].resource")
    ], issues
    # An element-level issue that the Bundle's own pass reports is not repeated.
    paths = _paths(validator.validate(_transaction(_patient(gender="mle"))))
    assert paths.count("Bundle.entry[0].resource.gender") == 1


def test_data_type_invariants_medplum_leaves_out_are_checked(validator: R4Validator) -> None:
    """att-1 (an Attachment with data has a contentType), qty-3 (a unit code has a system)
    and rng-2 (low not above high): medplum checks no data type's invariants; a CDA ED
    value's attachment without contentType passed, and an inverted IVL_PQ. Bounds in two
    UCUM units: tests/test_r4validator_ucum_s34.py."""
    attachment = {"data": "SGVsbG8="}
    document = {"resourceType": "DocumentReference", "status": "current"}
    issues = validator.validate({**document, "content": [{"attachment": attachment}]})
    assert [(i["path"], i["message"][:24]) for i in issues] == [
        ("DocumentReference.content[0].attachment", "Constraint att-1 not met")
    ], issues
    typed = {**attachment, "contentType": "text/plain"}
    assert validator.validate({**document, "content": [{"attachment": typed}]}) == []
    issues = validator.validate(_observation(valueQuantity={"value": 1, "code": "mg"}))
    assert [i["message"][:24] for i in issues] == ["Constraint qty-3 not met"], issues
    quantity = {"value": 1, "code": "mg", "system": "http://unitsofmeasure.org"}
    assert validator.validate(_observation(valueQuantity=quantity)) == []
    inverted = {"low": {**quantity, "value": 10}, "high": {**quantity, "value": 5}}
    issues = validator.validate(_with_range(inverted))
    assert [i["message"][:24] for i in issues] == ["Constraint rng-2 not met"], issues
    grams = {**quantity, "value": 1, "code": "g"}  # 500 mg < 1 g: compared in UCUM
    for ordered in (
        {"low": quantity, "high": {**quantity, "value": 5}},
        {"low": {**quantity, "value": 500}, "high": grams},
    ):
        assert validator.validate(_with_range(ordered)) == []


def _with_range(value_range: dict[str, Any]) -> dict[str, Any]:
    observation = _observation(valueRange=value_range)
    del observation["valueQuantity"]
    return observation


def test_unknown_entry_resource_type_does_not_hide_other_entries(
    validator: R4Validator,
) -> None:
    bundle = _transaction({"resourceType": "NotAResource"}, _patient(foo=1))
    paths = _paths(validator.validate(bundle))
    assert "Bundle.entry[0].resource.resourceType" in paths
    assert "Bundle.entry[1].resource.foo" in paths


def test_dangling_urn_reference_in_bundle_is_an_error(validator: R4Validator) -> None:
    bundle = _transaction(_patient(), _observation(subject={"reference": _uuid(99)}))
    assert _paths(validator.validate(bundle)) == ["Bundle.entry[1].resource.subject"]


def test_wrong_reference_target_is_a_warning_only(validator: R4Validator) -> None:
    observation = _observation(subject={"reference": "Medication/123"})
    assert validator.validate(observation) == []
    issues = validator.validate_all(observation)
    assert [(i["severity"], i["path"]) for i in issues] == [("warning", "Observation.subject")]


def test_bad_resource_does_not_break_the_validator(validator: R4Validator) -> None:
    assert [i["severity"] for i in validator.validate(42)] == ["fatal"]
    assert [i["severity"] for i in validator.validate({"id": "x"})] == ["fatal"]
    assert validator.validate(_patient()) == []


def test_unparseable_line_yields_an_issue() -> None:
    _require_validator()
    requests = "not json\n" + json.dumps({"id": "ok", "resource": _patient()}) + "\n"
    completed = subprocess.run(
        ["node", str(VALIDATOR_SCRIPT)],
        cwd=VALIDATOR_DIR,
        input=requests,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert lines[0]["ready"] is True
    assert lines[1]["id"] is None
    assert [i["severity"] for i in lines[1]["issues"]] == ["fatal"]
    assert lines[2] == {"id": "ok", "issues": []}
