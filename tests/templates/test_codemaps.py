"""Tests for the code-map loader and the IG code-map importer."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from converter.errors import ConfigurationError, TemplateError
from converter.templates.codemaps import CodeMaps, MappedCode
from tests.conftest import SHARED_DIR

REPO = Path(__file__).resolve().parents[2]
BUILTIN = REPO / "mappings" / "codemaps"
IMPORTER = REPO / "scripts" / "import_codemaps.py"
IG_CODESYSTEMS = SHARED_DIR / "reference" / "v2-to-fhir" / "mappings" / "codesystems"
HEADER = "source_code,source_system,target_code,target_display,target_system,comment\n"
GENDER = "http://hl7.org/fhir/administrative-gender"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def builtin() -> CodeMaps:
    return CodeMaps.load([BUILTIN])


# --- the generated built-in maps ---------------------------------------------------------


def test_builtin_administrative_sex(builtin: CodeMaps) -> None:
    assert builtin.lookup("AdministrativeSex", "F") == MappedCode("female", "Female", GENDER)
    assert builtin.lookup("AdministrativeSex", "M") == MappedCode("male", "Male", GENDER)
    assert builtin.source_of("AdministrativeSex") == BUILTIN / "AdministrativeSex.csv"


def test_builtin_bracket_names_and_shifted_display(builtin: CodeMaps) -> None:
    assert "PatientClass-EncounterClass" in builtin
    assert "PatientClass[EncounterClass]" not in builtin
    # The IG file puts the display in the unnamed column after Code; the importer keeps it.
    assert builtin.lookup("PatientClass-EncounterClass", "E") == MappedCode(
        "EMER", "emergency", "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    )


def test_builtin_code_system_oids_give_fhir_uris(builtin: CodeMaps) -> None:
    loinc = builtin.lookup("CodeSystemOid", "2.16.840.1.113883.6.1")
    atc = builtin.lookup("CodeSystemOid", "2.16.840.1.113883.6.73")
    assert loinc is not None and loinc.code == "http://loinc.org"
    assert atc is not None and atc.code == "http://www.whocc.no/atc"


def test_builtin_unmapped_code_is_none(builtin: CodeMaps) -> None:
    # DiagnosisType W ("Working") has no FHIR equivalent in the IG.
    assert builtin.lookup("DiagnosisType", "W") is None
    admitting = builtin.lookup("DiagnosisType", "A")
    assert admitting is not None and admitting.code == "AD"  # the row next to it is mapped
    assert builtin.lookup("AdministrativeSex", "no-such-code") is None


def test_builtin_names_are_files(builtin: CodeMaps) -> None:
    names = builtin.names()
    assert names == sorted(names)
    assert len(names) == len(list(BUILTIN.glob("*.csv")))
    assert {"AdministrativeSex", "ResultStatus-Non-Queries", "YesNoIndicator"} <= set(names)


def test_builtin_files_are_normalised() -> None:
    for path in sorted(BUILTIN.glob("*.csv")):
        raw = path.read_bytes()
        assert b"\r" not in raw, path
        assert raw.decode("utf-8").startswith(HEADER), path
        for row in csv.reader(raw.decode("utf-8").splitlines()[1:]):
            assert len(row) == 6, (path, row)
            assert row[0], (path, row)
            assert all(cell == cell.strip() for cell in row), (path, row)


# --- lookup semantics ---------------------------------------------------------------------


def test_empty_or_none_code(builtin: CodeMaps) -> None:
    assert builtin.lookup("AdministrativeSex", None) is None
    assert builtin.lookup("AdministrativeSex", "") is None
    assert builtin.lookup("AdministrativeSex", "  ") is None


def test_unknown_map_raises(builtin: CodeMaps) -> None:
    with pytest.raises(TemplateError, match="unknown code map 'NoSuchMap'"):
        builtin.lookup("NoSuchMap", "F")
    with pytest.raises(TemplateError):
        builtin.lookup("NoSuchMap", None)
    with pytest.raises(TemplateError):
        builtin.source_of("NoSuchMap")
    assert "NoSuchMap" not in builtin
    assert 42 not in builtin


def test_case_insensitive_fallback(tmp_path: Path) -> None:
    write(tmp_path, "Units", "source_code,target_code\nmg,mg-exact\nML,mL\n")
    maps = CodeMaps.load([tmp_path])
    assert maps.lookup("Units", "ml") == MappedCode("mL", None, None)
    assert maps.lookup("Units", "MG") == MappedCode("mg-exact", None, None)
    assert maps.lookup("Units", "g") is None


def test_exact_match_beats_case_insensitive(tmp_path: Path) -> None:
    write(tmp_path, "Flags", "source_code,target_code\nh,lower\nH,upper\n")
    maps = CodeMaps.load([tmp_path])
    assert maps.lookup("Flags", "H") == MappedCode("upper", None, None)
    assert maps.lookup("Flags", "h") == MappedCode("lower", None, None)


def test_source_system_preference(tmp_path: Path) -> None:
    write(
        tmp_path,
        "Status",
        HEADER + "X,HL70001,first,,,\nX,HL70002,second,Second,urn:two,\nY,0003,why,,,\n",
    )
    maps = CodeMaps.load([tmp_path])
    assert maps.lookup("Status", "X") == MappedCode("first", None, None)
    assert maps.lookup("Status", "X", "HL70002") == MappedCode("second", "Second", "urn:two")
    assert maps.lookup("Status", "X", "0002") == MappedCode("second", "Second", "urn:two")
    assert maps.lookup("Status", "x", "hl70002") == MappedCode("second", "Second", "urn:two")
    assert maps.lookup("Status", "X", "HL79999") == MappedCode("first", None, None)
    assert maps.lookup("Status", "Y", "HL70003") == MappedCode("why", None, None)


def test_unmapped_row_is_none_even_with_other_columns(tmp_path: Path) -> None:
    write(tmp_path, "M", HEADER + "A,HL70001,,,,no FHIR equivalent\nB,HL70001,b,,,\n")
    maps = CodeMaps.load([tmp_path])
    assert maps.lookup("M", "A") is None
    assert maps.lookup("M", "a") is None
    assert maps.lookup("M", "B") == MappedCode("b", None, None)


def test_minimal_user_map_and_whitespace(tmp_path: Path) -> None:
    write(tmp_path, "Mini", "target_code, source_code ,extra\n female , F ,ignored\n\nM,,x\n")
    maps = CodeMaps.load([tmp_path])
    assert maps.lookup("Mini", "F") == MappedCode("female", None, None)
    assert maps.lookup("Mini", " F ") == MappedCode("female", None, None)
    assert maps.lookup("Mini", "M") is None  # the row without a source code is ignored


# --- directories and overrides ------------------------------------------------------------


def test_override_dir_replaces_builtin_map_entirely(tmp_path: Path) -> None:
    user = tmp_path / "user"
    own = write(user, "AdministrativeSex", "source_code,target_code\nF,custom-female\n")
    maps = CodeMaps.load([user, BUILTIN])
    assert maps.lookup("AdministrativeSex", "F") == MappedCode("custom-female", None, None)
    # No per-row merging: M is in the built-in map only, so it is now unmapped.
    assert maps.lookup("AdministrativeSex", "M") is None
    assert maps.source_of("AdministrativeSex") == own
    # Other built-in maps remain available.
    assert maps.lookup("DiagnosisType", "A") is not None
    assert maps.source_of("DiagnosisType") == BUILTIN / "DiagnosisType.csv"


def test_later_directory_does_not_override(tmp_path: Path) -> None:
    first = write(tmp_path / "a", "Same", "source_code,target_code\nX,from-a\n")
    write(tmp_path / "b", "Same", "source_code,target_code\nX,from-b\nY,only-b\n")
    write(tmp_path / "b", "Other", "source_code,target_code\nZ,z\n")
    maps = CodeMaps.load([tmp_path / "a", tmp_path / "b"])
    assert maps.lookup("Same", "X") == MappedCode("from-a", None, None)
    assert maps.lookup("Same", "Y") is None
    assert maps.source_of("Same") == first
    assert maps.names() == ["Other", "Same"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        CodeMaps.load([tmp_path / "nope"])


# --- malformed files ----------------------------------------------------------------------


def test_malformed_header_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "Bad", "code,target\nF,female\n")
    with pytest.raises(ConfigurationError) as info:
        CodeMaps.load([tmp_path])
    message = str(info.value)
    assert f"{bad}:1" in message
    assert "source_code" in message and "target_code" in message


def test_header_missing_only_target(tmp_path: Path) -> None:
    bad = write(tmp_path, "Half", "source_code,display\nF,Female\n")
    with pytest.raises(ConfigurationError, match="target_code") as info:
        CodeMaps.load([tmp_path])
    assert str(bad) in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "Empty", "")
    with pytest.raises(ConfigurationError, match="empty code map") as info:
        CodeMaps.load([tmp_path])
    assert f"{bad}:1" in str(info.value)


def test_too_many_fields_names_line(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "Wide",
        'source_code,target_code,comment\nA,a,"multi\nline comment"\nB,b,oops,extra\n',
    )
    with pytest.raises(ConfigurationError) as info:
        CodeMaps.load([tmp_path])
    assert f"{bad}:4:" in str(info.value)


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        # A row cut before target_code: the code would silently map to nothing.
        ("F\nM,HL70001,male,,,\n", 2, "no target_code column"),
        # An unterminated quote would swallow the rest of the file into one cell.
        ('"F,HL70001,female,,,\nM,HL70001,male,,,\n', 2, "malformed CSV"),
        # One code twice with different targets: whichever came first would win.
        ("F,HL70001,female,,,\nF,HL70001,male,,,\n", 3, "already mapped at line 2"),
    ],
    ids=["short row", "unterminated quote", "conflicting duplicate"],
)
def test_rows_that_would_silently_unmap_a_code_are_refused(
    tmp_path: Path, rows: str, line: int, reason: str
) -> None:
    bad = write(tmp_path, "AdministrativeSex", HEADER + rows)
    with pytest.raises(ConfigurationError, match=reason) as info:
        CodeMaps.load([tmp_path])
    assert f"{bad}:{line}:" in str(info.value)


def test_a_repeated_row_and_per_system_rows_are_not_conflicts(tmp_path: Path) -> None:
    write(
        tmp_path,
        "M",
        HEADER + "F,HL70001,female,,,\nF,HL70001,female,,,same again\nF,LOCAL,other,,,\n",
    )
    maps = CodeMaps.load([tmp_path])
    assert maps.lookup("M", "F", "HL70001") == MappedCode("female", None, None)
    assert maps.lookup("M", "F", "LOCAL") == MappedCode("other", None, None)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "Latin.csv"
    path.write_bytes("source_code,target_code\nF,f\xe9minin\n".encode("latin-1"))
    with pytest.raises(ConfigurationError, match="UTF-8") as info:
        CodeMaps.load([tmp_path])
    assert str(path) in str(info.value)


# --- the importer script ------------------------------------------------------------------

IG_FILES = (
    "HL7 Concept Map_ AdministrativeSex - Sheet1.csv",
    "HL7 Concept Map_ PatientClass[EncounterClass] - Sheet1.csv",
    "HL7 Concept Map_ SegmentActionCode - Sheet1.csv",
    "HL7 Concept Map_ DietType - Sheet1.csv",
)


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.skipif(
    not IG_CODESYSTEMS.is_dir(), reason=f"IG reference files not present at {IG_CODESYSTEMS}"
)
def test_importer_normalises_ig_files(tmp_path: Path) -> None:
    source = tmp_path / "ig"
    source.mkdir()
    for name in IG_FILES:
        shutil.copy(IG_CODESYSTEMS / name, source / name)
    (source / "notes.txt").write_text("not a map\n", encoding="utf-8")
    dest = tmp_path / "out"

    result = subprocess.run(
        [sys.executable, str(IMPORTER), "--source", str(source), "--dest", str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 3 maps" in result.stdout
    assert "notes.txt" in result.stdout
    assert "DietType" in result.stdout  # FHIR-only list: skipped with a reason

    assert sorted(p.name for p in dest.iterdir()) == [
        "AdministrativeSex.csv",
        "PatientClass-EncounterClass.csv",
        "SOURCE.md",
        "SegmentActionCode.csv",
    ]
    sex = read_rows(dest / "AdministrativeSex.csv")
    assert sex[0] == HEADER.strip().split(",")
    assert sex[1] == ["F", "HL70001", "female", "Female", GENDER, ""]
    assert [row[0] for row in sex[1:]] == ["F", "M", "O", "U", "A", "N"]

    encounter = read_rows(dest / "PatientClass-EncounterClass.csv")
    act = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert encounter[1] == ["E", "HL70004", "EMER", "emergency", act, ""]
    assert len(encounter) == 1 + 9  # FHIR-only rows (FLD, HH, ...) are dropped

    actions = read_rows(dest / "SegmentActionCode.csv")
    assert actions[3][:3] == ["U", "HL70206", "PUT"]
    # The IG's alternative (PATCH) is named in the comment, not a second, conflicting row.
    assert [row[0] for row in actions].count("U") == 1
    assert "alternative in the IG: PATCH" in actions[3][5]
    assert actions[3][5].startswith("condition (Narrative): local assessment")
    assert actions[4] == ["X", "HL70206", "", "", "", ""]  # unmapped row kept

    assert (dest / "AdministrativeSex.csv").read_bytes().count(b"\r") == 0
    source_md = (dest / "SOURCE.md").read_text(encoding="utf-8")
    assert "Apache" in source_md and "import_codemaps.py" in source_md
    assert "| AdministrativeSex | 6 | 6 |" in source_md

    # Deterministic: a second run rewrites byte-identical files.
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    subprocess.run(
        [sys.executable, str(IMPORTER), "--source", str(source), "--dest", str(dest)],
        capture_output=True,
        check=True,
    )
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before

    # The output loads with the loader.
    maps = CodeMaps.load([dest])
    assert maps.lookup("AdministrativeSex", "f", "0001") == MappedCode("female", "Female", GENDER)
