"""Patient accounting (BAR^P01/P02/P05/P06/P10/P12) and detailed financial transactions
(DFT^P03/P11), HL7 v2.5 chapter 6: roots BAR and DFT. The IG has no BAR, DFT nor FT1 map:
Patient, Encounter, Condition, Procedure, Coverage and RelatedPerson are written as ADT
writes them; the Account (PID-18) takes its status from the trigger event (P02 purge and
P06 end account: inactive), its coverage from IN1 and its guarantors from GT1; each FT1 is
a ChargeItem (FT1-6 CG billable, CD credit entered-in-error, payments and adjustments not
converted) naming the Account by its identifier: a DFT writes no Account (it carries no
account status). Until routed, every message here was refused (AR 200/201)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from converter import Converter
from tests.conftest import SHARED_DIR
from tests.support.fhirserver import FhirServer
from tests.support.hl7_edit import (
    convert_one,
    insert_after,
    lines,
    message,
    resources,
    segment,
    set_field,
)
from tests.support.r4validator import R4Validator

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
BAR = (SAMPLES / "BAR_P01_add-account.hl7").read_bytes()
DFT = (SAMPLES / "DFT_P03_charges.hl7").read_bytes()
CORPUS = SHARED_DIR / "corpus" / "hl7v2" / "ms-fhir-converter" / "input"
CORPUS_FILES = [
    f"{name}.hl7"
    for name in (
        "BAR-P01-01",
        "BAR-P01-02",
        "BAR-P02-01",
        "BAR-P02-02",
        "BAR-P12-01",
        "DFT-P03-01",
        "DFT-P11-01",
    )
]
CHU = "CHU-NANTES&1.2.250.1.999.2.1&ISO"
STATUS = "http://hl7.org/fhir/chargeitem-status"


def ref(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def one(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    (found,) = resources(bundle, rtype)
    return found


def valid(converter: Converter, r4validator: R4Validator, data: bytes, root: str) -> Any:
    conversion = converter.convert_message(data)
    assert conversion.root_template == f"hl7v2/messages/{root}.j2"
    assert r4validator.validate(conversion.bundle) == []
    return conversion


def charge(bundle: dict[str, Any], transaction_id: str) -> dict[str, Any]:
    (found,) = [
        c
        for c in resources(bundle, "ChargeItem")
        if transaction_id in [i["value"] for i in c.get("identifier", []) if "use" not in i]
    ]
    return found


def bar(event: str, *segments: str, structure: str | None = None) -> bytes:
    """A minimal BAR for the sample's patient: MSH, EVN, then ``segments``."""
    return message(
        [
            "MSH|^~\\&|PASTEL|CHU-NANTES^1.2.250.1.999.2.1^ISO|PASSERELLE|GHT-44|"
            f"20240920101500+0200||BAR^{event}^{structure or 'BAR_' + event}|BAR-{event}|P|2.5",
            f"EVN|{event}|20240920101500+0200",
            *segments,
        ]
    )


def pid(
    number: str = "0045213377", account: str = "CPT-2024-0042", name: str = "BERNARD^Lucas"
) -> str:
    return segment(
        "PID",
        {
            1: "1",
            3: f"{number}^^^{CHU}^PI",
            5: name,
            7: "19720604",
            8: "M",
            18: f"{account}^^^{CHU}^AN",
        },
    )


def pv1(visit: str = "2024009137") -> str:
    return segment("PV1", {1: "1", 2: "I", 3: f"URO^215^2^{CHU}", 19: f"{visit}^^^{CHU}^VN"})


# --- BAR ---------------------------------------------------------------------------------


