"""peek_header: MSH and the first PID read without decoding the rest of the message."""

from __future__ import annotations

import pytest

from converter.errors import ParseError
from converter.hl7v2 import peek_header
from converter.hl7v2.encoding import DEFAULT_ENCODING
from converter.hl7v2.peek import full_hd

MSH = (
    b"MSH|^~\\&|APP^1.2.3^ISO|FAC|RCV|RFAC|20240301101500+0100||ADT^A08^ADT_A01|CTL-9|P|2.5.1"
    b"|||AL|NE||UNICODE UTF-8"
)
PID = b"PID|1||12345^^^HOSP&1.2.250.1&ISO^MR~999^^^OTHER^PI||DOE^JANE"


@pytest.mark.parametrize("newline", [b"\r", b"\n", b"\r\n"])
def test_reads_msh_and_the_first_pid_whatever_the_line_breaks(newline: bytes) -> None:
    data = newline.join([MSH, b"EVN|A08|20240301", PID, b"PID|2||OTHER^^^X", b"PV1|1|I"])
    header = peek_header(data + newline)
    assert (header.sending_application, header.sending_facility) == ("APP", "FAC")
    assert header.control_id == "CTL-9"
    assert (header.event, header.structure, header.version) == ("ADT^A08", "ADT_A01", "2.5.1")
    assert (header.accept_ack_type, header.application_ack_type) == ("AL", "NE")
    assert header.charset == "UNICODE UTF-8" and header.enhanced_mode
    assert header.patient_key == "12345^HOSP&1.2.250.1&ISO"


def test_msh2_of_three_characters_has_no_subcomponent_separator() -> None:
    # Once "&" was assumed (a version "2.5&x" read as "2.5"); with none declared, a split
    # on it would be a ValueError before the ACK.
    data = MSH.replace(b"^~\\&", b"^~\\", 1).replace(b"|2.5.1", b"|2.5 & 2.6", 1)
    header = peek_header(data + b"\r" + PID)
    assert header.encoding.msh2 == "^~\\"
    assert header.version == "2.5 & 2.6"
    assert header.control_id == "CTL-9"


def test_without_pid_the_patient_key_is_empty_and_bytes_after_msh_are_not_decoded() -> None:
    # Invalid UTF-8 in a later segment does not matter to the header.
    header = peek_header(MSH + b"\rOBX|1|ST|X||\xff\xfe\r")
    assert header.patient_key == "" and header.control_id == "CTL-9"


def test_a_pid_prefix_inside_a_value_is_not_a_segment() -> None:
    data = MSH + b"\rNTE|1||see PID|9 below\rPID|1||777^^^H^MR\r"
    assert peek_header(data).patient_key == "777^H"


@pytest.mark.parametrize("data", [b"", b"PID|1", b"MSH1^~\\&|", b"MSH|AB|x"])
def test_no_usable_msh_is_a_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        peek_header(data)


@pytest.mark.parametrize(
    ("data", "location"),
    [(b"MSHDUPONT Marie|x", "MSH-1"), (b"MSH|DUPONT Marie|x|y", "MSH-2")],
)
def test_a_header_error_names_its_place_not_what_stands_there(data: bytes, location: str) -> None:
    # "MSH" can occur inside text: what follows it may be patient data, kept in detail.
    with pytest.raises(ParseError) as info:
        peek_header(data)
    assert info.value.location == location
    assert "DUPONT" not in str(info.value)
    assert info.value.detail is not None


# -- the sender: HD.1 for routes and ordering, every component for duplicate detection --
def _msh(sending: bytes, facility: bytes, chars: bytes = b"^~\\&", sep: bytes = b"|") -> bytes:
    fields = [b"MSH", chars, sending, facility, b"RCV", b"RFAC", b"2024", b"", b"ADT^A01", b"C1"]
    return sep.join(fields) + b"\r"


def test_the_sender_identity_keeps_every_hd_component() -> None:
    header = peek_header(MSH)
    assert header.sender == "APP^FAC"  # routes match HD.1: unchanged
    assert header.sender_identity == "APP^1.2.3^ISO|FAC"
    one = peek_header(_msh(b"APP", b"FAC^1.2.3^ISO"))
    other = peek_header(_msh(b"APP", b"FAC^9.9.9^ISO"))
    assert one.sender == other.sender == "APP^FAC"
    assert one.sender_identity == "APP|FAC^1.2.3^ISO"
    assert other.sender_identity == "APP|FAC^9.9.9^ISO"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # Trailing empty components and repetitions do not make another sender.
        (_msh(b"APP", b"FAC^1.2.3^ISO"), _msh(b"APP^^", b"FAC^1.2.3^ISO^~X")),
        # Nor do other delimiters or an escape for a plain character.
        (_msh(b"APP", b"FAC^1.2.3^ISO"), _msh(b"APP", b"FAC$1.2.3$ISO", b"$~\\&")),
        (_msh(b"APP", b"FAC^1.2.3^ISO"), _msh(b"APP", b"FAC^1.2.3^IS\\X4F\\")),
    ],
)
def test_one_sender_has_one_identity(a: bytes, b: bytes) -> None:
    assert peek_header(a).sender_identity == peek_header(b).sender_identity


