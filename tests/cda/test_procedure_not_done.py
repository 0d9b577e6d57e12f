"""The reason a procedure was not done is its statusReason, not its reasonCode.

A negated Procedure Activity (``negationInd="true"``: the procedure was not performed)
with an Indication (``entryRelationship typeCode="RSON"``) says why it was not done:
"Procedure refused", as HL7's "Procedure Refused" example writes it. That reason went to
``reasonCode``, which R4 defines as why a procedure WAS performed: a warehouse asking
for the indications of procedures read "Procedure refused" as one. It is now
``statusReason`` (bound to R4's procedure-not-performed-reason value set, which holds
183944003 "Procedure refused"); a performed procedure keeps its indications in
``reasonCode``.
"""

from __future__ import annotations

from typing import Any

from tests.support.r4validator import R4Validator

from ._support import cda, convert_document

SNOMED = "2.16.840.1.113883.6.96"


def _reason(code: str, display: str) -> str:
    return (
        '<entryRelationship typeCode="RSON"><observation classCode="OBS" moodCode="EVN">'
        '<templateId root="2.16.840.1.113883.10.20.22.4.19" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.51" extension="R{code}"/>'
        f'<code code="404684003" codeSystem="{SNOMED}"/><statusCode code="completed"/>'
        f'<value xsi:type="CD" code="{code}" codeSystem="{SNOMED}" displayName="{display}"/>'
        "</observation></entryRelationship>"
    )


def _procedure(extension: str, negated: bool, reasons: str) -> str:
    negation = ' negationInd="true"' if negated else ""
    return (
        f'<entry><procedure classCode="PROC" moodCode="EVN"{negation}>'
        '<templateId root="2.16.840.1.113883.10.20.22.4.14" extension="2014-06-09"/>'
        f'<id root="1.2.250.1.999.51" extension="{extension}"/>'
        f'<code code="73761001" codeSystem="{SNOMED}" displayName="Colonoscopy"/>'
        '<statusCode code="completed"/><effectiveTime value="20230105"/>'
        f"{reasons}</procedure></entry>"
    )


def _by_id(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        e["resource"]["identifier"][0]["value"]: e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Procedure"
    }


def test_the_reason_a_procedure_was_not_done_is_its_status_reason(
    r4validator: R4Validator,
) -> None:
    body = (
        '<component><section><templateId root="2.16.840.1.113883.10.20.22.2.7.1" '
        'extension="2014-06-09"/><code code="47519-4" codeSystem="2.16.840.1.113883.6.1"/>'
        "<title>Procedures</title><text>Procedures</text>"
        + _procedure("REFUSED", True, _reason("183944003", "Procedure refused"))
        + _procedure("DONE", False, _reason("62315008", "Diarrhea"))
        + "</section></component>"
    )
    bundle, warnings = convert_document(cda(body=body))
    procedures = _by_id(bundle)

    refused = procedures["REFUSED"]
    assert refused["status"] == "not-done"
    assert refused["statusReason"] == {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "183944003",
                "display": "Procedure refused",
            }
        ]
    }
    assert "reasonCode" not in refused

    done = procedures["DONE"]
    assert done["status"] == "completed"
    assert "statusReason" not in done
    assert done["reasonCode"][0]["coding"][0]["code"] == "62315008"
    assert not warnings
    assert r4validator.validate(bundle) == []
