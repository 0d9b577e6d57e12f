"""What the pharmacy tests (RDE, RDS, OMP) look up in a bundle: a MedicationRequest by its
placer order number."""

from __future__ import annotations

from typing import Any

from tests.support.hl7_edit import resources


def placer_of(resource: dict[str, Any]) -> str | None:
    """The resource's placer order number (its PLAC identifier), if any."""
    return next(
        (
            i["value"]
            for i in resource.get("identifier", [])
            if i["type"]["coding"][0]["code"] == "PLAC"
        ),
        None,
    )


def medication_request(bundle: dict[str, Any], placer: str) -> dict[str, Any]:
    """The bundle's one MedicationRequest with placer order number ``placer``."""
    [found] = [r for r in resources(bundle, "MedicationRequest") if placer_of(r) == placer]
    return found
