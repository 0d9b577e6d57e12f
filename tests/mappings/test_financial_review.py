"""Review of the patient accounting roots (BAR, DFT) and their resources: procedure code
modifiers (PR1-16, the IG's row; FT1-26 the same for FT1-25), the currency of a charge's
price (Money.currency is bound to ISO 4217), a unit amount that gives no price, and the
BAR billing segments no template converts. Each of these was lost or written as sent
without a word before."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from converter import Converter
from tests.mappings.test_financial import BAR, LITHO, bar, dft, one, pid, pv1, valid
from tests.support.hl7_edit import convert_one, lines, message, resources, segment, set_field
from tests.support.r4validator import R4Validator

CPT = "http://www.ama-assn.org/go/cpt"
XRAY = "71045^Xray exam chest 1 view^C4"


def codes(concept: dict[str, Any]) -> list[str]:
    return [c["code"] for c in concept["coding"]]


# --- PR1-16 / FT1-26 modifiers --------------------------------------------------------


def test_pr1_16_modifiers_post_coordinate_the_procedure_code(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG PR1[Procedure] row 16: code[1] is PR1-3.1 + ":" + each PR1-16.1. They were
    dropped: 71045 billed whole instead of its professional component (26)."""
    data = set_field(BAR, "PR1", 3, XRAY)
    data = set_field(data, "PR1", 16, "26^Professional component^CPTM~LT")
    data = set_field(data, "PR1", 19, "")  # identified by patient, code, date, modifiers
    procedure = one(valid(converter, r4validator, data, "BAR").bundle, "Procedure")
    assert procedure["code"]["coding"] == [
        {"system": CPT, "code": "71045:26:LT", "display": "Xray exam chest 1 view"}
    ]
    # The modifiers are part of the identity: the left and the right side on one date are
    # two procedures, not one overwritten by the other.
    right = set_field(data, "PR1", 16, "26^Professional component^CPTM~RT")
    other = one(convert_one(converter, right)[0], "Procedure")
    assert other["code"]["coding"][0]["code"] == "71045:26:RT"
    assert other["id"] != procedure["id"]


def test_ft1_26_modifiers_go_where_ft1_25_goes(
    converter: Converter, r4validator: R4Validator
) -> None:
    """FT1-26 modifies FT1-25 (v2.5 6.5.1.26): without FT1-7 the charge's code, and the
    FT1-25 Procedure, are FT1-25 post-coordinated as the IG writes PR1-16."""
    data = dft({**LITHO, 7: "", 25: XRAY, 26: "26~TC"})
    bundle = valid(converter, r4validator, data, "DFT").bundle
    item = one(bundle, "ChargeItem")
    procedure = one(bundle, "Procedure")
    assert item["code"]["coding"] == [
        {"system": CPT, "code": "71045:26:TC", "display": "Xray exam chest 1 view"}
    ]
    assert item["service"] == [{"reference": f"Procedure/{procedure['id']}"}]
    assert codes(procedure["code"]) == ["71045:26:TC"]
    # FT1-7 (the chargemaster's code) stays as sent; the FT1-25 Procedure has them.
    bundle, warnings = convert_one(converter, dft({**LITHO, 25: XRAY, 26: "26"}))
    assert codes(one(bundle, "ChargeItem")["code"]) == ["JANM001"]
    assert codes(one(bundle, "Procedure")["code"]) == ["71045:26"]
    assert warnings == []


def test_ft1_26_modifiers_written_nowhere_are_said(converter: Converter) -> None:
    bundle, warnings = convert_one(converter, dft({**LITHO, 26: "26"}))
    assert codes(one(bundle, "ChargeItem")["code"]) == ["JANM001"]
    assert warnings == [
        "FT1 1: the procedure code modifiers (FT1-26) are not converted: FT1-25, the code "
        "they modify, is empty or written nowhere (the charge's code is FT1-7, another code, "
        "and its service a PR1)"
    ]


# --- price -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "currency", "written"),
    [(11, "EURO", None), (11, "€", None), (12, "EU", None), (12, "eur", "EUR")],
)
def test_a_currency_that_is_not_iso_4217_is_left_out_with_a_warning(
    converter: Converter, r4validator: R4Validator, field: int, currency: str, written: str | None
) -> None:
    """Money.currency is bound (required) to ISO 4217: "EURO" was written as sent, an
    invalid code a server or a warehouse grouping by currency cannot use. The amount
    stays; no currency is assumed in its place. An ISO code in lower case is one."""
    data = dft({**LITHO, 11: "", field: f"357.12&{currency}"})
    conversion = valid(converter, r4validator, data, "DFT")
    price = one(conversion.bundle, "ChargeItem")["priceOverride"]
    assert price == {"value": Decimal("357.12"), **({"currency": written} if written else {})}
    warning = (
        f"FT1 1: the currency of FT1-{field} (MO.2) is not an ISO 4217 code: the price is "
        "written without currency"
    )
    assert conversion.warnings == (() if written else (warning,))


