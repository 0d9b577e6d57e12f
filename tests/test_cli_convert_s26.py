"""``passerelle convert`` and patient data: it never prints what a template built from the
message unless ``--verbose`` asks for it (a template not found names what it asked for,
and a template may build that name from a field, ``{% include "site/" ~ pid[5] %}``: the
patient's name was on the failure line), and the bundles it writes to ``--out`` are the
owner's only, as the service's are."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.test_cli import ADT_A08, run

PATIENT = "ZZSECRETNAME"
MESSAGE = (
    "MSH|^~\\&|APP|FAC|PASS|GHT|20240314083512+0100||ADT^A01^ADT_A01|CID-S26|P|2.5.1\r"
    f"PID|1||ID-S26^^^FAC&1.2.250.1.999&ISO^MR||{PATIENT}^ZZGIVEN||19850312|F\r"
    "PV1|1|I\r"
)


def _override(folder: Path) -> Path:
    """A site's Patient template that picks a per-name include (a bug: the include is
    named after the patient)."""
    template = folder / "hl7v2" / "resources" / "Patient.j2"
    template.parent.mkdir(parents=True)
    template.write_text('{% include "site/" ~ (pid[5] | string) ~ ".j2" %}\n')
    return template


def test_a_template_not_found_is_printed_without_its_name(tmp_path: Path) -> None:
    template = _override(tmp_path / "maps")
    source = tmp_path / "adt.hl7"
    source.write_text(MESSAGE)
    result = run("convert", source, "--templates", tmp_path / "maps", "--out", tmp_path / "out")
    assert result.returncode == 1, result.stdout + result.stderr
    assert PATIENT not in result.stdout + result.stderr
    # What failed and where is still said: the template line that asked for it.
    assert "TemplateError: template not found" in result.stderr
    assert f"in {template}:1" in result.stderr
    assert "control-id=CID-S26" in result.stderr


def test_verbose_shows_the_name_as_it_shows_the_offending_value(tmp_path: Path) -> None:
    _override(tmp_path / "maps")
    source = tmp_path / "adt.hl7"
    source.write_text(MESSAGE)
    result = run("convert", source, "--templates", tmp_path / "maps", "--verbose")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"[template 'site/{PATIENT}.j2']" in result.stderr


def test_bundles_written_to_a_folder_are_the_owners_only(tmp_path: Path) -> None:
    # They hold patient data: the usual umask (022) made them 0644, readable by every
    # user of the host, where the service writes the same bundles 0600.
    source = tmp_path / "adt.hl7"
    source.write_bytes(ADT_A08.read_bytes())
    old = tmp_path / "out" / "adt.json"
    old.parent.mkdir()
    old.write_text("{}")
    old.chmod(0o644)  # an earlier run's file is replaced by one of the new mode
    mask = os.umask(0o022)
    try:
        result = run("convert", source, "--out", tmp_path / "out")
    finally:
        os.umask(mask)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert json.loads(old.read_text())["resourceType"] == "Bundle"


def test_folders_created_for_the_bundles_are_the_owners_only(tmp_path: Path) -> None:
    # They were 0755 under the usual umask: every user could list the bundles' names.
    source = tmp_path / "adt.hl7"
    source.write_bytes(ADT_A08.read_bytes())
    existing = tmp_path / "kept"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    mask = os.umask(0o022)
    try:
        result = run("convert", source, "--out", existing / "new" / "out")
    finally:
        os.umask(mask)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE((existing / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((existing / "new" / "out").stat().st_mode) == 0o700
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # an existing folder is left as it is
