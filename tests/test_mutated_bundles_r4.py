"""What Passerelle accepts, R4 accepts: mutated samples that convert (and so passed
Passerelle's own validation) must also pass the independent R4 validator. A bundle that
does not would be acknowledged, then refused by the FHIR server and dead-lettered late,
as once happened for control characters, empty extensions and blanks in uris and codes."""

from __future__ import annotations

from tests.support.mutations import mutated_conversions
from tests.support.r4validator import R4Validator

MUTATIONS = 600


def test_every_bundle_that_converts_is_valid_r4(r4validator: R4Validator) -> None:
    accepted = 0
    problems: list[tuple[str, str]] = []
    for _, conversion in mutated_conversions(MUTATIONS, seed=20261129):
        accepted += 1
        problems += [
            (issue["path"], issue["message"][:100])
            for issue in r4validator.validate_all(conversion.bundle)
            if issue["severity"] in ("error", "fatal")
        ]
    assert accepted > MUTATIONS // 5, f"only {accepted} mutated inputs converted"
    assert not problems, problems[:10]
