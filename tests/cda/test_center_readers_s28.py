"""Session 28: the last readers of an IVL_TS center beside low / high.

Session 28 moved Procedure, ServiceRequest and DeviceUseStatement to time.point (a center
is the time only when neither low nor high is valued: beside them it is their middle).
Two readers still took the center itself:

- A Goal's startDate was its effectiveTime's @value, else low, else the center, also
  beside a high: a goal written ``center`` + ``high`` started at the middle of an
  interval whose start was never written. It now reads time.point (no startDate then,
  the high still its due date); a center alone is still the start. A center with a
  ``<width>`` is the interval [center - width/2, center + width/2] (HL7 V3 Data Types
  R1, IVL; time.bounds): its start is the startDate and its end the due date, as low and
  high are.
- A Result Organizer (or a panel) without a time of its own spans its results' times,
  and counted each result's center among them, beside its low / high too: a result
  written low + center (started at low, no end) stretched the report to its center, one
  written center + high started it at its center. A result's center now counts only
  alone (time.point), as the result's own effective time reads it.

Immunization (its date, and the identity reading it) keeps the center beside a high
without a low: occurrenceDateTime is required and a high alone fails the document, so
the center is the one date such an administration has (beside a low, the low already
won).
"""

from __future__ import annotations

from typing import Any

from tests.support.r4validator import R4Validator

from ._support import cda, resources_of, section
from .test_center_beside_bounds_s28 import _ivl, _spread
from .test_centers_and_implants_s26 import _goal, _organizer, _result
from .test_time_centers_s27 import _convert_valid, _one

GOALS = ("2.16.840.1.113883.10.20.22.2.60", "61146-7")
RESULTS = ("2.16.840.1.113883.10.20.22.2.3.1", "30954-2")


def _goal_dates(time: str, r4validator: R4Validator) -> tuple[Any, Any]:
    """The Goal's startDate and its target's dueDate (None when absent)."""
    goal = _one(_convert_valid(cda(body=section(*GOALS, _goal(time))), r4validator), "Goal")
    return goal.get("startDate"), goal["target"][0].get("dueDate")


def test_a_goals_center_beside_a_high_is_no_start(r4validator: R4Validator) -> None:
    """startDate reads the center as time.point does: alone it is the start; beside low
    / high only their middle, so low / high give the dates as without it."""
    low, center, high = ("low", "20240301"), ("center", "20240315"), ("high", "20240329")
    cases = {
        "low-center-high": (_ivl(low, center, high), ("2024-03-01", "2024-03-29")),
        "low-center": (_ivl(low, center), ("2024-03-01", None)),
        # The middle of an interval whose start was never written started nothing.
        "center-high": (_ivl(center, high), (None, "2024-03-29")),
        "center-alone": (_ivl(center), ("2024-03-15", None)),
    }
    dates = {name: _goal_dates(time, r4validator) for name, (time, _) in cases.items()}
    assert dates == {name: expected for name, (_, expected) in cases.items()}


def test_a_goals_center_and_width_are_its_start_and_due_date(r4validator: R4Validator) -> None:
    """A center and its width are [center - width/2, center + width/2]: the start and
    the due date, as low and high. Bounds not exact at the center's precision (half a
    day from a day) are not guessed: the center stays the start."""
    cases = {
        "two-weeks": (_spread("20240315", "2", "wk"), ("2024-03-08", "2024-03-22")),
        "hours": (_spread("20240315120000+0100", "48", "h"), ("2024-03-14", "2024-03-16")),
        "half-a-day": (_spread("20240315", "1", "d"), ("2024-03-15", None)),
    }
    dates = {name: _goal_dates(time, r4validator) for name, (time, _) in cases.items()}
    assert dates == {name: expected for name, (_, expected) in cases.items()}


def test_a_reports_span_leaves_its_results_centers_beside_bounds(
    r4validator: R4Validator,
) -> None:
    """An organizer without a time spans its results' own times: a center beside a low
    (or a high) is not one of them. HB started at 08:00 (its center, 10:00, is no end);
    PLT ended at 09:00 (its center, 07:00, is no start): the report spans 08:00-09:00,
    not 07:00-10:00."""
    started = _ivl(("low", "20240305080000+0100"), ("center", "20240305100000+0100"))
    ended = _ivl(("center", "20240305070000+0100"), ("high", "20240305090000+0100"))
    organizer = _organizer("", _result("HB", "718-7", started) + _result("PLT", "777-3", ended))
    bundle = _convert_valid(cda(body=section(*RESULTS, organizer)), r4validator)
    by_code = {o["code"]["coding"][0]["code"]: o for o in resources_of(bundle, "Observation")}
    # The results' own times, which the report spans.
    assert by_code["718-7"]["effectiveDateTime"] == "2024-03-05T08:00:00+01:00"
    assert by_code["777-3"]["effectivePeriod"] == {"end": "2024-03-05T09:00:00+01:00"}
    assert _one(bundle, "DiagnosticReport")["effectivePeriod"] == {
        "start": "2024-03-05T08:00:00+01:00",
        "end": "2024-03-05T09:00:00+01:00",
    }
