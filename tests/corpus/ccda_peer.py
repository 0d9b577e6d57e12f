"""Key-content comparison of our C-CDA bundles with a peer converter's outputs
(Microsoft FHIR-Converter's expected outputs for its sample C-CDAs).

Each extractor reduces a bundle to comparable facts:

* Patient: names (family, first given), birth date, gender, identifier values;
* Condition codes, AllergyIntolerance substances (``code`` or ``reaction.substance``),
  medication codes of MedicationRequest / MedicationStatement (``medicationCodeableConcept``
  or the referenced Medication's ``code``), Immunization vaccine codes: each resource is
  paired with one of the other bundle's sharing a code (coding or translation: the peer
  sometimes keeps only a translation);
* Observations paired by code and effective date, then their values (quantity value,
  coded value, text).

Content is compared on the documents where both converters produced resources of that
kind; a document where only one did counts against "<kind> (document covered)" instead
(sections one converter maps and the other does not). "<kind>" is the share of the peer's
resources we produce too (pairs / the peer's), "<kind> (ours in peer)" the share of ours
the peer produces too.

Systematic differences, where we follow the C-CDA on FHIR IG and the peer does not,
are normalised before comparing:

* the peer writes Medication Activities as MedicationStatement, we as MedicationRequest
  (IG): both are "medication statements" here;
* we write a blood pressure as one Observation (85354-9) with systolic and diastolic
  components (US Core / IG), the peer as two Observations: components are compared as
  Observations of their own (same effective date);
* the peer puts an allergy's substance in ``reaction.substance`` and leaves
  ``AllergyIntolerance.code`` empty; we put it in ``code`` (IG): both places are read;
* we write a vital-signs organizer as a panel Observation with ``hasMember`` (IG), the
  peer does not: panels are left out;
* sex assigned at birth is the Patient's us-core-birthsex extension for us (IG), an
  Observation 76689-9 for the peer: compared as ``Patient.birthSex``.
* a negated Problem Observation of the generic value 55607006 "Problem" ("No Known
  Problems") is SNOMED 160245001 "No current problems or disability" for us (IG: the
  negated concept), 55607006 for the peer (negation ignored): compared as both.

Timestamps are compared on their date part (the peer's carry the offset of the machine
that produced them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .peer import Tally, agree, resources
from .peer import codes as _codes
from .peer import date_part as _date
from .peer import patient_facts as hl7v2_patient_facts

Bundle = dict[str, Any]
Resource = dict[str, Any]

#: Resource types whose counts are printed side by side.
COUNTED = (
    "Patient",
    "Encounter",
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "MedicationStatement",
    "Medication",
    "Immunization",
    "Observation",
    "DiagnosticReport",
    "Procedure",
    "FamilyMemberHistory",
    "DocumentReference",
    "Practitioner",
    "Organization",
)


def _index(bundle: Bundle) -> dict[str, Resource]:
    """Resources by every way a reference can name them (``Type/id``, fullUrl)."""
    out = {}
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if "id" in resource:
            out[f"{resource['resourceType']}/{resource['id']}"] = resource
        if entry.get("fullUrl"):
            out[entry["fullUrl"]] = resource
    return out


def _primary_code(concept: dict[str, Any] | None) -> str | None:
    for coding in (concept or {}).get("coding", []):
        if coding.get("code"):
            return str(coding["code"])
    return None


def patient_facts(bundle: Bundle) -> dict[str, Any]:
    """The HL7 v2 comparison's Patient facts, and the birth sex C-CDA carries."""
    facts = hl7v2_patient_facts(bundle)
    if facts:
        facts["Patient.birthSex"] = birth_sex(bundle)
    return facts


def _medication_codes(bundle: Bundle) -> list[frozenset[str]]:
    index = _index(bundle)
    out = []
    for statement in resources(bundle, "MedicationRequest", "MedicationStatement"):
        codes = _codes(statement.get("medicationCodeableConcept"))
        reference = (statement.get("medicationReference") or {}).get("reference")
        if reference in index:
            codes |= _codes(index[reference].get("code"))
        if _NO_KNOWN_MEDICATIONS[0] in codes:
            codes |= {_NO_KNOWN_MEDICATIONS[1]}
        out.append(codes)
    return out


#: SNOMED "No known medications" (ours: a MedicationStatement for the negated generic
#: drug) and the negated "Drug or medicament" it comes from (the peer's, negation ignored).
_NO_KNOWN_MEDICATIONS = ("787481004", "410942007")


