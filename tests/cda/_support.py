"""Helpers shared by the CDA tests: a small valid C-CDA document, the CLI, the samples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from converter import Converter, ConverterConfig

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "cda"
CCD_SAMPLE = SAMPLES / "CCD_lefevre-camille.xml"

US_REALM_HEADER = "2.16.840.1.113883.10.20.22.1.1"
CCD = "2.16.840.1.113883.10.20.22.1.2"

NAMESPACES = (
    'xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:sdtc="urn:hl7-org:sdtc"'
)


def cda(
    *,
    prolog: str = "",
    templates: tuple[str, ...] = (US_REALM_HEADER, CCD),
    doc_id: str = '<id root="1.2.250.1.999.3.1" extension="QA-0001"/>',
    title: str = "QA document",
    header: str = "",
    body: str = "",
    root_attributes: str = "",
    declaration: bool = True,
) -> str:
    """A small C-CDA document that converts: US Realm Header, one patient, one author,
    a custodian and a structured body holding ``body`` (sections) or one narrative-only
    section. ``prolog`` goes between the XML declaration and the root element (comments,
    DOCTYPE, processing instructions); ``title``, ``header`` and ``body`` are raw XML."""
    template_ids = "".join(f'<templateId root="{t}" extension="2015-08-01"/>' for t in templates)
    sections = body or (
        "<component><section>"
        '<code code="10164-2" codeSystem="2.16.840.1.113883.6.1" displayName="HPI"/>'
        "<title>History of present illness</title>"
        "<text><paragraph>Nothing to report.</paragraph></text>"
        "</section></component>"
    )
    return (
        ('<?xml version="1.0" encoding="UTF-8"?>\n' if declaration else "")
        + prolog
        + f"<ClinicalDocument {NAMESPACES}{root_attributes}>"
        '<realmCode code="US"/>'
        '<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>'
        + template_ids
        + doc_id
        + '<code code="34133-9" codeSystem="2.16.840.1.113883.6.1" '
        'displayName="Summary of episode note"/>'
        f"<title>{title}</title>"
        '<effectiveTime value="20240312143000+0100"/>'
        '<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>'
        '<languageCode code="fr-FR"/>'
        "<recordTarget><patientRole>"
        '<id root="1.2.250.1.999.1.1" extension="IPP0001"/>'
        "<patient><name><given>Alice</given><family>Testeuse</family></name>"
        '<administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>'
        '<birthTime value="19700101"/></patient>'
        "</patientRole></recordTarget>"
        '<author><time value="20240312143000+0100"/><assignedAuthor>'
        '<id root="1.2.250.1.71.4.2.1" extension="10101234567"/>'
        "<assignedPerson><name><given>Bruno</given><family>Auteur</family></name>"
        "</assignedPerson></assignedAuthor></author>"
        "<custodian><assignedCustodian><representedCustodianOrganization>"
        '<id root="1.2.250.1.71.4.2.2" extension="690099901"/><name>Centre QA</name>'
        "</representedCustodianOrganization></assignedCustodian></custodian>"
        + header
        + f"<component><structuredBody>{sections}</structuredBody></component>"
        "</ClinicalDocument>\n"
    )


def passerelle_command() -> list[str]:
    """The installed ``passerelle`` script of this interpreter, else the module."""
    script = Path(sys.executable).with_name("passerelle")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "listeners.cli"]


def run_cli(
    *args: str | Path, cwd: Path = REPO, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``passerelle ARGS`` as a real process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [*passerelle_command(), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def convert_document(xml: str | bytes) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The bundle and warnings of one CDA document, times without an offset in
    Europe/Paris (the zone the expected bundles of samples/ are written with)."""
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    converter = Converter(ConverterConfig(default_timezone="Europe/Paris"))
    [conversion] = converter.convert(data, input_type="cda")
    return conversion.bundle, conversion.warnings


def resources_of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The bundle's resources of type ``kind``, in entry order."""
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def section(template: str, code: str, entries: str, text: str | None = None) -> str:
    """A structured-body ``component`` holding one section (templateId extension
    2015-08-01, a LOINC section code) with its narrative and entries."""
    return (
        f'<component><section><templateId root="{template}" extension="2015-08-01"/>'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/><title>{code}</title>'
        f"<text>{code if text is None else text}</text>{entries}</section></component>"
    )