def test_bar_p01_sample_account_visit_and_billing_facts(
    converter: Converter, r4validator: R4Validator
) -> None:
    bundle = valid(converter, r4validator, BAR, "BAR").bundle
    patient = one(bundle, "Patient")
    account = one(bundle, "Account")
    encounter = one(bundle, "Encounter")
    assert account["identifier"] == [
        {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                        "code": "AN",
                        "display": "Account number",
                    }
                ]
            },
            "system": "urn:oid:1.2.250.1.999.2.1",
            "value": "CPT-2024-0042",
        }
    ]
    assert account["status"] == "active"
    assert account["subject"] == [ref(patient)]
    # IN1 (AMO and AMC) → Account.coverage, in order.
    coverages = resources(bundle, "Coverage")
    assert [c["payor"][0] for c in coverages] and len(coverages) == 2
    assert account["coverage"] == [{"coverage": ref(c)} for c in coverages]
    # GT1 (spouse) → a RelatedPerson; the NK1 naming her too is the same RelatedPerson.
    (spouse,) = resources(bundle, "RelatedPerson")
    assert account["guarantor"] == [
        {
            "party": ref(spouse),
            "onHold": False,
            "period": {"start": "2024-09-12", "end": "2024-12-31"},
        }
    ]
    assert spouse["name"][0]["family"] == "BERNARD" and spouse["birthDate"] == "1975-02-21"
    assert {"system": "urn:oid:1.2.250.1.999.2.1", "value": "G-0045213377"}.items() <= spouse[
        "identifier"
    ][0].items()
    relationships = [c["code"] for r in spouse["relationship"] for c in r["coding"]]
    assert "SPO" in relationships and "C" in relationships
    # The visit lists the account; DG1 → Conditions (Encounter.diagnosis), PR1 → Procedure.
    assert encounter["account"] == [ref(account)]
    conditions = resources(bundle, "Condition")
    assert [c["code"]["coding"][0]["code"] for c in conditions] == ["N20.0", "I10"]
    assert [d["condition"] for d in encounter["diagnosis"]] == [ref(c) for c in conditions]
    procedure = one(bundle, "Procedure")
    assert procedure["code"]["coding"][0]["code"] == "JANM001"
    assert procedure["encounter"] == ref(encounter)


@pytest.mark.parametrize(
    ("event", "status"),
    [
        ("P01", "active"),
        ("P05", None),
        ("P06", "inactive"),
        ("P12", None),
        ("P10", None),
    ],
)
def test_account_status_follows_the_trigger_event(
    converter: Converter, r4validator: R4Validator, event: str, status: str | None
) -> None:
    """P05 without IN1 and GT1, P10 and P12 (coding updates) write no Account: they name
    it by identifier (test_financial_s20), so they cannot drop its coverages."""
    extra = [segment("DG1", {1: "1", 3: "N20.0^Calcul du rein^CIM10", 6: "F"})]
    if event == "P10":
        extra.append(segment("GP1", {1: "1"}))
    data = bar(event, pid(), pv1(), *extra)
    bundle = valid(converter, r4validator, data, "BAR").bundle
    if status is None:
        assert resources(bundle, "Account") == []
        assert one(bundle, "Encounter")["account"] == [ACCOUNT]
    else:
        account = one(bundle, "Account")
        assert account["status"] == status
        assert one(bundle, "Encounter")["account"] == [ref(account)]
    assert one(bundle, "Condition")["encounter"] == ref(one(bundle, "Encounter"))


