"""Confidentiality labels passed on to every resource of a protected patient.

A protected patient (HL7 v2 PD1-12 ``Y``: a VIP, a victim, a patient who asked that his
presence not be disclosed) has the label R (restricted, v3-Confidentiality) on his
Patient, and a CDA document whose confidentialityCode is R or V has it on its
Composition. A warehouse that filters by security label (``_security``) showed everyone
the rest of the bundle: the patient's results, diagnoses, allergies, procedures, visit.
This step gives every resource of the bundle in that patient's compartment the label;
likewise a protected visit's label (PV2-22 ``Y`` on the Encounter) goes on what was
recorded in that visit (its Observations, Conditions, Procedures, reports, orders...),
which disclosed the visit.

Why here and not in the templates: it is one rule for HL7 v2 and CDA, for every message
type, and for resource types added later; in the templates, every root would have to
hand the patient's protection (PD1-12, PV2-22, the document header) to each of ~40
resource templates it emits, and one root or template forgetting it would silently
expose the data. The rule is data:

- which label: the one the templates wrote, so the code maps decide it
  (``ProtectionIndicator-Passerelle``: a site mapping ``Y`` to V gets V everywhere).
  Only the levels above normal (R, V) are passed on: U, L, M, N say nothing to restrict.
- which resources: :data:`PATIENT_COMPARTMENT`, the FHIR R4 Patient
  CompartmentDefinition (the elements that can name the patient), for the types the
  templates write, and a Device naming the patient (its ``patient``: R4 leaves Device
  out of the compartment, but a device implanted in or worn by the patient is his data).
  Shared resources (Practitioner, Organization, Location, Medication, MessageHeader, a
  Device without ``patient``, Slot) are outside it and stay unlabelled. A
  Provenance (which R4 places in the compartment through its target) takes the strongest
  label of the resources it targets, as it describes them: a CDA author's Provenance
  targets one Observation, the message's Provenance all of them.
- which resources of a visit: :data:`VISIT_ELEMENTS`, the element naming the Encounter.
- a DocumentReference whose ``securityLabel`` (the document's: TXA-18, a CDA's
  confidentialityCode) is R or V holds that document's text: it is labelled too.
- what the bundle deletes (ADT^A29 deletes the protected Patient, A23 a protected
  visit): its entry is a bare DELETE, and nothing in the bundle may refer to it, so
  neither the Provenance's targets nor any compartment reach it; yet the message's
  Provenance records its deletion. Each Provenance of the bundle takes the strongest
  label of the deleted resources too (their labels as the templates wrote them and as
  passed on, computed on copies: a DELETE entry has no resource to label); the bundle
  assembly names them (``deleted``).

A document's label is about its content: it is passed on to what the document says about
the patient, not to the Patient, whom every document about the person writes (one
restricted letter would restrict the person's identity until the next document replaced
it). A resource keeps its other labels; one confidentiality level per resource (the
strongest: a DiagnosticReport labelled V by ORC-28 stays V beside a patient's R).

The converter never reads the server: a later message without PD1-12 ``Y`` writes its
resources unlabelled, as it writes the Patient (see the README on what the sender must
repeat).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["CONFIDENTIALITY", "PATIENT_COMPARTMENT", "VISIT_ELEMENTS", "label_compartments"]

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
#: v3-Confidentiality levels from least to most restrictive.
_LEVELS = ("U", "L", "M", "N", "R", "V")
#: Levels that restrict access beyond the usual, and their displays (v3-Confidentiality).
_PASSED_ON = {"R": "restricted", "V": "very restricted"}

#: FHIR R4 CompartmentDefinition ``patient``: for each resource type, the elements (a
#: dotted path; lists are walked) whose reference to a Patient puts the resource in that
#: Patient's compartment (search parameters resolved to their expressions), plus a
#: Device's ``patient``. Only the types the templates write, plus their close relatives; a
#: type missing here is never labelled.
PATIENT_COMPARTMENT: Mapping[str, tuple[str, ...]] = {
    "Account": ("subject",),
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "Appointment": ("participant.actor",),
    "AppointmentResponse": ("actor",),
    "CarePlan": ("subject", "activity.detail.performer"),
    "CareTeam": ("subject", "participant.member"),
    "ChargeItem": ("subject",),
    "ClinicalImpression": ("subject",),
    "Communication": ("subject", "sender", "recipient"),
    "Composition": ("subject", "author", "attester.party"),
    "Condition": ("subject", "asserter"),
    "Consent": ("patient",),
    "Coverage": ("policyHolder", "subscriber", "beneficiary", "payor"),
    "DeviceRequest": ("subject", "performer"),
    # Not in R4's Patient compartment (R4 counts a Device among shared resources), but
    # a Device with a `patient` (an implant, a pump the patient wears: US Core Implantable
    # Device requires it) is that patient's; it goes unrestricted otherwise.
    "Device": ("patient",),
    "DeviceUseStatement": ("subject",),
    "DiagnosticReport": ("subject",),
    "DocumentManifest": ("subject", "author", "recipient"),
    "DocumentReference": ("subject", "author"),
    "Encounter": ("subject",),
    "EpisodeOfCare": ("patient",),
    "FamilyMemberHistory": ("patient",),
    "Flag": ("subject",),
    "Goal": ("subject",),
    "ImagingStudy": ("subject",),
    "Immunization": ("patient",),
    "ImmunizationRecommendation": ("patient",),
    "Invoice": ("subject", "recipient"),
    "List": ("subject", "source"),
    "Media": ("subject",),
    "MedicationAdministration": ("subject", "performer.actor"),
    "MedicationDispense": ("subject", "receiver"),
    "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",),
    "NutritionOrder": ("patient",),
    "Observation": ("subject", "performer"),
    "Patient": ("link.other",),
    "Procedure": ("subject", "performer.actor"),
    "QuestionnaireResponse": ("subject", "author"),
    "RelatedPerson": ("patient",),
    "RiskAssessment": ("subject",),
    "Schedule": ("actor",),
    "ServiceRequest": ("subject", "performer"),
    "Specimen": ("subject",),
    "Task": ("for",),
}


#: The element naming the visit (Encounter) a resource was recorded in: FHIR R4's
#: Encounter CompartmentDefinition for the types the templates write, plus the types R4
#: leaves out of it whose element names the visit all the same (AllergyIntolerance,
#: Immunization, MedicationDispense, MedicationStatement): what was recorded during a
#: protected visit (PV2-22) discloses it.
VISIT_ELEMENTS: Mapping[str, tuple[str, ...]] = {
    "AllergyIntolerance": ("encounter",),
    "CarePlan": ("encounter",),
    "ChargeItem": ("context",),
    "ClinicalImpression": ("encounter",),
    "Communication": ("encounter",),
    "Composition": ("encounter",),
    "Condition": ("encounter",),
    "DeviceRequest": ("encounter",),
    "DiagnosticReport": ("encounter",),
    "DocumentReference": ("context.encounter",),
    "Immunization": ("encounter",),
    "Media": ("encounter",),
    "MedicationAdministration": ("context",),
    "MedicationDispense": ("context",),
    "MedicationRequest": ("encounter",),
    "MedicationStatement": ("context",),
    "NutritionOrder": ("encounter",),
    "Observation": ("encounter",),
    "Procedure": ("encounter",),
    "QuestionnaireResponse": ("encounter",),
    "RiskAssessment": ("encounter",),
    "ServiceRequest": ("encounter",),
}


def label_compartments(
    resources: Sequence[dict[str, Any]], *, deleted: Collection[tuple[str, str]] = ()
) -> None:
    """Give each resource in the compartment of a labelled Patient (or of a labelled
    Composition's subject), and each resource recorded in a labelled visit, that label;
    then each Provenance its targets' strongest, and the deleted resources' strongest.
    ``resources`` are changed in place, except those whose ``(type, id)`` is in
    ``deleted`` (the bundle's DELETE entries), which are read only."""
    gone: list[dict[str, Any]] = []
    if deleted:
        # Labels are passed on to copies of them: a DELETE entry holds no resource, and
        # the caller's objects stay as the templates wrote them.
        gone = [dict(r) for r in resources if (r["resourceType"], r["id"]) in deleted]
        resources = [*(r for r in resources if (r["resourceType"], r["id"]) not in deleted), *gone]
    # The labels the templates wrote, read before any is passed on.
    sources = [(r, label) for r in resources if (label := _source_label(r)) is not None]
    if not sources and not any(_strongest(r) for r in resources):
        return
    references = {form: r for r in resources for form in _reference_forms(r)}
    # Reference to a protected Patient → (label, whether a Patient takes it too).
    patients: dict[str, tuple[dict[str, Any], bool]] = {}
    visits: dict[str, tuple[dict[str, Any], bool]] = {}
    for resource, label in sources:
        rtype = resource["resourceType"]
        if rtype == "Patient":
            for form in _reference_forms(resource):
                _protect(patients, form, label, patients_too=True)
        elif rtype == "Encounter":
            for form in _reference_forms(resource):
                _protect(visits, form, label, patients_too=False)
        elif rtype == "DocumentReference":
            _apply(resource, label)
        else:
            _apply(resource, label)
            for reference in _references(resource, "subject"):
                target = references.get(reference)
                if target is not None and target["resourceType"] == "Patient":
                    for form in _reference_forms(target):
                        _protect(patients, form, label, patients_too=False)
    for resource in resources:
        rtype = resource["resourceType"]
        for protected, table in ((patients, PATIENT_COMPARTMENT), (visits, VISIT_ELEMENTS)):
            for path in table.get(rtype, ()) if protected else ():
                for reference in _references(resource, path):
                    found = protected.get(reference)
                    if found is not None and (rtype != "Patient" or found[1]):
                        _apply(resource, found[0])
    # A target outside the bundle (an MDM T03 names the document whose status changes
    # without writing it) is a resource of the message's patient.
    outside = [label for label, patients_too in patients.values() if patients_too]
    # The message's Provenance records what the bundle deletes, which it cannot target.
    removed = [label for r in gone if (label := _strongest(r)) is not None]
    for resource in resources:
        if resource["resourceType"] == "Provenance":
            for reference in _references(resource, "target"):
                target = references.get(reference)
                for label in outside if target is None else filter(None, [_strongest(target)]):
                    _apply(resource, label)
            for label in removed:
                _apply(resource, label)


def _reference_forms(resource: dict[str, Any]) -> tuple[str, str]:
    """How the bundle's resources refer to ``resource``: ``Type/id`` when every entry is
    a PUT, its ``urn:uuid`` fullUrl otherwise (see the render session)."""
    rid = resource["id"]
    return f"{resource['resourceType']}/{rid}", f"urn:uuid:{rid}"


def _protect(
    protected: dict[str, tuple[dict[str, Any], bool]],
    reference: str,
    label: dict[str, Any],
    *,
    patients_too: bool,
) -> None:
    held = protected.get(reference)
    if held is None:
        protected[reference] = (label, patients_too)
    else:
        stronger = label if _rank(label) > _rank(held[0]) else held[0]
        protected[reference] = (stronger, held[1] or patients_too)


def _source_label(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The label a Patient or an Encounter passes on (its strongest R or V security
    label), a Composition (its ``confidentiality``, which C-CDA on FHIR maps
    confidentialityCode to, or a security label), or a DocumentReference gives itself
    (its ``securityLabel``'s v3-Confidentiality coding)."""
    rtype = resource["resourceType"]
    if rtype not in ("Patient", "Encounter", "Composition", "DocumentReference"):
        return None
    label = _strongest(resource)
    if rtype == "DocumentReference":
        # The document's label (TXA-18, a CDA's confidentialityCode) is about the content
        # the resource holds: a label of the resource too, and of no other.
        for concept in resource.get("securityLabel") or ():
            codings = concept.get("coding") if isinstance(concept, dict) else None
            for coding in codings or ():
                if isinstance(coding, dict) and _stronger(coding, label):
                    label = {k: coding[k] for k in ("system", "code", "display") if k in coding}
    if rtype == "Composition":
        code = resource.get("confidentiality")
        if isinstance(code, str) and code in _PASSED_ON:
            own = {"system": CONFIDENTIALITY, "code": code, "display": _PASSED_ON[code]}
            if _stronger(own, label):
                label = own
    return label


def _strongest(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The resource's most restrictive R or V confidentiality label, if any."""
    best: dict[str, Any] | None = None
    for coding in _security(resource):
        if _stronger(coding, best):
            best = coding
    return best


def _stronger(coding: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Whether ``coding`` is an R or V level above ``than`` (a level, or None)."""
    return coding.get("code") in _PASSED_ON and _rank(coding) > (
        -1 if than is None else _rank(than)
    )


def _security(resource: dict[str, Any]) -> list[dict[str, Any]]:
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, dict) else None
    if not isinstance(security, list):
        return []
    return [coding for coding in security if isinstance(coding, dict)]


def _rank(coding: dict[str, Any]) -> int:
    """The level of a v3-Confidentiality coding; -1 for any other label."""
    code = coding.get("code")
    if coding.get("system") != CONFIDENTIALITY or code not in _LEVELS:
        return -1
    return _LEVELS.index(code)


def _apply(resource: dict[str, Any], label: dict[str, Any]) -> None:
    """Add ``label`` to ``resource``'s ``meta.security`` unless it holds a level at least
    as restrictive; a lower level it holds goes (one confidentiality level a resource).
    New objects are written: a rendering reused for two emits may share them."""
    held = resource.get("meta")
    meta = dict(held) if isinstance(held, dict) else {}
    security = list(meta.get("security") or [])
    levels = [_rank(c) for c in security if isinstance(c, dict)]
    if levels and max(levels) >= _rank(label):
        return
    security = [c for c in security if not isinstance(c, dict) or _rank(c) < 0]
    security.append(dict(label))
    meta["security"] = security
    resource["meta"] = meta


def _references(resource: dict[str, Any], path: str) -> Iterable[str]:
    """The ``reference`` strings at ``path`` (``participant.actor``) in ``resource``."""
    values: list[Any] = [resource]
    for step in path.split("."):
        found: list[Any] = []
        for value in values:
            item = value.get(step) if isinstance(value, dict) else None
            if isinstance(item, list):
                found.extend(item)
            elif item is not None:
                found.append(item)
        values = found
    for value in values:
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str):
            yield reference
