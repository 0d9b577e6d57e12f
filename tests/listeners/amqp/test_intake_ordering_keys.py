"""Ordering keys of consumed messages that name no patient, or name it after a null id.

``envelope_of`` reads a consumed message's body, content type, headers and ids. The
message here is a plain object with those attributes (what the consumer hands over comes
from the real broker in the other AMQP tests); the CDA parser, header peek, routes and
support checks are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from listeners.amqp.intake import envelope_of
from listeners.config import load_config
from listeners.ingest import SupportChecker

SAMPLE = Path(__file__).parents[3] / "samples" / "cda" / "CCD_lefevre-camille.xml"


@dataclass
class _Consumed:
    body: bytes
    content_type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None


def _key(body: bytes, message_id: str | None = None) -> str:
    config = load_config(None, env={})
    support = SupportChecker({"default": config.default_route()})
    consumed: Any = _Consumed(body=body, message_id=message_id)
    return envelope_of(consumed, listener="amqp", config=config, support=support).ordering_key


def _patient_ids(document: bytes, ids: str) -> bytes:
    """The CCD sample with its patientRole ids replaced by ``ids``."""
    head, rest = document.split(b"<patientRole>", 1)
    _, tail = rest.split(b"<addr", 1)
    return head + b"<patientRole>" + ids.encode() + b"<addr" + tail


def test_two_documents_of_one_patient_behind_a_null_first_id_share_a_key() -> None:
    document = SAMPLE.read_bytes()
    assert b"<patientRole>" in document
    real = '<id root="1.2.250.1.213.1.4.8" extension="1890175112005"/>'
    first = _patient_ids(document, '<id nullFlavor="NI" extension="D1"/>' + real)
    second = _patient_ids(document, '<id nullFlavor="UNK" extension="D2"/>' + real)
    key = _key(first)
    assert key == _key(second)
    assert key.endswith("|1.2.250.1.213.1.4.8^1890175112005")


def test_a_message_naming_no_patient_nor_control_id_gets_a_lane_of_its_own() -> None:
    def adt(family: str) -> bytes:
        return (
            "MSH|^~\\&|APP|FAC|RCV|RCVFAC|20240101120000||ADT^A08^ADT_A01||P|2.5\r"
            f"EVN|A08|20240101120000\rPID|1||||{family}^JEAN\rPV1|1|I\r"
        ).encode()

    first, second = _key(adt("MARTIN")), _key(adt("DURAND"))
    assert "None" not in first and "None" not in second
    assert first != second  # before: both "…|message:None", one lane for every such message
    assert "MARTIN" not in first  # a digest, not the body
    assert _key(adt("MARTIN"), message_id="m-1").endswith("|message:m-1")


def _control_id(
    body: bytes, content_type: str | None = None, *, config_file: Path | None = None
) -> str | None:
    config = load_config(config_file, env={})
    support = SupportChecker({"default": config.default_route()})
    consumed: Any = _Consumed(body=body, content_type=content_type)
    return envelope_of(consumed, listener="amqp", config=config, support=support).control_id


def _accented(control_id: str, msh18: str = "") -> str:
    return (
        f"MSH|^~\\&|APP|FAC|RCV|RCVFAC|20240101120000||ADT^A08^ADT_A01|{control_id}|P|2.5"
        f"|||||{msh18}\rEVN|A08|20240101120000\rPID|1||123^^^FAC^MR||MARTIN^JEAN\rPV1|1|I\r"
    )


def test_a_control_id_is_read_in_the_message_charset() -> None:
    # Read as Latin-1 whatever MSH-18 said, a UTF-8 "CTRL-é" was stored as "CTRL-Ã©".
    assert _control_id(_accented("CTRL-é", "UNICODE UTF-8").encode()) == "CTRL-é"
    assert _control_id(_accented("CTRL-é").encode()) == "CTRL-é"  # the default, UTF-8
    assert _control_id(_accented("CTRL-è", "8859/1").encode("latin-1")) == "CTRL-è"
    # No MSH-18: the content type's charset says how the body is written.
    latin = _accented("CTRL-è").encode("latin-1")
    assert _control_id(latin, "x-application/hl7-v2+er7; charset=iso-8859-1") == "CTRL-è"


def test_without_msh18_the_control_id_is_read_in_the_configured_charset(tmp_path: Path) -> None:
    # 0xA4 is € in ISO 8859-15 and ¤ in Latin-1, which the header was read in whatever
    # the converter's default charset said.
    config_file = tmp_path / "passerelle.toml"
    config_file.write_text('[converter]\ncharset = "8859/15"\n')
    body = _accented("CTRL-€").encode("iso-8859-15")
    assert _control_id(body, config_file=config_file) == "CTRL-€"
