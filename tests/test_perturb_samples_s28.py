"""``scripts/perturb_samples.py`` on three samples: every field replaced in turn by an
unknown code, a zero, a negative or 20-digit number, an impossible date… gives a located
error or a valid bundle, never a template error, an invalid bundle or a bare exception
(the full run, every sample and the C-CDA elements, is the script without options).
Its first runs found an SPM-21 code, a code map row and 32-bit numbers failing messages;
the SIU and BAR samples here carry SCH-9 and IN1-22, two of them."""

from __future__ import annotations

from converter.errors import BundleValidationError, MappingError, ParseError, TemplateError
from tests.support.scripts import load_script, run_script


def test_the_field_edits_of_three_samples_find_no_defect() -> None:
    run = run_script(
        "perturb_samples.py",
        "--only",
        "SIU_S12_new-appointment",
        "BAR_P01_add-account",
        "OML_O21_lab-order",
        "--kinds",
        "fields",
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "0 distinct defect(s)" in run.stdout
    edited = int(run.stdout.split(" edited inputs")[0].split()[-1])
    assert edited > 3000


def test_what_counts_as_a_defect() -> None:
    script = load_script("perturb_samples.py")
    assert script.defect(TemplateError("undefined"), False)
    assert script.defect(BundleValidationError("positiveInt out of range"), False)
    assert script.defect(KeyError("x"), False)
    # Bad input reported at its field: the right answer, but for lenient mode.
    located = MappingError("not an integer", location="PID-25")
    assert not script.defect(located, False)
    assert script.defect(located, True)
    assert not script.defect(MappingError("the administration date (RXA-3) is missing"), True)
    assert not script.defect(ParseError("no MSH"), True)


def test_each_field_of_each_segment_is_edited_with_each_value() -> None:
    script = load_script("perturb_samples.py")
    message = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||X^^^Y\r"
    edits = list(script.hl7_field_edits(message))
    # MSH-3 … MSH-12 and one past its end (10 + 1), PID-1 … PID-3 and one past (3 + 1).
    assert [w for w, _ in edits[:: len(script.FIELD_VALUES)]][:2] == ["MSH#0-3=ZZ9", "MSH#0-4=ZZ9"]
    assert len(edits) == (11 + 4) * len(script.FIELD_VALUES)
    where, data = edits[-1]
    assert where == f"PID#1-4={script.FIELD_VALUES[-1]}"
    assert data.split(b"\r")[1] == b"PID|1||X^^^Y|" + script.FIELD_VALUES[-1].encode()