def test_bar_p02_purges_each_patient_group_account(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = bar(
        "P02",
        pid(),
        pv1(),
        pid("0045219999", "CPT-2024-0077", "MOREAU^Inès"),
        pv1("2024009555"),
    )
    bundle = valid(converter, r4validator, data, "BAR").bundle
    patients = resources(bundle, "Patient")
    accounts = resources(bundle, "Account")
    encounters = resources(bundle, "Encounter")
    assert len(patients) == len(accounts) == len(encounters) == 2
    assert [a["status"] for a in accounts] == ["inactive", "inactive"]
    assert [a["subject"] for a in accounts] == [[ref(p)] for p in patients]
    assert [e["subject"] for e in encounters] == [ref(p) for p in patients]
    assert [e["account"] for e in encounters] == [[ref(a)] for a in accounts]


def test_guarantor_self_or_organization(converter: Converter, r4validator: R4Validator) -> None:
    """GT1-3 guarantor name is required (v2.5 6.5.5.3): an organization guarantor's GT1-3
    holds the organization's name, its GT1-21 the organization. It is an Organization,
    not a RelatedPerson named like a company."""
    data = bar(
        "P05",
        pid(),
        pv1(),
        segment("GT1", {1: "1", 3: "BERNARD^Lucas", 11: "SEL^Assuré(e)^HL70063"}),
        segment(
            "GT1",
            {
                1: "2",
                3: "Mutuelle des Pays de la Loire",
                10: "O",
                21: "Mutuelle des Pays de la Loire",
                22: "Y",
            },
        ),
    )
    bundle = valid(converter, r4validator, data, "BAR").bundle
    account = one(bundle, "Account")
    (organization,) = [
        o
        for o in resources(bundle, "Organization")
        if o.get("name") == "Mutuelle des Pays de la Loire"
    ]
    assert account["guarantor"] == [
        {"party": ref(one(bundle, "Patient"))},
        {"party": ref(organization), "onHold": True},
    ]
    assert resources(bundle, "RelatedPerson") == []


def test_bar_without_account_number_warns(converter: Converter) -> None:
    data = bar(
        "P01", segment("PID", {1: "1", 3: f"0045213377^^^{CHU}^PI", 5: "BERNARD^Lucas"}), pv1()
    )
    bundle, warnings = convert_one(converter, data)
    assert resources(bundle, "Account") == []
    assert "account" not in one(bundle, "Encounter")
    assert any("PID-18" in w for w in warnings)


def test_adt_account_is_unchanged(converter: Converter) -> None:
    """Account.j2's new inputs are optional: an ADT's Account keeps the IG constant."""
    adt = (SAMPLES / "ADT_A01_admission-full.hl7").read_bytes()
    bundle, _ = convert_one(converter, adt)
    account = one(bundle, "Account")
    assert account["status"] == "active"
    assert "coverage" not in account and "guarantor" not in account


# --- DFT ---------------------------------------------------------------------------------


ACCOUNT = {
    "type": "Account",
    "identifier": {"system": "urn:oid:1.2.250.1.999.2.1", "value": "CPT-2024-0042"},
}
CREDIT_WARNING = (
    ": a credit (FT1-6 CD) is read as voiding the ChargeItem of the same transaction ID "
    "(FT1-2), a sender convention: it voids the whole charge, even for a partial credit, "
    "and voids nothing if no charge carries that FT1-2"
)


def test_dft_p03_sample_charge_items(converter: Converter, r4validator: R4Validator) -> None:
    conversion = valid(converter, r4validator, DFT, "DFT")
    bundle = conversion.bundle
    patient = one(bundle, "Patient")
    encounter = one(bundle, "Encounter")
    # A DFT writes no Account (see test_dft_does_not_reopen_an_ended_account): the charges
    # and the visit name the PID-18 account by its identifier.
    assert resources(bundle, "Account") == []
    assert encounter["account"] == [ACCOUNT]
    items = resources(bundle, "ChargeItem")
    assert len(items) == 3
    lithotripsy = charge(bundle, "ACT-2024-118734")
    assert lithotripsy["status"] == "billable"
    assert {
        "use": "secondary",
        "type": {"text": "transaction batch ID"},
        "value": "LOT-20240916-03",
    } in (lithotripsy["identifier"])
    assert lithotripsy["code"] == {
        "coding": [
            {
                "system": "https://smt.esante.gouv.fr/terminologie-ccam",
                "code": "JANM001",
                "display": "Lithotritie extracorporelle du rein",
            }
        ]
    }
    assert lithotripsy["subject"] == ref(patient)
    assert lithotripsy["context"] == ref(encounter)
    assert lithotripsy["account"] == [ACCOUNT]
    assert lithotripsy["occurrenceDateTime"] == "2024-09-13T09:30:00+02:00"
    assert lithotripsy["enteredDate"] == "2024-09-16T18:05:00+02:00"
    assert lithotripsy["quantity"] == {"value": 1}
    assert lithotripsy["priceOverride"] == {"value": Decimal("357.12"), "currency": "EUR"}
    assert lithotripsy["reason"][0]["coding"][0]["code"] == "N20.0"
    # The FINANCIAL_PROCEDURE PR1 is the charged service; it is the BAR's Procedure too.
    procedure = one(bundle, "Procedure")
    assert lithotripsy["service"] == [ref(procedure)]
    assert procedure["id"] == one(convert_one(converter, BAR)[0], "Procedure")["id"]
    practitioners = {p["id"]: p for p in resources(bundle, "Practitioner")}
    (performer,) = lithotripsy["performer"]
    assert performer["function"]["coding"][0]["code"] == "PRF"
    assert (
        practitioners[performer["actor"]["reference"].split("/")[1]]["name"][0]["family"]
        == "GAUTIER"
    )
    enterer = practitioners[lithotripsy["enterer"]["reference"].split("/")[1]]
    assert enterer["name"][0]["family"] == "DUVAL"
    consultation = charge(bundle, "ACT-2024-118735")
    assert consultation["code"]["coding"][0] == {
        "code": "CS",
        "display": "Consultation de spécialiste",
    }
    ordering = [p for p in consultation["performer"] if p["function"]["coding"][0]["code"] == "OP"]
    assert ordering and ordering[0]["function"]["coding"][0]["system"].endswith("v2-0443")
    assert "service" not in consultation
    # FT1-6 CD: a credit reversing an earlier charge voids it, a convention said aloud.
    assert charge(bundle, "ACT-2024-118101")["status"] == "entered-in-error"
    assert conversion.warnings == ("FT1 3" + CREDIT_WARNING,)


def test_a_credit_with_the_charge_transaction_id_voids_that_charge_item(
    converter: Converter, r4validator: R4Validator
) -> None:
    charged, _ = convert_one(converter, DFT)
    credit = set_field(DFT, "FT1", 6, "CD", occurrence=1)
    credit = set_field(credit, "MSH", 10, "CHU-DFT-20240917-000001")
    reversed_bundle = valid(converter, r4validator, credit, "DFT").bundle
    before = charge(charged, "ACT-2024-118734")
    after = charge(reversed_bundle, "ACT-2024-118734")
    assert before["id"] == after["id"]
    assert (before["status"], after["status"]) == ("billable", "entered-in-error")


def test_a_credit_without_transaction_id_warns(converter: Converter) -> None:
    data = set_field(DFT, "FT1", 2, "", occurrence=3)
    bundle, warnings = convert_one(converter, data)
    credits = [c for c in resources(bundle, "ChargeItem") if c["status"] == "entered-in-error"]
    assert len(credits) == 1
    assert any("FT1 3" in w and "FT1-2" in w for w in warnings)


@pytest.mark.parametrize("kind", ["PY", "AJ", "CO", "ZZ"])
def test_payments_and_adjustments_are_not_charge_items(converter: Converter, kind: str) -> None:
    data = set_field(DFT, "FT1", 6, kind, occurrence=2)
    bundle, warnings = convert_one(converter, data)
    ids = [i["value"] for c in resources(bundle, "ChargeItem") for i in c["identifier"][:1]]
    assert ids == ["ACT-2024-118734", "ACT-2024-118101"]
    assert any(f"transaction type {kind}" in w for w in warnings)


def test_ft1_without_type_is_unknown(converter: Converter, r4validator: R4Validator) -> None:
    data = set_field(DFT, "FT1", 6, "", occurrence=1)
    bundle = valid(converter, r4validator, data, "DFT").bundle
    assert charge(bundle, "ACT-2024-118734")["status"] == "unknown"


def test_unit_amount_period_and_ft1_25_procedure(
    converter: Converter, r4validator: R4Validator
) -> None:
    data = set_field(DFT, "FT1", 11, "", occurrence=2)  # only the unit amount
    data = set_field(data, "FT1", 4, "20240912110000+0200^20240912113000+0200", occurrence=2)
    data = set_field(data, "FT1", 25, "CS^Consultation de spécialiste^NGAP", occurrence=2)
    data = set_field(data, "FT1", 11, "", occurrence=3)
    data = set_field(data, "FT1", 10, "2", occurrence=3)  # twice the unit amount: no total given
    bundle = valid(converter, r4validator, data, "DFT").bundle
    consultation = charge(bundle, "ACT-2024-118735")
    assert consultation["priceOverride"] == {"value": Decimal("30.00"), "currency": "EUR"}
    assert consultation["occurrencePeriod"] == {
        "start": "2024-09-12T11:00:00+02:00",
        "end": "2024-09-12T11:30:00+02:00",
    }
    # No PR1 in its FINANCIAL group: FT1-25 gives the charged Procedure.
    (service,) = consultation["service"]
    procedure = {p["id"]: p for p in resources(bundle, "Procedure")}[
        service["reference"].split("/")[1]
    ]
    assert procedure["code"]["coding"][0]["code"] == "CS"
    assert procedure["status"] == "unknown"
    assert procedure["performedDateTime"] == "2024-09-12T11:00:00+02:00"
    assert "priceOverride" not in charge(bundle, "ACT-2024-118101")


def test_dft_v23_transaction_date_is_a_timestamp(converter: Converter) -> None:
    """FT1-4 is a TS up to v2.4 (its second component the degree of precision) and a DR
    from v2.5 (start ^ end): the same text reads as one instant or as a period."""
    data = set_field(DFT, "FT1", 4, "20240913093000+0200^20240915100000+0200", occurrence=1)
    bundle_25, _ = convert_one(converter, data)
    assert charge(bundle_25, "ACT-2024-118734")["occurrencePeriod"] == {
        "start": "2024-09-13T09:30:00+02:00",
        "end": "2024-09-15T10:00:00+02:00",
    }
    data = set_field(set_field(data, "MSH", 12, "2.3"), "MSH", 9, "DFT^P03")
    bundle_23, _ = convert_one(converter, data)
    item = charge(bundle_23, "ACT-2024-118734")
    assert item["occurrenceDateTime"] == "2024-09-13T09:30:00+02:00"
    assert "occurrencePeriod" not in item


def dft(*ft1s: dict[int, str], control: str = "CHU-DFT-20240916-000107") -> bytes:
    """The sample DFT's MSH, EVN, PID and PV1, then an FT1 per field dict."""
    head = [line for line in lines(DFT) if line[:3] in ("MSH", "EVN", "PID", "PV1")]
    data = message([*head, *(segment("FT1", f) for f in ft1s)])
    return set_field(data, "MSH", 10, control)


LITHO = {
    1: "1",
    2: "ACT-2024-118734",
    4: "20240913093000+0200",
    6: "CG",
    7: "JANM001^Lithotritie extracorporelle du rein^CCAM",
    10: "1",
    11: "357.12&EUR",
}
VISIT = {**LITHO, 2: "", 7: "C^Consultation^NGAP", 11: "25.00&EUR"}


@pytest.mark.parametrize("credit_first", [False, True])
def test_a_charge_and_its_credit_in_one_message_leave_the_credit(
    converter: Converter, r4validator: R4Validator, credit_first: bool
) -> None:
    """Same FT1-2: one ChargeItem id. The merge kept the first one emitted, so a CG
    before its CD left the charge billable; the credit now wins in either order."""
    credit = {**LITHO, 6: "CD", 11: "-357.12&EUR"}
    pair = (credit, LITHO) if credit_first else (LITHO, credit)
    data = dft(*({**f, 1: str(n)} for n, f in enumerate(pair, 1)))
    conversion = valid(converter, r4validator, data, "DFT")
    (item,) = resources(conversion.bundle, "ChargeItem")
    assert item["status"] == "entered-in-error"
    assert item["id"] == charge(convert_one(converter, DFT)[0], "ACT-2024-118734")["id"]
    charge_at, credit_at = (2, 1) if credit_first else (1, 2)
    assert sorted(conversion.warnings) == sorted(
        [
            f"FT1 {credit_at}" + CREDIT_WARNING,
            f"FT1 {charge_at}: the charge is reversed by the credit FT1 {credit_at} of the "
            "same message (same FT1-2): only the credit is written",
        ]
    )


def test_every_credit_warns_even_one_that_voids_nothing(converter: Converter) -> None:
    """A CD with an FT1-2 of its own voids no charge: an entered-in-error ChargeItem of its
    own. Reading CD as "void the charge of this FT1-2" is a sender convention, said aloud."""
    bundle, warnings = convert_one(converter, dft({**LITHO, 2: "ACT-2024-200001", 6: "CD"}))
    assert [c["status"] for c in resources(bundle, "ChargeItem")] == ["entered-in-error"]
    assert warnings == ["FT1 1" + CREDIT_WARNING]


def test_charges_without_transaction_id_are_never_merged(converter: Converter) -> None:
    """Without FT1-2 no identity: FT1-1 is only a position, so [visit, FT1-4, FT1-7,
    FT1-1] merged two identical acts of one message, and a second consultation on the
    same day (another message) overwrote the first."""
    data = dft(VISIT, VISIT)
    first = [c["id"] for c in resources(convert_one(converter, data)[0], "ChargeItem")]
    assert len(set(first)) == 2
    resent = [c["id"] for c in resources(convert_one(converter, data)[0], "ChargeItem")]
    assert resent == first  # the same message again: the same ids
    later = dft(VISIT, control="CHU-DFT-20240917-000200")
    (other,) = resources(convert_one(converter, later)[0], "ChargeItem")
    assert other["id"] not in first


def test_transaction_id_without_authority_is_the_sending_application_s(
    converter: Converter,
) -> None:
    """FT1-2 is numbered by the sending system (v2.5 6.5.1.2): two applications of one
    facility sending "1000" post two transactions. With an authority (v2.6 CX.4) the
    authority alone scopes it."""
    pastel = dft({**LITHO, 2: "1000"})
    ris = set_field(pastel, "MSH", 3, "RIS^1.2.250.1.999.2.30^ISO")
    ids = {one(convert_one(converter, d)[0], "ChargeItem")["id"] for d in (pastel, ris)}
    assert len(ids) == 2
    cx = "1000^^^PASTEL&1.2.250.1.999.2.20&ISO"
    with_authority = [
        set_field(set_field(d, "FT1", 2, cx), "MSH", 12, "2.6") for d in (pastel, ris)
    ]
    ids = {one(convert_one(converter, d)[0], "ChargeItem")["id"] for d in with_authority}
    assert len(ids) == 1


def test_ft1_25_procedure_only_beside_a_charge_item(converter: Converter) -> None:
    procedure = {25: "JANM001^Lithotritie extracorporelle du rein^CCAM"}
    bundle, _ = convert_one(converter, dft({**LITHO, **procedure}))
    (service,) = one(bundle, "ChargeItem")["service"]
    assert service == ref(one(bundle, "Procedure"))
    payment, warnings = convert_one(converter, dft({**LITHO, **procedure, 6: "PY"}))
    assert resources(payment, "ChargeItem") == resources(payment, "Procedure") == []
    assert warnings == [
        "FT1 1: transaction type PY (FT1-6) is not a charge or a credit: no ChargeItem"
    ]


def test_ft1_naming_nothing_is_skipped_not_the_message(
    converter: Converter, r4validator: R4Validator
) -> None:
    """ChargeItem.code is required: an FT1 without FT1-7, FT1-8 and FT1-25 rejected the
    whole message; now only that charge is left out, with a warning (no values)."""
    data = dft(LITHO, {1: "2", 2: "ACT-2024-118999", 4: "20240913", 6: "CG", 11: "12.00&EUR"})
    conversion = valid(converter, r4validator, data, "DFT")
    assert [c["identifier"][0]["value"] for c in resources(conversion.bundle, "ChargeItem")] == [
        "ACT-2024-118734"
    ]
    assert conversion.warnings == (
        "FT1 2: no transaction code (FT1-7), description (FT1-8) nor procedure code (FT1-25): "
        "nothing names the charge, no ChargeItem",
    )


def test_dft_organization_guarantor_is_an_organization(converter: Converter) -> None:
    gt1 = segment("GT1", {1: "1", 3: "ACME SA", 10: "E", 21: "ACME SA^^^^^^^^^123456789"})
    bundle, _ = convert_one(converter, insert_after(DFT, "IN1|", gt1))
    assert resources(bundle, "RelatedPerson") == []
    assert [o for o in resources(bundle, "Organization") if o.get("name") == "ACME SA"]


def test_dft_p11_group_diagnoses_support_their_charge(
    converter: Converter, r4validator: R4Validator
) -> None:
    groups = lines(DFT)
    data = set_field(message(groups), "MSH", 9, "DFT^P11^DFT_P11")
    data = insert_after(
        data, "FT1|2|", segment("DG1", {1: "1", 3: "R10.4^Douleur abdominale^CIM10", 6: "F"})
    )
    bundle = valid(converter, r4validator, data, "DFT").bundle
    conditions = {c["code"]["coding"][0]["code"]: c for c in resources(bundle, "Condition")}
    consultation = charge(bundle, "ACT-2024-118735")
    assert consultation["supportingInformation"] == [ref(conditions["R10.4"])]
    # …and it is a diagnosis of the visit as well.
    diagnosed = [d["condition"] for d in one(bundle, "Encounter")["diagnosis"]]
    assert ref(conditions["R10.4"]) in diagnosed


# --- corpus -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_messages_convert_and_validate(
    converter: Converter, r4validator: R4Validator, name: str
) -> None:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    root = name.split("-")[0]
    (raw,) = converter.split(path.read_bytes())  # LF-separated: split() reads the lines
    bundle = valid(converter, r4validator, raw.data, root).bundle
    if name.startswith("BAR-P12"):
        # A coding update names the Account by identifier (no IN1 nor GT1 to write).
        assert resources(bundle, "Account") == []
        assert one(bundle, "Encounter")["account"][0]["identifier"]["value"] == "4000776"
    elif root == "BAR":
        account = one(bundle, "Account")
        assert account["identifier"][0]["value"] == "4000776"
        assert account["status"] == ("inactive" if name.startswith("BAR-P02") else "active")
    else:
        assert resources(bundle, "Account") == []
        items = resources(bundle, "ChargeItem")
        assert len(items) == 2
        assert all(i["status"] == "billable" for i in items)
        assert all(i["account"][0]["identifier"]["value"] == "4000776" for i in items)
        assert items[0]["priceOverride"] == {"value": Decimal("100"), "currency": "USD"}
        # FT1-7 is FT1-25's code: the FT1-26 modifier post-coordinates it.
        assert items[0]["code"]["coding"][0]["code"] == "71045:26"


