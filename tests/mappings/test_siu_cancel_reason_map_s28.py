"""A site's own SCH-6 cancellation reasons read through a code map.

The patient of a cancelled appointment is `declined` when SCH-6 says the patient called it
off in the R4 code system appointment-cancellation-reason (test_siu_participants_s27.py). A
scheduling system that sends its own codes (`ANNPAT^Annulé par le patient^L`) could never
say so: the code map AppointmentCancellationReason-Passerelle, shipped without rows and
replaced by a site's `codemaps/` file, maps SCH-6.1 (with SCH-6.3) to an R4 reason.
cancelationReason then carries the mapped coding before the sender's own, and a mapped
patient reason declines as a sent one does; another mapped reason (`prov`) does not.
Invented patient and staff (tests/mappings/test_siu.py builds the messages)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.mappings.test_siu import appointment, convert, message
from tests.mappings.test_siu_participants_s27 import REASONS, patient_status
from tests.support.r4validator import R4Validator

MAP = "AppointmentCancellationReason-Passerelle"
BUILTIN = Path(__file__).resolve().parents[2] / "mappings" / "codemaps" / f"{MAP}.csv"
HEADER = "source_code,source_system,target_code,target_display,target_system,comment\n"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
AGENDA = "https://agenda-tilleul.example.org/motifs-annulation"

#: The scheduling system's local codes, as a site maps them.
SITE_ROWS = (
    f"ANNPAT,L,pat,Patient,{REASONS},cancelled by the patient\n"
    f"ANNDEM,99AGD,pat-mv,Patient: Moved,{REASONS},the patient moved away\n"
    f"ANNPRV,L,prov,Provider,{REASONS},cancelled by the doctor\n"
    # A patient's request, but in another code system: not the R4 reason.
    f"ANNDMD,L,PATRQT,patient requested,{ACT_REASON},not an appointment-cancellation-reason\n"
    # `pat` of the site's own system: not the R4 reason.
    f"ANNSYS,L,pat,Patient,{AGENDA},a code of another system\n"
)

PATIENT = {"system": REASONS, "code": "pat", "display": "Patient"}


@pytest.fixture(scope="module")
def site_converter(tmp_path_factory: pytest.TempPathFactory) -> Converter:
    """A site whose override directory maps its scheduling system's cancellation codes."""
    site = tmp_path_factory.mktemp("site")
    (site / "codemaps").mkdir()
    (site / "codemaps" / f"{MAP}.csv").write_text(HEADER + SITE_ROWS, encoding="utf-8")
    return Converter(ConverterConfig(default_timezone="Europe/Paris", template_dirs=(site,)))


def cancelled(
    converter: Converter, r4validator: R4Validator, reason: str, event: str = "S15"
) -> tuple[str, list[dict[str, Any]]]:
    """The patient's status and the cancelationReason codings of an appointment whose
    SCH-6 is ``reason``."""
    bundle, _ = convert(converter, r4validator, message(event, {6: reason}))
    return patient_status(bundle), appointment(bundle)["cancelationReason"]["coding"]


def test_the_built_in_map_has_no_site_code() -> None:
    """Shipped with its header only: no scheduling system's local codes are everyone's."""
    with BUILTIN.open(encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle)) == [HEADER.strip().split(",")]


def test_a_local_patient_reason_mapped_by_the_site_declines(
    site_converter: Converter, r4validator: R4Validator
) -> None:
    status, coding = cancelled(site_converter, r4validator, "ANNPAT^Annulé par le patient^L")
    assert status == "declined"
    # The mapped R4 coding first, the sender's own kept (a local system: no system).
    assert coding == [PATIENT, {"code": "ANNPAT", "display": "Annulé par le patient"}]


def test_a_mapped_patient_branch_code_declines(
    site_converter: Converter, r4validator: R4Validator
) -> None:
    status, coding = cancelled(site_converter, r4validator, "ANNDEM^Déménagement^99AGD")
    assert status == "declined"
    assert coding[0] == {"system": REASONS, "code": "pat-mv", "display": "Patient: Moved"}


def test_without_the_site_map_a_local_code_stays_accepted(
    converter: Converter, r4validator: R4Validator
) -> None:
    status, coding = cancelled(converter, r4validator, "ANNPAT^Annulé par le patient^L")
    assert status == "accepted"
    assert coding == [{"code": "ANNPAT", "display": "Annulé par le patient"}]


@pytest.mark.parametrize("site", [False, True], ids=["built-in", "site"])
def test_an_r4_patient_reason_still_declines(
    converter: Converter, site_converter: Converter, r4validator: R4Validator, site: bool
) -> None:
    """Today's rule, with or without a site map: `pat` sent in the R4 system."""
    status, coding = cancelled(
        site_converter if site else converter, r4validator, f"pat^Patient^{REASONS}"
    )
    assert (status, coding) == ("declined", [PATIENT])


@pytest.mark.parametrize(
    ("reason", "target"),
    [
        (
            "ANNPRV^Annulé par le médecin^L",
            {"system": REASONS, "code": "prov", "display": "Provider"},
        ),
        (
            "ANNDMD^Demande du patient^L",
            {"system": ACT_REASON, "code": "PATRQT", "display": "patient requested"},
        ),
        ("ANNSYS^Annulé (patient)^L", {"system": AGENDA, "code": "pat", "display": "Patient"}),
    ],
    ids=["provider-reason", "patient-request-of-another-system", "pat-of-another-system"],
)
def test_another_mapped_reason_keeps_the_patient_accepted(
    site_converter: Converter, r4validator: R4Validator, reason: str, target: dict[str, str]
) -> None:
    status, coding = cancelled(site_converter, r4validator, reason)
    assert status == "accepted"
    assert coding[0] == target and len(coding) == 2


def test_a_no_show_gains_the_coding_but_not_a_declined_patient(
    site_converter: Converter, r4validator: R4Validator
) -> None:
    """S26: cancelationReason is written for a no-show too (R4 app-4); the patient had not
    declined the appointment he missed."""
    status, coding = cancelled(
        site_converter, r4validator, "ANNPAT^Annulé par le patient^L", event="S26"
    )
    assert status == "accepted"
    assert coding[0] == PATIENT


def test_a_site_row_without_a_target_system_converts(
    tmp_path: Path, r4validator: R4Validator
) -> None:
    """A site row giving a code and no system (the loader leaves the empty key out): the
    CodeableConcept macro read ``mapped.system`` and every message carrying that code
    failed with a TemplateError. The coding is written as mapped; without the R4 system
    it declines no one."""
    (tmp_path / "codemaps").mkdir()
    (tmp_path / "codemaps" / f"{MAP}.csv").write_text(
        HEADER + "ANNPAT,L,pat,Patient,,no system given\n", encoding="utf-8"
    )
    converter = Converter(
        ConverterConfig(default_timezone="Europe/Paris", template_dirs=(tmp_path,))
    )
    status, coding = cancelled(converter, r4validator, "ANNPAT^Annulé par le patient^L")
    assert status == "accepted"
    assert coding == [
        {"code": "pat", "display": "Patient"},
        {"code": "ANNPAT", "display": "Annulé par le patient"},
    ]
