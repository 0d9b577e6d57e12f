"""Base64 in ED values (OBX-5.5): an MDM or ORU carrying a scanned report.

The templates checked the data one character at a time through Jinja's ``reject``
filter: a 9.3 MB MDM^T02 (a 7 MB PDF, inside the 10 MB MLLP frame limit) took 6.8 s to
convert, 0.2 s now that they check it as the CDA templates do (``str.strip`` of the
Base64 alphabet, and a length that is a multiple of 4: data of another length failed
FHIR validation, refusing the whole message; it is now left out with a warning, as a
character outside the alphabet is).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from tests.conftest import REPO_ROOT
from tests.support.hl7_edit import convert_one, lines, message, resources

SAMPLES = REPO_ROOT / "samples" / "hl7v2"
PAYLOAD = (hashlib.sha256(b"scan").digest() * 40_000)[:1_000_000]  # a 1 MB "PDF"


@pytest.fixture(scope="module", params=[True, False], ids=["strict", "lenient"])
def converter(request: pytest.FixtureRequest) -> Converter:
    return Converter(ConverterConfig(default_timezone="Europe/Paris", strict_values=request.param))


def _with_obx(sample: str, obx: str) -> bytes:
    """The sample with its OBX segments replaced by ``obx``."""
    segments = lines((SAMPLES / sample).read_bytes())
    return message([line for line in segments if not line.startswith("OBX|")] + [obx])


def _ed(data: str) -> str:
    return f"OBX|1|ED|18842-5^Discharge summary^LN||^AP^PDF^Base64^{data}||||||F"


def _mdm_attachments(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        content["attachment"]
        for document in resources(bundle, "DocumentReference")
        for content in document["content"]
        if content["attachment"].get("contentType") == "application/pdf"
    ]


def _oru_attachments(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        extension["valueAttachment"]
        for observation in resources(bundle, "Observation")
        for extension in observation.get("extension", [])
        if extension["url"].endswith("extension-Observation.valueAttachment")
    ]


CASES = {
    "MDM": ("MDM_T02_discharge-summary.hl7", _mdm_attachments, "OBX-5.5 in OBX"),
    "ORU": ("ORU_R01_lab-results.hl7", _oru_attachments, "OBX-5.5"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_large_base64_document_is_kept_whole(converter: Converter, case: str) -> None:
    sample, attachments, _ = CASES[case]
    # Broken over lines (\.br\ in ER7), as senders wrap Base64 at 76 characters.
    wrapped = base64.encodebytes(PAYLOAD).decode("ascii").replace("\n", "\\.br\\")
    bundle, warnings = convert_one(converter, _with_obx(sample, _ed(wrapped)))  # validated
    [attachment] = attachments(bundle)
    assert base64.b64decode(attachment["data"]) == PAYLOAD
    assert not [w for w in warnings if "Base64" in w], warnings


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "data",
    ["JVBERi0xLjQK?!", "JVBERi0xLjQ", "JVBER\\T\\0xLjQK", "é" + "A" * 11],
    ids=["outside-the-alphabet", "length-not-a-multiple-of-4", "escaped-ampersand", "accent"],
)
def test_what_is_not_base64_is_left_out_with_a_warning(
    converter: Converter, case: str, data: str
) -> None:
    sample, attachments, where = CASES[case]
    bundle, warnings = convert_one(converter, _with_obx(sample, _ed(data)))  # validated
    assert not [a for a in attachments(bundle) if "data" in a]
    assert [w for w in warnings if f"{where} is not valid Base64" in w], warnings