def _allergy_substances(bundle: Bundle) -> list[frozenset[str]]:
    out = []
    for allergy in resources(bundle, "AllergyIntolerance"):
        codes = set(_codes(allergy.get("code")))
        for reaction in allergy.get("reaction", []):
            codes |= _codes(reaction.get("substance"))
        out.append(frozenset(codes))
    return out


#: SNOMED "No current problems or disability" (ours, the IG's negated concept) and the
#: negated generic "Problem" it comes from (the peer's, negation ignored).
_NO_KNOWN_PROBLEMS = ("160245001", "55607006")


def _condition_codes(condition: Resource) -> frozenset[str]:
    codes = _codes(condition.get("code"))
    if _NO_KNOWN_PROBLEMS[0] in codes:
        return codes | {_NO_KNOWN_PROBLEMS[1]}
    return codes


#: Coded facts, one code set per resource (its coding and translations). A resource
#: agrees when the other bundle has a resource sharing one of its codes.
CODED: dict[str, Callable[[Bundle], list[frozenset[str]]]] = {
    "Condition.code": lambda b: [_condition_codes(r) for r in resources(b, "Condition")],
    "AllergyIntolerance.substance": _allergy_substances,
    "Medication.code": _medication_codes,
    "Immunization.vaccineCode": lambda b: [
        _codes(r.get("vaccineCode")) for r in resources(b, "Immunization")
    ],
}


def _value(o: dict[str, Any]) -> Any:
    if "valueQuantity" in o:
        value = o["valueQuantity"].get("value")
        return float(value) if value is not None else None
    if "valueCodeableConcept" in o:
        return _codes(o["valueCodeableConcept"]) or o["valueCodeableConcept"].get("text")
    if "valueString" in o:
        return " ".join(str(o["valueString"]).split()).lower()
    for key in ("valueBoolean", "valueInteger"):
        if key in o:
            return o[key]
    for key in ("valueDateTime", "valuePeriod"):
        if key in o:
            return _date(o[key] if isinstance(o[key], str) else o[key].get("start"))
    return None


def _effective(o: Resource) -> str | None:
    if o.get("effectiveDateTime"):
        return _date(o["effectiveDateTime"])
    return _date((o.get("effectivePeriod") or {}).get("start"))


BIRTH_SEX = "76689-9"


def observations(bundle: Bundle) -> list[tuple[frozenset[str], str | None, Any]]:
    """(codes, date, value) of each Observation; components as Observations of their
    own; panels (hasMember) and sex assigned at birth (compared on the Patient) left out."""
    out = []
    for o in resources(bundle, "Observation"):
        codes, when = _codes(o.get("code")), _effective(o)
        if o.get("hasMember") or BIRTH_SEX in codes:
            continue
        if codes and not o.get("component"):
            out.append((codes, when, _value(o)))
        for component in o.get("component", []):
            if _codes(component.get("code")):
                out.append((_codes(component.get("code")), when, _value(component)))
    return out


def birth_sex(bundle: Bundle) -> str | None:
    """The us-core-birthsex extension (IG), or the peer's Observation 76689-9."""
    for patient in resources(bundle, "Patient")[:1]:
        for extension in patient.get("extension", []):
            if extension.get("url", "").endswith("us-core-birthsex"):
                return str(extension.get("valueCode"))
    for o in resources(bundle, "Observation"):
        if BIRTH_SEX in _codes(o.get("code")):
            return _primary_code(o.get("valueCodeableConcept"))
    return None


def match(
    a: list[Any], b: list[Any], same: Callable[[Any, Any], bool]
) -> tuple[list[tuple[Any, Any]], list[Any], list[Any]]:
    """Greedy one-to-one pairing: (pairs, only in a, only in b)."""
    unused = list(b)
    pairs, only_a = [], []
    for item in a:
        partner = next((other for other in unused if same(item, other)), None)
        if partner is None:
            only_a.append(item)
        else:
            unused.remove(partner)
            pairs.append((item, partner))
    return pairs, only_a, unused


def _agree(kind: str, a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) < 1e-9
    return agree(kind, a, b)