def test_an_escaped_delimiter_cannot_forge_another_senders_identity() -> None:
    # (X^Y as a value, Z) and (X, Y^Z as components) once both read "X^Y^Z".
    escaped = peek_header(_msh(b"X\\S\\Y", b"Z"))
    split = peek_header(_msh(b"X", b"Y^Z"))
    assert escaped.sender_identity == "X\\S\\Y|Z"
    assert split.sender_identity == "X|Y^Z"
    # A field separator inside a value stays escaped: the "|" between MSH-3 and MSH-4
    # is the only raw one.
    assert peek_header(_msh(b"X\\F\\Y", b"Z")).sender_identity == "X\\F\\Y|Z"


def test_full_hd_of_an_empty_field_is_empty() -> None:
    assert full_hd("", DEFAULT_ENCODING) == ""
    assert full_hd("^^", DEFAULT_ENCODING) == ""
    assert full_hd("^1.2.3^ISO", DEFAULT_ENCODING) == "^1.2.3^ISO"


#: PID-3 / PID-2 / PID-4 as senders write them for two patients (IPP1 and IPP2): the
#: A01's lone MR, the A08 after INS qualification listing the INS first, an empty first
#: repetition, an MR after a PI, a PI only, and the older PID-2 / PID-4 alone.
_PIDS = [
    ("IPP1^^^H&1.2.250.9&ISO^MR", "", ""),
    ("INS1^^^ASIP&1.2.250.1.213.1.4.8&ISO^INS~IPP1^^^H&1.2.250.9&ISO^MR", "", ""),
    ("~IPP1^^^H&1.2.250.9&ISO^MR", "", ""),
    ("IPP2^^^H&1.2.250.9&ISO^PI~IPP1^^^H&1.2.250.9&ISO^MR", "", ""),
    ("ACC9^^^H&1.2.250.9&ISO^AN~IPP2^^^H&1.2.250.9&ISO^PI", "", ""),
    ("IPP2^^^H&1.2.250.9&ISO^PI", "", ""),
    ("", "IPP1^^^H&1.2.250.9&ISO", "OLD7^^^H"),
    ("", "", "OLD7^^^H"),
    ('""', "", "OLD7^^^H"),
    # An MR naming no number names no one: the PI after it is the patient.
    ("^^^H&1.2.250.9&ISO^MR~IPP2^^^H&1.2.250.9&ISO^PI", "", ""),
    # No ID number anywhere: no key (each message its own), and a Patient per message,
    # not one "no identifier" Patient per facility merging every such person.
    ("^^^H&1.2.250.9&ISO^MR", "", ""),
    ("^^^H&1.2.250.9&ISO^MR", "", ""),
]


def test_the_patient_key_follows_the_identifier_the_patient_id_derives_from() -> None:
    """Two messages converted to one Patient share one ordering key, and two Patients
    never share one: the key once came from PID-3's first repetition, so the A08 listing
    an INS before the A01's MR was another key, delivered alongside its A01."""
    from converter import Converter, ConverterConfig

    converter = Converter(ConverterConfig())
    keys, patient_ids = [], []
    for n, (pid3, pid2, pid4) in enumerate(_PIDS):
        data = MSH.replace(b"CTL-9", b"CTL-%d" % n) + (
            f"\rEVN|A08|20240301\rPID|1|{pid2}|{pid3}|{pid4}|DOE^JANE\rPV1|1|I\r".encode()
        )
        # The ingest's ordering key: a message naming no patient is its own.
        keys.append(peek_header(data).patient_key or f"message:CTL-{n}")
        (conversion,) = converter.convert(data)
        (patient,) = [
            e["resource"]
            for e in conversion.bundle["entry"]
            if e["resource"]["resourceType"] == "Patient"
        ]
        patient_ids.append(patient["id"])
    for i in range(len(_PIDS)):
        for j in range(len(_PIDS)):
            same_patient = patient_ids[i] == patient_ids[j]
            assert (keys[i] == keys[j]) == same_patient, (_PIDS[i], _PIDS[j], keys[i], keys[j])
    assert keys[0] == "IPP1^H&1.2.250.9&ISO" and keys[7] == "OLD7^H"