# --- on a FHIR server ---------------------------------------------------------------------


def test_on_a_fhir_server_bar_then_dft_share_patient_and_account(
    converter: Converter, fhir_server: FhirServer
) -> None:
    fhir_server.reset()
    fhir_server.transact(converter.convert_message(BAR).bundle)
    fhir_server.transact(converter.convert_message(DFT).bundle)
    resent = set_field(DFT, "MSH", 10, "CHU-DFT-20240916-000108")
    fhir_server.transact(converter.convert_message(resent).bundle)
    assert fhir_server.count("Patient") == 1
    assert fhir_server.count("Account") == 1
    assert fhir_server.count("Encounter") == 1
    (patient,) = [e["resource"] for e in fhir_server.search("Patient")["entry"]]
    (account,) = [e["resource"] for e in fhir_server.search("Account")["entry"]]
    # The BAR's Account, untouched by the DFTs (which name it by its identifier).
    assert account["subject"] == [{"reference": f"Patient/{patient['id']}"}]
    assert account["identifier"][0]["value"] == ACCOUNT["identifier"]["value"]
    assert len(account["coverage"]) == 2 and len(account["guarantor"]) == 1
    items = [e["resource"] for e in fhir_server.search("ChargeItem")["entry"]]
    assert len(items) == 3
    for item in items:
        assert item["subject"]["reference"] == f"Patient/{patient['id']}"
        assert item["account"] == [ACCOUNT]
    statuses = sorted(i["status"] for i in items)
    assert statuses == ["billable", "billable", "entered-in-error"]


def test_on_a_fhir_server_a_dft_does_not_reopen_an_ended_account(
    converter: Converter, fhir_server: FhirServer, r4validator: R4Validator
) -> None:
    """A DFT carries no account status (HL7 v2.5 ch. 6): writing the Account (status 1..1
    in R4) set a BAR^P06-ended account back to active and dropped its coverages and
    guarantors. The DFT's charges name it by identifier; the BAR's Account stays."""
    fhir_server.reset()
    ended = set_field(set_field(BAR, "MSH", 9, "BAR^P06^BAR_P06"), "EVN", 1, "P06")
    fhir_server.transact(converter.convert_message(ended).bundle)
    late_charge = valid(converter, r4validator, DFT, "DFT").bundle
    fhir_server.transact(late_charge)
    (account,) = [e["resource"] for e in fhir_server.search("Account")["entry"]]
    assert account["status"] == "inactive"
    assert len(account["coverage"]) == 2 and len(account["guarantor"]) == 1
    assert fhir_server.count("ChargeItem") == 3