@dataclass
class Agreement(Tally):
    """Agreement counts per kind of fact, the differences, and resource counts."""

    counts: dict[str, tuple[Counter[str], Counter[str]]] = field(default_factory=dict)

    def _count(self, kind: str, agree: bool, name: str, key: str, a: Any, b: Any) -> None:
        self.total[kind] += 1
        if agree:
            self.equal[kind] += 1
        else:
            self.differences.append((name, key, a, b))

    def add(self, name: str, ours: Bundle, peer: Bundle) -> None:
        self.counts[name] = (
            Counter(r["resourceType"] for r in resources(ours, *COUNTED)),
            Counter(r["resourceType"] for r in resources(peer, *COUNTED)),
        )
        mine, theirs = patient_facts(ours), patient_facts(peer)
        for kind in sorted(set(mine) | set(theirs)):
            a, b = mine.get(kind), theirs.get(kind)
            if a in (None, frozenset()) and b in (None, frozenset()):
                continue
            self._count(kind, _agree(kind, a, b), name, kind, a, b)
        for kind, extract in CODED.items():
            self._compare(
                kind,
                name,
                extract(ours),
                extract(peer),
                lambda x, y: bool(x & y),
                lambda x: sorted(x),
            )
        a_obs, b_obs = observations(ours), observations(peer)
        pairs = self._compare(
            "Observation.code",
            name,
            a_obs,
            b_obs,
            lambda x, y: x[1] == y[1] and bool(x[0] & y[0]),
            lambda x: (sorted(x[0]), x[1]),
        )
        for mine_obs, theirs_obs in pairs:
            if mine_obs[2] is not None or theirs_obs[2] is not None:
                self._count(
                    "Observation.value",
                    _agree("value", mine_obs[2], theirs_obs[2]),
                    name,
                    f"Observation[{sorted(mine_obs[0])} {mine_obs[1]}].value",
                    mine_obs[2],
                    theirs_obs[2],
                )

    def _compare(
        self,
        kind: str,
        name: str,
        a: list[Any],
        b: list[Any],
        same: Callable[[Any, Any], bool],
        show: Callable[[Any], Any],
    ) -> list[Any]:
        """Content agreement where both converters produced some, coverage otherwise."""
        if not a and not b:
            return []
        self._count(f"{kind} (document covered)", bool(a) and bool(b), name, kind, len(a), len(b))
        if not a or not b:
            return []
        pairs, only_a, only_b = match(a, b, same)
        # "<kind>": the peer's resources we produce too; "<kind> (ours in peer)": ours
        # that the peer produces too (sections only we map lower this one, not the first).
        for _ in pairs:
            self._count(kind, True, name, kind, None, None)
            self._count(f"{kind} (ours in peer)", True, name, kind, None, None)
        for item in only_b:
            self._count(kind, False, name, f"{kind} only peer", None, show(item))
        for item in only_a:
            self._count(
                f"{kind} (ours in peer)", False, name, f"{kind} only ours", show(item), None
            )
        return pairs

    def counts_report(self) -> str:
        """Resources of each type, ours / the peer's, per document."""
        names = list(self.counts)
        short = {
            t: t.replace("MedicationStatement", "MedStmt")
            .replace("MedicationRequest", "MedReq")
            .replace("AllergyIntolerance", "Allergy")
            .replace("DiagnosticReport", "DiagRep")
            .replace("FamilyMemberHistory", "FamHist")
            .replace("DocumentReference", "DocRef")
            .replace("Practitioner", "Pract")
            .replace("Organization", "Org")
            .replace("Immunization", "Immun")
            .replace("Observation", "Obs")
            .replace("Condition", "Cond")
            .replace("Encounter", "Enc")
            .replace("Procedure", "Proc")
            .replace("Medication", "Med")
            for t in COUNTED
        }
        width = max(len(n) for n in names) if names else 10
        lines = [f"{'ours/peer':{width}} " + " ".join(f"{short[t]:>8}" for t in COUNTED)]
        totals: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        for name in names:
            ours, peer = self.counts[name]
            totals[0].update(ours)
            totals[1].update(peer)
            lines.append(
                f"{name:{width}} " + " ".join(f"{f'{ours[t]}/{peer[t]}':>8}" for t in COUNTED)
            )
        lines.append(
            f"{'total':{width}} "
            + " ".join(f"{f'{totals[0][t]}/{totals[1][t]}':>8}" for t in COUNTED)
        )
        return "\n".join(lines)

    def kinds(self) -> Iterable[str]:
        return sorted(self.total)
