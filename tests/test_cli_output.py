"""``passerelle convert`` output as a real process: names that never clash within a run,
folders holding non-message files, a reader that goes away, the closing summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import ADT_A08, BATCH, REPO, SAMPLES, run

CCD = REPO / "samples" / "cda" / "CCD_lefevre-camille.xml"


def _a08(control_id: str) -> bytes:
    """The A08 sample with its own control id: distinct bundles, easy to tell apart."""
    data = ADT_A08.read_bytes()
    old = data.split(b"\r")[0].split(b"|")[9]
    return data.replace(b"|" + old + b"|", b"|" + control_id.encode() + b"|", 1)


def _control_ids(out: Path) -> dict[str, str]:
    """Output file name → the MSH-10 its bundle carries (Bundle.identifier)."""
    return {p.name: json.loads(p.read_text())["identifier"]["value"] for p in sorted(out.iterdir())}


# -- D1: within one run, a bundle never overwrites another ----------------------------------
def test_inputs_with_the_same_stem_never_overwrite_each_other(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "dup.hl7").write_bytes(_a08("FIRST"))
    (inputs / "dup.txt").write_bytes(_a08("SECOND"))
    result = run("convert", inputs / "dup.hl7", inputs / "dup.txt", "--out", out)
    # Once: "converted 2", exit 0, and one dup.json holding the second bundle.
    assert result.returncode == 1, result.stderr
    assert _control_ids(out) == {"dup.json": "FIRST"}
    assert (
        f"FAILED {inputs / 'dup.txt'}: cannot write its bundle: {out / 'dup.json'} was "
        f"already written in this run for {inputs / 'dup.hl7'}"
    ) in result.stderr
    assert "converted 1, failed 1" in result.stderr
    assert "failed by type: ADT^A08: 1" in result.stderr


def test_a_batch_message_and_a_file_named_like_it_never_overwrite_each_other(
    tmp_path: Path,
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "x.hl7").write_bytes(BATCH.read_bytes())  # x.1.json, x.2.json, x.3.json
    (inputs / "x.1.hl7").write_bytes(_a08("LONE"))  # x.1.json too
    result = run("convert", inputs, "--out", out)
    assert result.returncode == 1, result.stderr
    written = _control_ids(out)
    assert sorted(written) == ["x.1.json", "x.2.json", "x.3.json"]
    assert written["x.1.json"] == "LONE"  # sorted input order: x.1.hl7 comes first
    assert f"FAILED {inputs / 'x.hl7'}: message 1: cannot write its bundle" in result.stderr
    assert f"written in this run for {inputs / 'x.1.hl7'}" in result.stderr
    assert "converted 3, failed 1" in result.stderr


def test_a_file_from_an_earlier_run_is_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "ADT_A08_update-patient.json").write_text("stale")
    result = run("convert", ADT_A08, "--out", out)
    assert result.returncode == 0, result.stderr
    bundle = json.loads((out / "ADT_A08_update-patient.json").read_text())
    assert bundle["resourceType"] == "Bundle"


# -- D14: a folder's files that are not messages are skipped -----------------------------------
def test_a_folder_skips_files_that_are_not_messages_but_fails_damaged_ones(
    tmp_path: Path,
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "README.md").write_text("# CDA samples\n")
    (inputs / "notes.txt").write_text("")
    (inputs / "doc.cda").write_bytes(CCD.read_bytes())  # XML: converted whatever its name
    (inputs / "message.txt").write_bytes(_a08("TXT"))  # HL7 v2: converted whatever its name
    (inputs / "damaged.hl7").write_bytes(b"garbage, not HL7")  # named .hl7: a failure
    result = run("convert", inputs, "--out", out)
    assert result.returncode == 1, result.stderr
    assert f"SKIPPED {inputs / 'README.md'}: neither HL7 v2 nor XML" in result.stderr
    assert f"SKIPPED {inputs / 'notes.txt'}" in result.stderr
    assert f"FAILED {inputs / 'damaged.hl7'} ParseError" in result.stderr
    assert "converted 2, failed 1, skipped 2" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["doc.json", "message.json"]


def test_the_shipped_cda_samples_folder_converts() -> None:
    # Once exit 1: samples/cda holds a README.md.
    result = run("convert", REPO / "samples" / "cda", "--no-validate")
    assert result.returncode == 0, result.stderr
    documents = len(list((REPO / "samples" / "cda").glob("*.xml")))
    assert f"converted {documents}, failed 0, skipped 1" in result.stderr


def test_a_file_named_on_the_command_line_is_never_skipped(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# not a message\n")
    result = run("convert", readme)
    assert result.returncode == 1
    assert "SKIPPED" not in result.stderr
    assert f"FAILED {readme} ParseError: input is neither HL7 v2" in result.stderr


# -- D17: a reader that goes away ends the run quietly ----------------------------------------
@pytest.mark.parametrize("module", ["converter.cli", "listeners.cli"])
def test_a_closed_stdout_ends_the_run_quietly_with_141(module: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", module, "convert", SAMPLES],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        cwd=REPO,
    )
    assert process.stdout is not None and process.stderr is not None
    # Closed before the child can write anything (it is still importing): its first
    # bundle meets a pipe without a reader, as after `| head` has read enough.
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, stderr
    # Once: "FAILED …: cannot write its bundle: Broken pipe" per input and "failed 21".
    assert stderr == ""


def test_a_closed_pipe_in_a_shell_pipeline(tmp_path: Path) -> None:
    script = (
        f"{sys.executable} -m converter.cli convert {SAMPLES} --pretty 2>{tmp_path / 'err'}"
        ' | head -n 2; echo "status=${PIPESTATUS[0]}"'
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.stdout.splitlines() == ["{", '  "resourceType": "Bundle",', "status=141"]
    assert (tmp_path / "err").read_text() == ""


# -- D18: the summary counts types as code^trigger ---------------------------------------------
def test_failed_by_type_counts_code_and_trigger(tmp_path: Path) -> None:
    # MSH-9 is ADT^A08^ADT_A01. An unsupported version was once counted under the whole
    # MSH-9, a mapping failure under ADT^A08: two lines for one type.
    (tmp_path / "v29.hl7").write_bytes(ADT_A08.read_bytes().replace(b"|2.5.1|", b"|2.9|", 1))
    (tmp_path / "bad_date.hl7").write_bytes(
        ADT_A08.read_bytes().replace(b"|19850312|", b"|19851312|")
    )
    (tmp_path / "good.hl7").write_bytes(ADT_A08.read_bytes())
    result = run("convert", tmp_path, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "  converted by type: ADT^A08: 1\n" in result.stderr
    assert "  failed by type: ADT^A08: 2\n" in result.stderr
    assert "ADT_A01" not in result.stderr


# -- bundles on stdout are UTF-8 whatever the locale -------------------------------------------
def test_bundles_on_stdout_are_utf8_in_a_latin9_locale() -> None:
    # PYTHONIOENCODING stands for LANG=fr_FR.ISO-8859-15 (no such locale in the image).
    # The sample's "Œdème" is not in Latin-1: the bundle failed as "internal error
    # UnicodeEncodeError", and a bundle that could be encoded came out in Latin-1.
    source = REPO / "samples" / "hl7v2" / "ADT_A01_admission-full.hl7"
    result = subprocess.run(
        [sys.executable, "-m", "listeners.cli", "convert", source],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONIOENCODING": "latin-1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout.decode("utf-8"))
    text = json.dumps(bundle, ensure_ascii=False)
    assert "Œdème des lèvres" in text
