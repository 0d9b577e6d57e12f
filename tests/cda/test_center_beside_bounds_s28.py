"""Session 28: an IVL_TS center beside low / high is their middle, not the time.

Procedure, ServiceRequest and DeviceUseStatement read an effectiveTime's center even
beside low and high (some generators write all three): the statement became a single
performedDateTime / occurrenceDateTime / timingDateTime at the center and its period was
lost. They now read the point as time.point does (HL7 V3 Data Types, IVL.center: a
center alone names that moment), so low / high give the Period as they do without a
center; a center alone is still the moment (sessions 25-27).

A center with a ``<width>`` (a PQ of time) was read as the moment too: it is the interval
[center - width/2, center + width/2] (HL7 V3 Data Types R1, IVL). time.Period and those
three templates now write it as a Period when its bounds are exact at the center's
precision (the center_bounds filter), and keep the center otherwise.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.r4validator import R4Validator

from ._support import cda, section
from .test_centers_and_implants_s26 import _supply
from .test_time_centers_s27 import EXPECTED as S27_EXPECTED
from .test_time_centers_s27 import HL7_TIME, _convert_valid, _document, _id, _one, _template, _times

SNOMED = "2.16.840.1.113883.6.96"
PROCEDURES = ("2.16.840.1.113883.10.20.22.2.7.1", "47519-4")
PLAN_OF_TREATMENT = ("2.16.840.1.113883.10.20.22.2.10", "18776-5")
MEDICAL_EQUIPMENT = ("2.16.840.1.113883.10.20.22.2.23", "46264-8")

LOW, CENTER, HIGH = "20240305100000+0100", "20240305110000+0100", "20240305120000+0100"
START, MIDDLE, END = (
    "2024-03-05T10:00:00+01:00",
    "2024-03-05T11:00:00+01:00",
    "2024-03-05T12:00:00+01:00",
)


def _ivl(*parts: tuple[str, str]) -> str:
    """An IVL_TS effectiveTime of these (name, value) children: low, center, high."""
    children = "".join(f'<{name} value="{value}"/>' for name, value in parts)
    return f'<effectiveTime xsi:type="IVL_TS">{children}</effectiveTime>'


ALL_THREE = _ivl(("low", LOW), ("center", CENTER), ("high", HIGH))
LOW_AND_CENTER = _ivl(("low", LOW), ("center", CENTER))
CENTER_AND_HIGH = _ivl(("center", CENTER), ("high", HIGH))
CENTER_ALONE = _ivl(("center", CENTER))


def _procedure(time: str) -> str:
    return section(
        *PROCEDURES,
        '<entry><procedure classCode="PROC" moodCode="EVN">'
        + _template("14")
        + _id("PROC-28")
        + f'<code code="80146002" codeSystem="{SNOMED}" displayName="Appendectomy"/>'
        + f'<statusCode code="completed"/>{time}</procedure></entry>',
    )


def _planned(time: str) -> str:
    return section(
        *PLAN_OF_TREATMENT,
        '<entry><procedure classCode="PROC" moodCode="RQO">'
        + _template("41")
        + _id("PLAN-28")
        + f'<code code="73761001" codeSystem="{SNOMED}" displayName="Colonoscopy"/>'
        + f'<statusCode code="active"/>{time}</procedure></entry>',
    )


def _equipment(time: str) -> str:
    return section(*MEDICAL_EQUIPMENT, _supply(time))


#: (document for a time, resource type, element name without its [x] type)
KINDS = (
    (_procedure, "Procedure", "performed"),
    (_planned, "ServiceRequest", "occurrence"),
    (_equipment, "DeviceUseStatement", "timing"),
)


def _timed(resource: dict[str, Any], element: str) -> dict[str, Any]:
    """The resource's ``element[x]``, by its full name."""
    return {k: v for k, v in resource.items() if k.lstrip("_").startswith(element)}


@pytest.mark.parametrize(("body", "kind", "element"), KINDS, ids=[k[1] for k in KINDS])
@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (ALL_THREE, {"Period": {"start": START, "end": END}}),
        (LOW_AND_CENTER, {"Period": {"start": START}}),
        (CENTER_AND_HIGH, {"Period": {"end": END}}),
        (CENTER_ALONE, {"DateTime": MIDDLE}),
    ],
    ids=["low-center-high", "low-center", "center-high", "center-alone"],
)
def test_a_center_beside_bounds_leaves_the_period(
    body: Any,
    kind: str,
    element: str,
    time: str,
    expected: dict[str, Any],
    r4validator: R4Validator,
) -> None:
    """low / high are the period, the center beside them only its middle: the same
    Period as without the center. A center alone stays the moment."""
    bundle = _convert_valid(cda(body=body(time)), r4validator)
    timed = _timed(_one(bundle, kind), element)
    assert timed == {element + suffix: value for suffix, value in expected.items()}


@pytest.mark.parametrize(("body", "kind", "element"), KINDS, ids=[k[1] for k in KINDS])
def test_a_center_changes_nothing_beside_low_and_high(
    body: Any, kind: str, element: str, r4validator: R4Validator
) -> None:
    """The resource is the one written without the center."""
    without = _ivl(("low", LOW), ("high", HIGH))
    with_center = _one(_convert_valid(cda(body=body(ALL_THREE)), r4validator), kind)
    assert with_center == _one(_convert_valid(cda(body=body(without)), r4validator), kind)


# -- a center and its width ---------------------------------------------------------------
def _spread(center: str, width: str, unit: str) -> str:
    return (
        f'<effectiveTime xsi:type="IVL_TS"><center value="{center}"/>'
        f'<width value="{width}" unit="{unit}"/></effectiveTime>'
    )


TWO_HOURS = _spread(CENTER, "2", "h")


