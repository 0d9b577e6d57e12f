"""MFN^M02 records apply in message order (MFN_M02.j2): a record without any role deletes
the sender's roles of set id 1 (a record replaces the record), unless a later record of
the same person in the same message writes that role again."""

from __future__ import annotations

from converter import Converter
from tests.mappings.test_mfn import LEROY_RPPS, deletions, entry_urls
from tests.support.hl7_edit import convert_one, message, resources

HEAD = [
    "MSH|^~\\&|RH|CHU-LYON^1.2.250.1.999.1.1^ISO|PASSERELLE|GHT|20240315103000+0100||"
    "MFN^M02^MFN_M02|R1|P|2.5",
    "MFI|PRA^Practitioner master file^HL70175||UPD|||AL",
]
STF = f"STF|LEROYP^LEROY Paul^L|{LEROY_RPPS}|LEROY^Paul^^^Dr^^L|MED|M|19720415|A"
PRA = "PRA|LEROYP^LEROY Paul^L||PH||Cardiologie|||20050901|CHU-LYON^HCL^L|||1"


def mfe(n: int) -> str:
    return f"MFE|MUP|R1-{n}|20240315103000+0100|LEROYP^LEROY Paul^L|CE"


def test_a_later_record_with_the_role_keeps_it(converter: Converter) -> None:
    bundle, _ = convert_one(converter, message([*HEAD, mfe(1), STF, mfe(2), STF, PRA]))
    [role] = resources(bundle, "PractitionerRole")
    assert role["code"] == [{"coding": [{"code": "PH"}]}] and role["active"] is True
    written = entry_urls(bundle, "PUT", "PractitionerRole")
    assert written == [f"PractitionerRole/{role['id']}"]
    # Only the ORG role of set id 1, which no record gives, is deleted.
    assert len(deletions(bundle)) == 1 and deletions(bundle) != written


def test_a_later_record_without_roles_deletes_it(converter: Converter) -> None:
    bundle, _ = convert_one(converter, message([*HEAD, mfe(1), STF, PRA, mfe(2), STF]))
    assert resources(bundle, "PractitionerRole") == []
    assert len(deletions(bundle)) == 2
