"""Key-content comparison of our bundles with a peer converter's outputs.

Each extractor reduces a bundle to comparable facts (Patient names, birth date, gender,
identifiers; Encounter class, period dates, participant types; Observation code, value,
unit, status; Immunization vaccine code and date). Timestamps are compared on their date
part: the peer's outputs carry the offset of the machine that produced them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Bundle = dict[str, Any]


def resources(bundle: Bundle, *types: str) -> list[dict[str, Any]]:
    """The bundle's resources of these types, in entry order."""
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") in types
    ]


def peer_pairs(inputs: Path, expected: Path, suffix: str) -> Iterator[tuple[Path, Path]]:
    """(source, the peer's output) for each ``<dir>/<name>-expected.json`` under
    ``expected`` whose ``<name><suffix>`` is in ``inputs``."""
    if not expected.is_dir():
        return
    for output in sorted(expected.glob("*/*-expected.json")):
        source = inputs / (output.name.removesuffix("-expected.json") + suffix)
        if source.is_file():
            yield source, output


def date_part(value: str | None) -> str | None:
    return value[:10] if value else None


def codes(concept: dict[str, Any] | None) -> frozenset[str]:
    return frozenset(c.get("code", "") for c in (concept or {}).get("coding", []) if c.get("code"))


def names(person: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """(family, first given) of each name with a family name: where a converter puts a
    middle name or a "called by" (same name, or a nickname name as the IG says) differs."""
    return frozenset(
        ((n.get("family") or "").strip(), (n.get("given") or [""])[0].strip())
        for n in person.get("name", [])
        if n.get("family")
    )


def patient_facts(bundle: Bundle) -> dict[str, Any]:
    patients = resources(bundle, "Patient")
    if not patients:
        return {}
    # The subject of the message: the first Patient (merges may add a retired one).
    p = patients[0]
    return {
        "Patient.name": names(p),
        "Patient.birthDate": p.get("birthDate"),
        "Patient.gender": p.get("gender"),
        "Patient.identifier": frozenset(i.get("value") for i in p.get("identifier", [])),
    }


def encounter_facts(bundle: Bundle) -> dict[str, Any]:
    encounters = resources(bundle, "Encounter")
    if not encounters:
        return {}
    e = encounters[0]
    period = e.get("period", {})
    return {
        "Encounter.class": (e.get("class") or {}).get("code"),
        "Encounter.period": (date_part(period.get("start")), date_part(period.get("end"))),
        "Encounter.participant": frozenset(
            code for p in e.get("participant", []) for t in p.get("type", []) for code in codes(t)
        ),
    }


def _observation_value(o: dict[str, Any]) -> Any:
    if "valueQuantity" in o:
        # Compared as numbers: ours are Decimal (7.20 as written), the peer's floats.
        value = o["valueQuantity"].get("value")
        return float(value) if value is not None else None
    if "valueString" in o:
        return " ".join(o["valueString"].split())
    if "valueCodeableConcept" in o:
        return codes(o["valueCodeableConcept"]) or o["valueCodeableConcept"].get("text")
    for key in ("valueDateTime", "valueTime"):
        if key in o:
            return date_part(o[key])
    return None


def observation_facts(bundle: Bundle) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for o in resources(bundle, "Observation"):
        code = min(codes(o.get("code")), default=(o.get("code") or {}).get("text"))
        if code is None:
            continue
        key = f"Observation[{code}]"
        if key in facts:
            continue  # compare the first occurrence of each code
        facts[key + ".value"] = _observation_value(o)
        facts[key + ".unit"] = (o.get("valueQuantity") or {}).get("unit")
        facts[key + ".status"] = o.get("status")
    return facts


def immunization_facts(bundle: Bundle) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for n, i in enumerate(resources(bundle, "Immunization")):
        facts[f"Immunization[{n}].vaccineCode"] = codes(i.get("vaccineCode"))
        facts[f"Immunization[{n}].occurrence"] = date_part(i.get("occurrenceDateTime"))
        facts[f"Immunization[{n}].status"] = i.get("status")
    return facts


EXTRACTORS: tuple[Callable[[Bundle], dict[str, Any]], ...] = (
    patient_facts,
    encounter_facts,
    observation_facts,
    immunization_facts,
)


def _kind(key: str) -> str:
    """``Observation[1234-5].unit`` → ``Observation.unit``."""
    head, _, tail = key.partition("]")
    return head.split("[")[0] + tail if tail else key


#: Facts where one converter may legitimately extract more than the other (the peer also
#: folds guarantor, insurance and DB1 identifiers into the Patient): they agree when one
#: side contains the other.
_CONTAINMENT = {"Patient.name", "Patient.identifier"}


def agree(kind: str, a: Any, b: Any) -> bool:
    if kind in _CONTAINMENT and isinstance(a, frozenset) and isinstance(b, frozenset):
        return bool(a & b) and (a <= b or b <= a)
    return bool(a == b)


@dataclass
class Tally:
    """Agreement counts per kind of fact, and the disagreements for display."""

    equal: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)
    differences: list[tuple[str, str, Any, Any]] = field(default_factory=list)

    def ratio(self, kind: str) -> float:
        return self.equal[kind] / self.total[kind] if self.total[kind] else 1.0

    def report(self) -> str:
        width = max((len(kind) for kind in self.total), default=4)
        lines = [f"{'fact':{width}} {'agree':>6} {'total':>6} {'ratio':>6}"]
        for kind in sorted(self.total):
            lines.append(
                f"{kind:{width}} {self.equal[kind]:6d} {self.total[kind]:6d} "
                f"{self.ratio(kind):6.0%}"
            )
        return "\n".join(lines)

    def kinds(self) -> Iterable[str]:
        return sorted(self.total)


@dataclass
class Agreement(Tally):
    """HL7 v2 bundles compared fact by fact."""

    def add(self, name: str, ours: Bundle, peer: Bundle) -> None:
        for extract in EXTRACTORS:
            mine, theirs = extract(ours), extract(peer)
            for key in sorted(set(mine) | set(theirs)):
                if key.startswith("Observation[") and (key not in mine or key not in theirs):
                    # One side has no Observation with that code at all (the peer maps
                    # PDA/ACC segments the IG does not): counted as presence, not content.
                    if key.endswith(".status"):
                        self.total["Observation.present in both"] += 1
                        self.differences.append((name, key, key in mine, key in theirs))
                    continue
                if key.startswith("Observation[") and key.endswith(".status"):
                    self.total["Observation.present in both"] += 1
                    self.equal["Observation.present in both"] += 1
                a, b = mine.get(key), theirs.get(key)
                if a in (None, frozenset()) and b in (None, frozenset()):
                    continue
                kind = _kind(key)
                self.total[kind] += 1
                if agree(kind, a, b):
                    self.equal[kind] += 1
                else:
                    self.differences.append((name, key, a, b))