def test_a_unit_amount_for_several_units_gives_no_price_and_says_so(
    converter: Converter,
) -> None:
    bundle, warnings = convert_one(converter, dft({**LITHO, 10: "2", 11: "", 12: "10.00&EUR"}))
    item = one(bundle, "ChargeItem")
    assert "priceOverride" not in item and item["quantity"] == {"value": 2}
    assert warnings == [
        "FT1 1: a unit amount (FT1-12) for a quantity (FT1-10) other than 1 and no extended "
        "amount (FT1-11): no price (R4 ChargeItem has no unit price)"
    ]


# --- BAR segments not converted ----------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "extra", "named"),
    [
        ("P01", [segment("ACC", {1: "20240901", 2: "AUTO^Accident^HL70050"})], "ACC"),
        ("P12", [segment("DRG", {1: "0123^Calcul rénal^HCFADRG"})], "DRG"),
        (
            "P10",
            [segment("GP1", {1: "A"}), segment("PR1", {1: "1", 3: XRAY, 5: "20240913"})],
            "GP1",
        ),
    ],
)
def test_bar_billing_segments_not_converted_are_named(
    converter: Converter, event: str, extra: list[str], named: str
) -> None:
    _, warnings = convert_one(converter, bar(event, pid(), pv1(), *extra))
    assert f"BAR^{event}: {named} not converted (no IG map)" in warnings
    _, quiet = convert_one(converter, bar(event, pid(), pv1()))
    assert not [w for w in quiet if "not converted" in w]


# --- IN1 -------------------------------------------------------------------------------


def test_in1_2_alternate_health_plan_id_is_a_second_identifier(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG IN1[Coverage] row 2, CWE[Identifier]: CWE.4-6 is identifier[2]; it was dropped."""
    plan = "AMO^Assurance Maladie Obligatoire^L^01^Régime général^CNAM"
    data = set_field(BAR, "IN1", 2, plan)
    coverage = resources(valid(converter, r4validator, data, "BAR").bundle, "Coverage")[0]
    assert [i["value"] for i in coverage["identifier"]] == ["AMO", "01"]


# --- BAR without a patient ---------------------------------------------------------------


def test_bar_without_patient_says_what_it_did_not_convert(converter: Converter) -> None:
    """DFT and ADT warn when no PID names a patient; a BAR dropped its visit, coverages
    and guarantors without a word (an AA for a message of which nothing was written)."""
    data = message([line for line in lines(BAR) if not line.startswith("PID")])
    bundle, warnings = convert_one(converter, data)
    assert resources(bundle, "Account") == resources(bundle, "Coverage") == []
    assert warnings == [
        "no patient (PID) in the message: PV1, IN1, GT1, NK1, AL1, DG1, OBX and PR1 "
        "segments not converted"
    ]
    purge = bar("P02", pid(), pv1(), "PID|2", pv1("2024009555"))
    bundle, warnings = convert_one(converter, purge)
    assert len(resources(bundle, "Account")) == 1
    assert (
        "no patient (PID) in patient group 2: PV1, IN1, GT1, NK1, AL1, DG1, OBX and PR1 "
        "segments not converted"
    ) in warnings


def test_in1_16_insured_other_than_the_patient_is_the_subscriber(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IG IN1[Coverage] row 16: IN1-16 → subscriber(RelatedPerson) when IN1-17 is not
    the patient. A child on a parent's policy had a Coverage without subscriber."""
    data = set_field(BAR, "IN1", 16, "BERNARD^Claire^^^Mme^^L", occurrence=2)
    data = set_field(data, "IN1", 17, "SPO^Conjoint^HL70063", occurrence=2)
    data = set_field(data, "IN1", 18, "19750221", occurrence=2)
    bundle = valid(converter, r4validator, data, "BAR").bundle
    own, spouse_policy = resources(bundle, "Coverage")
    assert own["subscriber"] == {"reference": f"Patient/{one(bundle, 'Patient')['id']}"}
    # The insured spouse is the RelatedPerson the sample's GT1 and NK1 already name.
    (spouse,) = resources(bundle, "RelatedPerson")
    assert spouse_policy["subscriber"] == {"reference": f"RelatedPerson/{spouse['id']}"}
    assert spouse["name"][0]["family"] == "BERNARD" and spouse["birthDate"] == "1975-02-21"


def test_in1_16_without_relationship_gives_no_related_person(
    converter: Converter, r4validator: R4Validator
) -> None:
    """IN1-17 empty, IN1-16 repeating the patient's name (what many senders write when the
    patient is the insured): no RelatedPerson that would be the patient himself."""
    data = set_field(BAR, "IN1", 16, "DURAND^Paul", occurrence=2)
    data = set_field(data, "IN1", 17, "", occurrence=2)
    bundle = valid(converter, r4validator, data, "BAR").bundle
    assert all(p["name"][0].get("family") != "DURAND" for p in resources(bundle, "RelatedPerson"))
    _, second = resources(bundle, "Coverage")
    assert "subscriber" not in second
