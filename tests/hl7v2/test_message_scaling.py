"""Reading a value costs time linear in its length, whatever the access pattern.

A field with thousands of repetitions (or a repetition with thousands of components)
must not be split again for each element read: that made one 100 KB message hold a
conversion process for 20 s, and a 19 MB one for days. These tests count work, not time:
the raw text is a ``str`` subclass that counts the ``split`` calls made on it, and the
end-to-end test adds up the characters every ``str.split`` of a conversion goes over.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, SupportsIndex

import pytest

from converter import Converter, ConverterConfig
from converter.hl7v2 import Segment, Value
from converter.hl7v2.encoding import Encoding
from tests.support.compiled import pure_python_only

from ._support import SAMPLES

N = 5_000


class CountingStr(str):
    """A raw value that counts how often it is split (whole-value scans)."""

    splits = 0

    def split(self, sep: str | None = None, maxsplit: SupportsIndex = -1) -> list[str]:
        type(self).splits += 1
        return super().split(sep, maxsplit)


@pytest.fixture(autouse=True)
def _reset_counter() -> None:
    CountingStr.splits = 0


def field_of(raw: str) -> Value:
    """PID-3 holding ``raw`` (as a counting string)."""
    return Segment("PID", ["PID", "1", "", CountingStr(raw)], Encoding(), "ascii", "PID")[3]


def repeated(n: int) -> str:
    # Empty repetitions in between, so iteration and ``first`` have something to skip.
    return "~".join(
        "" if i % 3 == 0 else f"{i}^^^A^{'MR' if i == n - 1 else 'PI'}" for i in range(n)
    )


ACCESSES: dict[str, Callable[[Value], object]] = {
    "reps": lambda f: [rep.raw for rep in f.reps],
    "iteration": lambda f: [str(rep) for rep in f],
    "first": lambda f: [f.first for _ in range(100)],
    "rep_where": lambda f: f.rep_where(5, "XX", "MR", "PI"),
    "len": lambda f: [len(f) for _ in range(100)],
    "reps by index": lambda f: [f.reps[i] for i in range(0, len(f), len(f) // 10)],
    "components of the first": lambda f: f.components,
    "components by index": lambda f: [f[i] for i in range(1, 100)],
    "mixed": lambda f: (f[1], str(f), f.first[5], list(f), f.reps, len(f), f.rep_where(5, "MR")),
}


@pure_python_only
@pytest.mark.parametrize("access", ACCESSES.values(), ids=ACCESSES.keys())
def test_a_field_is_split_into_repetitions_once(access: Callable[[Value], object]) -> None:
    field = field_of(repeated(N))
    access(field)
    access(field)
    # Reading the first leaf may cut the field once more (``split(sep, 1)``), nothing
    # depends on the number of repetitions.
    assert CountingStr.splits <= 2


@pure_python_only
def test_truth_of_a_field_scans_it_once() -> None:
    field = field_of(repeated(N))  # the first repetition is empty: every leaf is looked at
    assert field
    assert CountingStr.splits == 2  # str(field) cuts the first repetition off, then one scan


def test_repetitions_are_unchanged() -> None:
    field = field_of(repeated(N))
    reps = field.reps
    assert len(reps) == len(field) == N
    assert [rep.raw for rep in reps] == repeated(N).split("~")
    assert [rep.path for rep in reps][:3] == ["PID-3", "PID-3(2)", "PID-3(3)"]
    assert field.first.path == "PID-3(2)"
    assert field.rep_where(5, "XX", "MR", "PI").path == f"PID-3({N})"
    assert field.rep_where(5, "PI", "MR").path == "PID-3(2)"
    assert len([str(rep) for rep in field]) == N - (N + 2) // 3


@pure_python_only
def test_components_are_split_once() -> None:
    field = field_of("^".join(str(i) for i in range(N)))
    components = field.components
    assert [str(c) for c in components] == [str(i) for i in range(N)]
    assert [str(field[i + 1]) for i in range(N)] == [str(i) for i in range(N)]
    assert CountingStr.splits <= 3


@pure_python_only
def test_sub_components_are_split_once() -> None:
    raw = CountingStr("&".join(str(i) for i in range(N)))
    component = Value(raw, Encoding(), "ascii", 2, ("PID", 3, 1, 1, 0))
    assert [str(component[i + 1]) for i in range(N)] == [str(i) for i in range(N)]
    assert CountingStr.splits == 1


def test_msh2_is_still_not_split() -> None:
    msh2 = Segment("MSH", ["MSH", CountingStr("^~\\&")], Encoding(), "ascii", "MSH")[2]
    assert [rep.raw for rep in msh2.reps] == ["^~\\&"]
    assert len(msh2) == 1
    assert str(msh2.first) == "^~\\&"


def characters_split(run: Callable[[], object]) -> int:
    """Total length of the strings ``str.split`` went over while ``run`` ran."""
    total = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal total
        if event == "c_call" and getattr(arg, "__name__", "") in ("split", "rsplit"):
            target = getattr(arg, "__self__", None)
            if isinstance(target, str):
                total += len(target)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(previous)
    return total


@pure_python_only
def test_converting_many_repetitions_splits_a_linear_amount_of_text() -> None:
    """The probe's message (PID-3 with thousands of ``1^^^A`` repetitions) through the
    whole conversion: the text split grows with the message, not with its square."""
    adt = (SAMPLES / "ADT_A01_admission-full.hl7").read_bytes().replace(b"\r\n", b"\r")
    converter = Converter(ConverterConfig())
    list(converter.convert(adt))  # templates compiled outside the measure

    def work(n: int) -> int:
        body = adt.replace(b"PID|1||", b"PID|1||" + b"1^^^A~" * n)
        return characters_split(lambda: list(converter.convert(body)))

    small, large = work(N // 10), work(N)
    added_bytes = len(b"1^^^A~") * (N - N // 10)
    # Linear: each added byte is split a bounded number of times (about 3 today); the
    # quadratic version split the whole field once per repetition (~N/2 times per byte).
    assert large - small < 20 * added_bytes
