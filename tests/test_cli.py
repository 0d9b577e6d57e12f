"""``passerelle convert`` / ``passerelle templates`` run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.compiled import pure_python_only

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "hl7v2"
ADT_A08 = SAMPLES / "ADT_A08_update-patient.hl7"
BATCH = SAMPLES / "batch_ADT.hl7"


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "converter.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_single_file_prints_its_bundle_on_stdout() -> None:
    result = run("convert", ADT_A08, "--timezone", "Europe/Paris")
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    types = {entry["resource"]["resourceType"] for entry in bundle["entry"]}
    assert {"Patient", "Encounter", "MessageHeader", "Provenance"} <= types


def test_pretty_output_is_indented() -> None:
    result = run("convert", ADT_A08, "--pretty")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('{\n  "resourceType": "Bundle"')


def test_out_dir_names_one_file_per_input_and_per_message(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "single.hl7").write_bytes(ADT_A08.read_bytes())
    (inputs / "several.hl7").write_bytes(BATCH.read_bytes())
    out = tmp_path / "out"
    result = run("convert", inputs, "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "several.1.json",
        "several.2.json",
        "several.3.json",
        "single.json",
    ]
    assert "converted 4, failed 0" in result.stderr
    assert "ADT^A08: 4" in result.stderr


def test_failures_exit_1_with_one_located_line_each_and_no_traceback(tmp_path: Path) -> None:
    bad_date = ADT_A08.read_bytes().replace(b"|19850312|", b"|19851312|")
    assert bad_date != ADT_A08.read_bytes(), "fixture assumption: PID-7 is 19850312"
    (tmp_path / "bad_date.hl7").write_bytes(bad_date)
    (tmp_path / "garbage.hl7").write_bytes(b"\x00\x01 not hl7 at all")
    (tmp_path / "good.hl7").write_bytes(ADT_A08.read_bytes())
    result = run("convert", tmp_path, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 2, result.stderr
    date_line = next(line for line in failures if "bad_date.hl7" in line)
    assert "type=ADT^A08" in date_line
    assert "control-id=" in date_line
    assert "at PID-7" in date_line
    assert "hl7v2/resources/Patient.j2:" in date_line
    assert "19851312" not in date_line, "patient data must only appear with --verbose"
    assert "converted 1, failed 2" in result.stderr
    verbose = run("convert", tmp_path / "bad_date.hl7", "--verbose")
    assert "19851312" in verbose.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("convert").returncode == 2
    assert run("convert", ADT_A08, "--input-type", "xml").returncode == 2
    missing = run("convert", ADT_A08, "--templates", tmp_path / "nope")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    assert run("convert", ADT_A08, "--timezone", "Mars/Olympus").returncode == 2
    assert run("convert", ADT_A08, "--timezone", "A" * 5000).returncode == 2  # was OSError
    assert run("convert", ADT_A08, "--template", "NO_SUCH_ROOT").returncode == 2
    # Once tracebacks: a root name too long for the file system, --out naming a file.
    assert run("convert", ADT_A08, "--template", "A" * 5000).returncode == 2
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below"):
        refused = run("convert", ADT_A08, "--out", out)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(f"passerelle: --out {out}")
        assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("charset", ["nope", "rot13", "hex", "utf-16", "cp037", ""])
def test_a_charset_msh18_would_refuse_is_a_usage_error(charset: str) -> None:
    # Once a LookupError traceback (nope, rot13, hex) or a garbled ParseError (utf-16).
    for command in (("convert", ADT_A08), ("templates", "list")):
        result = run(*command, "--charset", charset)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "argument --charset: " in result.stderr
        assert result.stderr.rstrip().endswith(repr(charset)), result.stderr


def test_charset_names_an_msh18_value_or_a_python_codec(tmp_path: Path) -> None:
    latin1 = (SAMPLES / "ADT_A01_latin1.hl7").read_bytes()
    assert b"|8859/1|" in latin1, "fixture assumption: MSH-18 is 8859/1"
    (tmp_path / "no_msh18.hl7").write_bytes(latin1.replace(b"|8859/1|", b"||", 1))
    assert run("convert", tmp_path / "no_msh18.hl7").returncode == 1  # read as UTF-8
    for charset in ("8859/1", "latin-1"):
        result = run("convert", tmp_path / "no_msh18.hl7", "--charset", charset)
        assert result.returncode == 0, result.stderr
        assert "FOURNIER-LEFÈVRE" in result.stdout


def test_a_parse_error_shows_no_message_content_without_verbose(tmp_path: Path) -> None:
    # A PID broken across lines by the feed: the new line opens with the patient's name.
    data = ADT_A08.read_bytes()
    pid_end = data.index(b"\r", data.index(b"\rPID|") + 1)
    wrapped = data[:pid_end] + b"\rDUPONT Marie n\xc3\xa9e le 01/01/1980" + data[pid_end:]
    (tmp_path / "wrapped.hl7").write_bytes(wrapped)
    result = run("convert", tmp_path / "wrapped.hl7")
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("FAILED")]
    assert "ParseError: invalid segment after PID" in line and "at segment " in line
    for text in ("DUPONT", "Marie", "DUP"):
        assert text not in result.stderr, result.stderr
    verbose = run("convert", tmp_path / "wrapped.hl7", "--verbose")
    assert "DUPONT Marie" in verbose.stderr  # the value, for whoever may read the message


def test_an_empty_folder_says_so(tmp_path: Path) -> None:
    result = run("convert", tmp_path)
    assert result.returncode == 0
    assert "no files to convert" in result.stderr


def test_a_bundle_that_cannot_be_written_is_a_failure_and_the_rest_goes_on(
    tmp_path: Path,
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "first.hl7").write_bytes(ADT_A08.read_bytes())
    (inputs / "second.hl7").write_bytes(ADT_A08.read_bytes())
    (out / "first.json").mkdir(parents=True)  # where the first bundle would go
    result = run("convert", inputs, "--out", out)
    assert result.returncode == 1
    assert f"FAILED {inputs / 'first.hl7'}: cannot write its bundle" in result.stderr
    assert "Traceback" not in result.stderr
    assert "converted 1, failed 1" in result.stderr
    assert json.loads((out / "second.json").read_text())["resourceType"] == "Bundle"


def test_unsupported_message_type_fails_cleanly(tmp_path: Path) -> None:
    message = ADT_A08.read_bytes().replace(b"ADT^A08^ADT_A01", b"ADT^A99^ADT_A01")
    (tmp_path / "a99.hl7").write_bytes(message)
    result = run("convert", tmp_path / "a99.hl7")
    assert result.returncode == 1
    assert "UnsupportedMessageError" in result.stderr
    assert "ADT^A99" in result.stderr
    assert "Traceback" not in result.stderr


def test_control_characters_from_the_input_are_printed_escaped(tmp_path: Path) -> None:
    # An ESC sequence in MSH-10 or MSH-9 would clear the operator's screen if printed raw.
    message = ADT_A08.read_bytes().replace(b"ADT^A08^ADT_A01", b"ADT^A99\x1b[2J^ADT_A01")
    control_id = ADT_A08.read_bytes().split(b"\r")[0].split(b"|")[9]
    message = message.replace(b"|" + control_id + b"|", b"|C\xe2\x80\xae1\x1b]0;x\x07|", 1)
    assert message.count(b"\x1b") == 2, "fixture assumption: MSH-10 replaced"
    (tmp_path / "escape.hl7").write_bytes(message)
    result = run("convert", tmp_path / "escape.hl7")
    assert result.returncode == 1
    assert not any(ch in result.stderr for ch in "\x1b\x07\u202e"), repr(result.stderr)
    assert "control-id=C\\u202e1\\x1b]0;x\\x07" in result.stderr
    assert "type=ADT^A99\\x1b[2J" in result.stderr
    assert "ADT^A99\\x1b[2J: 1" in result.stderr  # the closing summary too


def test_no_validate_and_forced_template() -> None:
    result = run("convert", ADT_A08, "--no-validate", "--template", "ADT")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["type"] == "transaction"


def test_builtin_prefix_forces_the_shipped_root_past_an_override(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "hl7v2" / "messages").mkdir(parents=True)
    (site / "hl7v2" / "messages" / "ADT.j2").write_text(
        '{% do emit("MessageHeader", msh=msg.MSH) %}'
    )

    def kinds(*options: str | Path) -> set[str]:
        result = run("convert", ADT_A08, "--templates", site, *options)
        assert result.returncode == 0, result.stderr
        return {e["resource"]["resourceType"] for e in json.loads(result.stdout)["entry"]}

    assert "Patient" not in kinds()  # the override: a MessageHeader (and its Organization)
    assert "Patient" in kinds("--template", "builtin/hl7v2/messages/ADT.j2")


def test_templates_list_marks_overrides(tmp_path: Path) -> None:
    override = tmp_path / "hl7v2" / "resources"
    override.mkdir(parents=True)
    (override / "Patient.j2").write_text('{"resourceType": "Patient", "active": true}')
    (tmp_path / "codemaps").mkdir()
    (tmp_path / "codemaps" / "AdministrativeSex.csv").write_text("source_code,target_code\nF,f\n")
    result = run("templates", "list", "--templates", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    patient = next(line for line in lines if line.split()[:1] == ["hl7v2/resources/Patient.j2"])
    assert "override" in patient and str(tmp_path) in patient
    encounter = next(line for line in lines if line.split()[:1] == ["hl7v2/resources/Encounter.j2"])
    assert "built-in" in encounter
    assert any("ADT^A01" in line and "ADT" in line for line in lines)
    # The CDA routes and the code maps, with the override a map comes from.
    assert any(
        "2.16.840.1.113883.10.20.22.1.2" in line and "ClinicalDocument" in line for line in lines
    )
    sex = next(line for line in lines if line.split()[:1] == ["AdministrativeSex"])
    assert f"override: {tmp_path / 'codemaps' / 'AdministrativeSex.csv'}" in sex
    assert next(line for line in lines if line.split()[:1] == ["NameType"]).endswith("built-in")


@pytest.mark.parametrize("sample", ["ADT_A01_crlf.hl7", "ADT_A01_latin1.hl7"])
def test_encodings_and_separators(sample: str) -> None:
    result = run("convert", SAMPLES / sample)
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert patient["name"][0]["family"]


def test_strict_hl7_flag_refuses_a_message_missing_a_required_field(tmp_path: Path) -> None:
    import re

    bad = re.sub(rb"\rPID\|1\|\|[^|]*\|", b"\rPID|1|||", ADT_A08.read_bytes())
    (tmp_path / "no_pid3.hl7").write_bytes(bad)
    assert run("convert", tmp_path / "no_pid3.hl7").returncode == 0
    strict = run("convert", tmp_path / "no_pid3.hl7", "--strict-hl7")
    assert strict.returncode == 1
    assert "ParseError" in strict.stderr and "at PID-3" in strict.stderr
    assert "Traceback" not in strict.stderr


def test_max_document_bytes_refuses_a_larger_cda_document() -> None:
    ccd = REPO / "samples" / "cda" / "CCD_lefevre-camille.xml"
    size = ccd.stat().st_size
    assert run("convert", ccd, "--max-document-bytes", size).returncode == 0
    refused = run("convert", ccd, "--max-document-bytes", size - 1)
    assert refused.returncode == 1
    assert f"document of {size} bytes exceeds the limit of {size - 1}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert run("convert", ccd, "--max-document-bytes", 0).returncode == 2


def test_request_mode_for_one_resource_type(tmp_path: Path) -> None:
    result = run("convert", ADT_A08, "--request-mode-for", "Patient=conditional-create")
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    methods = {e["resource"]["resourceType"]: e["request"]["method"] for e in bundle["entry"]}
    assert methods["Patient"] == "POST" and methods["Encounter"] == "PUT"
    bad = run("convert", ADT_A08, "--request-mode-for", "Patient=upsert")
    assert bad.returncode == 2
    assert "expected TYPE=MODE" in bad.stderr


# -- inputs that cannot be read, and bugs: one FAILED line each, the others converted --------
def test_an_unreadable_folder_is_a_failure_and_the_others_convert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once a PermissionError traceback before anything converted. In process: chmod 000
    means nothing to root, who runs these tests in the container."""
    from converter import cli

    locked, readable, out = tmp_path / "locked", tmp_path / "in", tmp_path / "out"
    for folder in (locked, readable):
        folder.mkdir()
        (folder / "m.hl7").write_bytes(ADT_A08.read_bytes())
    iterdir = Path.iterdir

    def refuse(path: Path) -> Any:
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return iterdir(path)

    monkeypatch.setattr(Path, "iterdir", refuse)
    assert cli.main(["convert", str(locked), str(readable), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {locked}: cannot read folder: Permission denied" in err
    assert "Traceback" not in err
    assert "converted 1, failed 1" in err
    assert [p.name for p in out.iterdir()] == ["m.json"]


def test_broken_links_in_a_folder_are_failures_not_silence(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.hl7").write_bytes(ADT_A08.read_bytes())
    (inputs / "dangling.hl7").symlink_to(tmp_path / "gone.hl7")
    (inputs / "loop.hl7").symlink_to(inputs / "loop.hl7")
    (inputs / "sub").mkdir()  # subfolders are not read, as documented: no line
    os.mkfifo(inputs / "pipe")  # never opened: reading it would block the run
    result = run("convert", inputs, "--out", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    assert f"FAILED {inputs / 'dangling.hl7'}: broken symbolic link" in result.stderr
    assert f"FAILED {inputs / 'loop.hl7'}: broken symbolic link" in result.stderr
    assert f"SKIPPED {inputs / 'pipe'}: not a regular file" in result.stderr
    assert "sub" not in result.stderr.replace(str(tmp_path), "")
    assert "converted 1, failed 2, skipped 1" in result.stderr


@pure_python_only  # plants the bug by replacing Message.__init__
def test_a_bug_while_converting_is_a_located_failure_without_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception that is no ConversionError (a bug) fails its message with the kind and
    the code line, never a traceback, never its text: it may quote the message."""
    from converter import cli
    from converter.hl7v2.message import Message

    real = Message.__init__

    def planted(self: Message, **kwargs: Any) -> None:
        real(self, **kwargs)
        if self.control_id == "BUG":
            raise KeyError("DUPONT Marie 1985-03-12")

    monkeypatch.setattr(Message, "__init__", planted)
    sample = ADT_A08.read_bytes()
    control_id = sample.split(b"\r")[0].split(b"|")[9]
    (tmp_path / "a.hl7").write_bytes(sample.replace(control_id, b"BUG") + b"\r" + sample)
    (tmp_path / "b.hl7").write_bytes(sample)
    assert cli.main(["convert", str(tmp_path), "--out", str(tmp_path / "out"), "--verbose"]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("FAILED")]
    assert line.startswith(f"FAILED {tmp_path / 'a.hl7'} ConversionError: message 1: ")
    assert "internal error KeyError at converter/hl7v2/er7.py:" in line
    assert "DUPONT" not in err and "Traceback" not in err
    assert "converted 2, failed 1" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.2.json", "b.json"]


def test_warning_lines_are_printed_escaped(tmp_path: Path) -> None:
    """A file name (or anything a warning quotes) with an ESC must not reach the terminal
    raw: FAILED and SKIPPED lines were escaped, WARNING lines were not."""
    message = ADT_A08.read_bytes().replace(b"|DUPONT^Marie^", b"|Ren\\XE9\\e^Marie^")
    assert b"XE9" in message, "fixture assumption: PID-5 is DUPONT^Marie"
    name = tmp_path / "a\x1b[2Jb.hl7"
    name.write_bytes(message)
    result = run("convert", name, "--lenient")
    assert result.returncode == 0, result.stderr
    warnings = [x for x in result.stderr.splitlines() if x.startswith("WARNING")]
    assert warnings and "\x1b" not in result.stderr
    assert warnings[0].startswith(f"WARNING {tmp_path}/a\\x1b[2Jb.hl7: hexadecimal escape")
    assert "at PID-5" in warnings[0] and "XE9" not in result.stderr
    assert "Ren\ufffde" in result.stdout