@pytest.mark.parametrize(("body", "kind", "element"), KINDS, ids=[k[1] for k in KINDS])
def test_a_center_and_its_width_are_a_period(
    body: Any, kind: str, element: str, r4validator: R4Validator
) -> None:
    """HL7 V3 Data Types R1, IVL: a center and a width are the interval [center -
    width/2, center + width/2]: the Period low / high would give, not the center."""
    bundle = _convert_valid(cda(body=body(TWO_HOURS)), r4validator)
    timed = _timed(_one(bundle, kind), element)
    assert timed == {element + "Period": {"start": START, "end": END}}


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        # The bounds keep the center's precision and offset, as fhir_datetime does.
        (
            _spread("202403051100+0100", "90", "min"),
            ("2024-03-05T10:15:00+01:00", "2024-03-05T11:45:00+01:00"),
        ),
        (
            _spread("2024030511-0500", "4", "h"),
            ("2024-03-05T09:00:00-05:00", "2024-03-05T13:00:00-05:00"),
        ),
        (
            _spread("20240305110000.5Z", "0.2", "s"),
            ("2024-03-05T11:00:00.4Z", "2024-03-05T11:00:00.6Z"),
        ),
        (_spread("20240305", "2", "d"), ("2024-03-04", "2024-03-06")),
        (_spread("20240305", "2", "wk"), ("2024-02-27", "2024-03-12")),
        # Calendar months and years, by whole ones from a month or a year.
        (_spread("202401", "4", "mo"), ("2023-11", "2024-03")),
        (_spread("202403", "2", "a"), ("2023-03", "2025-03")),
        (_spread("2024", "24", "mo"), ("2023", "2025")),
        # Without an offset, the document's (+0100, as for any time written without one).
        (_spread("20240305110000", "2", "h"), (START, END)),
    ],
    ids=[
        "minutes",
        "hours",
        "fraction",
        "days",
        "weeks",
        "months",
        "years",
        "years-in-months",
        "no-offset",
    ],
)
def test_the_bounds_keep_the_centers_precision_and_offset(
    time: str, expected: tuple[str, str], r4validator: R4Validator
) -> None:
    bundle = _convert_valid(cda(body=_procedure(time)), r4validator)
    start, end = expected
    assert _one(bundle, "Procedure")["performedPeriod"] == {"start": start, "end": end}


@pytest.mark.parametrize(
    ("time", "moment"),
    [
        # Half the width is finer than the center: the bounds are no day, no minute.
        (_spread("20240305", "1", "d"), "2024-03-05"),
        (_spread("202403051100+0100", "1", "min"), "2024-03-05T11:00:00+01:00"),
        # UCUM's mo and a are mean ones (30.4375 d, 365.25 d): from a day, no calendar day.
        (_spread("20240315", "2", "mo"), "2024-03-15"),
        (_spread("20240315", "2", "a"), "2024-03-15"),
        (_spread("202403", "1", "mo"), "2024-03"),
        (_spread("2024", "12", "mo"), "2024"),
        # Not a width of time, none, or not a number.
        (_spread(CENTER, "2", "kg"), MIDDLE),
        (_spread(CENTER, "0", "h"), MIDDLE),
        (_spread(CENTER, "two", "h"), MIDDLE),
    ],
    ids=[
        "half-a-day",
        "half-a-minute",
        "months-from-a-day",
        "years-from-a-day",
        "half-a-month",
        "half-a-year",
        "kg",
        "zero",
        "text",
    ],
)
def test_bounds_not_exact_leave_the_center(
    time: str, moment: str, r4validator: R4Validator
) -> None:
    """Bounds that cannot be written exactly at the center's precision are not guessed:
    the center is read as before, a moment."""
    bundle = _convert_valid(cda(body=_procedure(time)), r4validator)
    assert _timed(_one(bundle, "Procedure"), "performed") == {"performedDateTime": moment}


def test_bounds_without_an_offset_take_the_zones_at_their_instant(
    r4validator: R4Validator,
) -> None:
    """A document without an offset of its own: times without one are in the configured
    zone (Europe/Paris here), and the bounds of a center across the spring change are
    two hours apart, each with its own offset (the wall clock's 1:30 ± 1 h is not)."""
    xml = cda(body=_procedure(_spread("20240331013000", "2", "h")))
    xml = xml.replace(
        '<effectiveTime value="20240312143000+0100"/>', '<effectiveTime value="20240312143000"/>', 1
    )
    bundle = _convert_valid(xml, r4validator)
    assert _one(bundle, "Procedure")["performedPeriod"] == {
        "start": "2024-03-31T00:30:00+01:00",
        "end": "2024-03-31T03:30:00+02:00",
    }


def test_time_period_reads_a_center_and_its_width(r4validator: R4Validator) -> None:
    """Every element mapped with time.Period (periods of encounters, events, notes,
    validity, values, onsets) is the interval. The places that read low / high
    themselves (onsets and dates of a point, timing events, identities) keep the center
    (time.point without widths): it would be lost there otherwise."""
    spread = _spread(HL7_TIME, "30", "min")
    span = {"start": "2024-03-05T10:00:00+01:00", "end": "2024-03-05T10:30:00+01:00"}
    times = _times(_convert_valid(_document(spread), r4validator))
    periods = {k: v for k, v in times.items() if v != S27_EXPECTED[k]}
    assert periods == {
        "Encounter.period": span,
        "header Encounter.period": span,
        "Composition.event.period": span,
        "source DocumentReference.context.period": span,
        "note DocumentReference.context.period": span,
        "MedicationRequest validityPeriod": span,
        "Observation.valuePeriod": span,
        "FamilyMemberHistory onsetPeriod": span,
    }
