"""What ``passerelle convert`` reads: editor backups and unfinished transfers in a folder,
standard input (``-``) and pipes, and ``--template`` over a folder mixing HL7 v2 and CDA.
Real processes, the installed ``passerelle`` console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from converter.cli_inputs import is_backup_name

REPO = Path(__file__).resolve().parents[1]
ADT_A01 = REPO / "samples" / "hl7v2" / "ADT_A01_admission-full.hl7"
CCD = REPO / "samples" / "cda" / "CCD_lefevre-camille.xml"
PASSERELLE = Path(sys.executable).parent / "passerelle"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def run(
    *args: str | Path, stdin: bytes | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PASSERELLE, *map(str, args)],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        cwd=cwd,
        env=ENV,
        timeout=120,
    )


# -- backups and unfinished transfers in a folder -----------------------------------------------
BACKUPS = [
    "a.hl7~",
    "#a.hl7#",
    "~$a.xml",
    "a.hl7.swp",
    "a.hl7.swo",
    "a.hl7.bak",
    "a.hl7.orig",
    "a.hl7.tmp",
    "a.hl7.part",
    "a.hl7.filepart",
    "a.xml.crdownload",
]
#: Names that look a little like the above but are messages.
LEGITIMATE = [
    "b.hl7",
    "c.txt",
    "ADT_20240316",
    "report~final.hl7",
    "#1.hl7",
    "tmp.hl7",
    "part.hl7",
    "d.backup.hl7",
    "e.hl7.1",
]


def test_editor_backups_and_temporary_files_in_a_folder_are_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    message = ADT_A01.read_bytes()
    for name in [*BACKUPS, *LEGITIMATE, ".a.hl7.swp", ".DS_Store"]:
        (folder / name).write_bytes(message)
    out = tmp_path / "out"
    result = run("convert", folder, "--out", out)
    stderr = result.stderr.decode()
    # a.hl7~ was converted to out/a.json too; #a.hl7# to out/#a.json.
    assert result.returncode == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        Path(name).stem + ".json" for name in LEGITIMATE
    )
    for name in BACKUPS:
        assert f"SKIPPED {folder / name}: backup or temporary file (by its name)" in stderr
    skipped = len(BACKUPS)
    assert f"converted {len(LEGITIMATE)}, failed 0, skipped {skipped} ({skipped} backup" in stderr
    assert "FAILED" not in stderr


def test_a_backup_named_on_the_command_line_is_converted(tmp_path: Path) -> None:
    backup = tmp_path / "a.hl7~"
    backup.write_bytes(ADT_A01.read_bytes())
    result = run("convert", backup, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "a.json").exists()


@pytest.mark.parametrize("name", BACKUPS)
def test_backup_names(name: str) -> None:
    assert is_backup_name(name)


@pytest.mark.parametrize("name", LEGITIMATE)
def test_message_names_are_not_backups(name: str) -> None:
    assert not is_backup_name(name)


# -- standard input --------------------------------------------------------------------------
def test_a_dash_reads_standard_input_to_stdout() -> None:
    result = run("convert", "-", stdin=ADT_A01.read_bytes())
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    assert bundle["identifier"]["value"] == "CHU-ADT-20240314-000101"
    assert result.stderr == b""


def test_standard_input_with_out_is_written_as_stdin_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("convert", "-", "--input-type", "cda", "--out", out, stdin=CCD.read_bytes())
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["stdin.json"]
    assert json.loads((out / "stdin.json").read_text())["resourceType"] == "Bundle"


def test_several_messages_on_standard_input(tmp_path: Path) -> None:
    two = ADT_A01.read_bytes().rstrip(b"\r\n") + b"\r" + ADT_A01.read_bytes()
    result = run("convert", "-", "--out", tmp_path, stdin=two)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdin.1.json", "stdin.2.json"]


def test_a_failure_on_standard_input_names_it() -> None:
    damaged = ADT_A01.read_bytes().replace(b"|19850312|", b"|19851312|")
    result = run("convert", "-", stdin=damaged)
    assert result.returncode == 1
    line = result.stderr.decode().splitlines()[0]
    assert line.startswith(
        "FAILED <stdin> control-id=CHU-ADT-20240314-000101 type=ADT^A01 MappingError"
    )
    assert "19851312" not in line  # the value, patient data, only with --verbose


def test_standard_input_is_read_up_to_a_bound() -> None:
    result = run("convert", "-", "--max-stream-bytes", "1000", stdin=ADT_A01.read_bytes())
    assert result.returncode == 1
    assert (
        "FAILED <stdin> ConversionError: input goes on past 1000 bytes (--max-stream-bytes)"
        in result.stderr.decode()
    )


def test_an_endless_device_named_on_the_command_line_is_read_up_to_the_bound() -> None:
    # /dev/zero was read until the memory ran out.
    result = run("convert", "/dev/zero", "--max-stream-bytes", "100000")
    assert result.returncode == 1
    assert "FAILED /dev/zero ConversionError: input goes on past 100000 bytes" in (
        result.stderr.decode()
    )


def test_standard_input_given_twice_is_a_usage_error() -> None:
    result = run("convert", "-", "-", stdin=ADT_A01.read_bytes())
    assert result.returncode == 2
    assert result.stderr.decode() == "passerelle: standard input (-) can be given only once\n"


def test_a_closed_standard_input_is_a_usage_error() -> None:
    result = subprocess.run(
        [PASSERELLE, "convert", "-"],
        capture_output=True,
        cwd=REPO,
        env=ENV,
        timeout=120,
        # Closed in the child: Python's sys.stdin is then None.
        preexec_fn=lambda: os.close(0),
    )
    assert result.returncode == 2
    assert result.stderr.decode() == "passerelle: standard input (-) is closed\n"


# -- --template over a folder mixing HL7 v2 and CDA -----------------------------------------------
@pytest.fixture()
def mixed(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    # Sorted: the HL7 v2 file comes first, the CDA document then stopped the run (exit 2)
    # with a bundle already written.
    (folder / "a.hl7").write_bytes(ADT_A01.read_bytes())
    (folder / "b.xml").write_bytes(CCD.read_bytes())
    return folder


def test_an_hl7v2_template_fails_the_cda_documents_of_a_mixed_folder(
    mixed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run("convert", mixed, "--template", "ADT", "--out", out)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert [p.name for p in out.iterdir()] == ["a.json"]
    assert (
        f"FAILED {mixed / 'b.xml'} control-id=1.2.250.1.999.3.1^CCD-2024-000123 type=CCD "
        "ConversionError: --template ADT is not a root template for CDA inputs" in stderr
    )
    assert "converted 1, failed 1" in stderr


def test_a_cda_template_fails_the_hl7v2_messages_of_a_mixed_folder(
    mixed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run("convert", mixed, "--template", "ClinicalDocument", "--out", out)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert [p.name for p in out.iterdir()] == ["b.json"]
    assert (
        f"FAILED {mixed / 'a.hl7'} control-id=CHU-ADT-20240314-000101 type=ADT^A01 "
        "ConversionError: --template ClinicalDocument is not a root template for HL7 v2"
    ) in stderr


def test_a_full_template_name_is_checked_against_the_family_too(
    mixed: Path, tmp_path: Path
) -> None:
    # The CDA document went through the HL7 v2 template: "'msg' is undefined".
    result = run("convert", mixed, "--template", "builtin/hl7v2/messages/ADT.j2")
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "--template builtin/hl7v2/messages/ADT.j2 is not a root template for CDA" in stderr
    assert "undefined" not in stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--template", "NOPE"],
            "passerelle: --template NOPE: no root template hl7v2/messages/NOPE.j2 (HL7 v2) "
            "or cda/documents/NOPE.j2 (CDA)\n",
        ),
        (
            ["--template", "ADT", "--input-type", "cda"],
            "passerelle: --template ADT is not a root template for CDA inputs (--input-type cda)\n",
        ),
        (["--template", ""], "passerelle: --template is empty\n"),
    ],
)
def test_a_template_of_no_family_is_a_usage_error_before_anything_is_written(
    mixed: Path, tmp_path: Path, options: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = run("convert", mixed, "--out", out, *options)
    assert result.returncode == 2
    assert result.stderr.decode() == message
    assert not out.exists() or list(out.iterdir()) == []
