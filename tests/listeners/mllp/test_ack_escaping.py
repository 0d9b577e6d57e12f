"""Bytes copied from the received MSH into the ACK: control bytes are escaped, nothing else.

A raw FS followed by the ACK's segment CR ends the ACK's MLLP frame early on the sender's
side, and a raw VT starts a new one: either way the sender reads a truncated ACK whose
MSA-2 does not match, and stray bytes. HL7 writes such bytes as ``\\Xhh\\``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converter.hl7v2.encoding import Encoding
from listeners.mllp.ack import build_ack, parse_ack
from listeners.mllp.framing import FrameDecoder, frame

from ._support import RawConnection, Recorder, message, port_of, run, serving

CONTROLS = bytes([*range(0x20), 0x7F])


def raw_message(
    control_id: bytes = b"C1",
    *,
    sending: bytes = b"LAB",
    msh9: bytes = b"ADT^A01^ADT_A01",
    processing: bytes = b"P",
    version: bytes = b"2.5.1",
    charset: bytes = b"",
    msh2: bytes = b"^~\\&",
) -> bytes:
    """A message built from bytes, so that any byte can be put in any MSH field."""
    fields = [
        b"MSH",
        msh2,
        sending,
        b"FAC",
        b"PASSERELLE",
        b"HOSP",
        b"20240102030405",
        b"",
        msh9,
        control_id,
        processing,
        version,
        b"",
        b"",
        b"",
        b"",
        b"",
        charset,
    ]
    return b"|".join(fields) + b"\rPID|1\r"


def ack_fields(ack: bytes) -> list[list[bytes]]:
    return [segment.split(b"|") for segment in ack.rstrip(b"\r").split(b"\r")]


def hex_escaped(value: bytes, esc: bytes = b"\\") -> bytes:
    """What the ACK should hold for ``value``: each control byte as ``\\Xhh\\``."""
    return re.sub(rb"[\x00-\x1f\x7f]", lambda m: esc + b"X%02X" % m.group()[0] + esc, value)


def assert_one_clean_frame(ack: bytes) -> None:
    """The framed ACK reads back as exactly itself, and holds no control byte but CR."""
    decoder = FrameDecoder()
    assert decoder.feed(frame(ack)) == [ack]
    assert (decoder.dropped_bytes, decoder.abandoned_frames) == (0, 0)
    assert not set(ack) & (set(CONTROLS) - {0x0D})


def test_fs_in_msh10_is_escaped_in_msa2() -> None:
    ack = build_ack(raw_message(b"CTRL1\x1c"), control_id="A1")
    assert_one_clean_frame(ack)
    msa = ack_fields(ack)[1]
    assert msa == [b"MSA", b"AA", b"CTRL1\\X1C\\"]
    assert Encoding().unescape(msa[2].decode()) == "CTRL1\x1c"
    assert parse_ack(ack).acknowledged_id == "CTRL1\\X1C\\"


def test_vt_in_msh3_is_escaped_in_msh5() -> None:
    ack = build_ack(raw_message(sending=b"APP\x0bX"))
    assert_one_clean_frame(ack)
    assert ack_fields(ack)[0][4] == b"APP\\X0B\\X"


@pytest.mark.parametrize("charset", [b"", b"UNICODE UTF-8", b"8859/1", b"ASCII"])
def test_every_control_byte_in_every_copied_field_is_escaped(charset: bytes) -> None:
    # CR and LF end the MSH segment, so they cannot occur inside one of its fields.
    value = bytes(b for b in CONTROLS if b not in b"\r\n")
    payload = raw_message(
        b"ID" + value,
        sending=b"S" + value,
        msh9=b"ADT^A0" + value,
        processing=b"P" + value,
        version=b"2.5" + value,
        charset=charset,
    )
    ack = build_ack(payload)
    assert_one_clean_frame(ack)
    msh, msa = ack_fields(ack)
    escaped = hex_escaped(value)
    assert msh[4] == b"S" + escaped
    assert msh[8] == b"ACK^A0" + escaped + b"^ACK"
    assert msh[10] == b"P" + escaped
    assert msh[11] == b"2.5" + escaped
    assert msa[2] == b"ID" + escaped
    assert msh[17:] == ([charset] if charset else [])


def test_a_control_byte_in_msh18_is_escaped_when_msh18_is_echoed() -> None:
    ack = build_ack(raw_message(charset=b"UNICODE UTF-8\x1c\x0b"))
    assert_one_clean_frame(ack)
    assert ack_fields(ack)[0][17] == b"UNICODE UTF-8\\X1C\\\\X0B\\"


def test_ordinary_values_are_copied_byte_for_byte() -> None:
    control_id = b"Ab-9.x_Z/~&^%$#@!*()+=[]{}:;'\",<>? "
    payload = raw_message(control_id, sending=b"LAB^1.2.3^ISO")
    msh, msa = ack_fields(build_ack(payload))
    assert msa[2] == control_id
    assert msh[4] == b"LAB^1.2.3^ISO"


def test_escape_sequences_in_the_message_are_kept_as_they_are() -> None:
    # Already escaped by the sender: copied as is, not escaped again (no \E\X0B\E\).
    control_id = b"A\\X0B\\B\\F\\C\\E\\"
    ack = build_ack(raw_message(control_id + b"\x0b"))
    assert ack_fields(ack)[1][2] == control_id + b"\\X0B\\"
    assert Encoding().unescape(ack_fields(ack)[1][2].decode()) == "A\x0bB|C\\\x0b"


def test_the_message_escape_character_is_used() -> None:
    ack = build_ack(raw_message(b"CTRL1\x1c", msh2=b"^~!&"))
    assert ack_fields(ack)[1][2] == b"CTRL1!X1C!"


def test_without_an_escape_character_control_bytes_become_spaces() -> None:
    ack = build_ack(raw_message(b"CTRL1\x1cX", msh2=b"^~"))
    assert_one_clean_frame(ack)
    assert ack_fields(ack)[1][2] == b"CTRL1 X"


def test_a_control_character_chosen_as_delimiter_stays_a_delimiter() -> None:
    # Not recommended, but a delimiter: the HD components of MSH-3 must survive the swap.
    payload = raw_message(
        b"C\x0b", sending=b"LAB\x011.2.3\x01ISO", msh9=b"ADT\x01A01", msh2=b"\x01~\\&"
    )
    ack = build_ack(payload)
    msh, msa = ack_fields(ack)
    assert msh[1] == b"\x01~\\&"
    assert msh[4] == b"LAB\x011.2.3\x01ISO"
    assert msh[8] == b"ACK\x01A01\x01ACK"
    assert msa[2] == b"C\\X0B\\"


def test_esc_of_an_iso_2022_charset_is_text_not_a_control_byte() -> None:
    # ISO IR87 (ISO-2022-JP) switches to JIS X 0208 and back with ESC sequences: escaping
    # ESC would turn the sending application's name into garbage.
    name = "テスト".encode("iso2022_jp")
    assert b"\x1b" in name
    ack = build_ack(raw_message(b"J\x0b" + name, sending=name, charset=b"ISO IR87"))
    msh, msa = ack_fields(ack)
    assert msh[4] == name
    assert msh[4].decode("iso2022_jp") == "テスト"
    assert msa[2] == b"J\\X0B\\" + name
    # Elsewhere ESC is a control byte like the others.
    assert ack_fields(build_ack(raw_message(b"J\x1b")))[1][2] == b"J\\X1B\\"


# Any bytes a sender may put in MSH-10: all but CR and LF (they end the segment) and the
# field separator.
control_ids = st.binary(max_size=40).map(lambda b: b.translate(None, b"\r\n|"))


@given(control_ids, st.sampled_from([b"", b"UNICODE UTF-8", b"8859/1"]))
def test_any_msh10_gives_one_clean_ack_frame_whose_msa2_reads_back(
    control_id: bytes, charset: bytes
) -> None:
    ack = build_ack(raw_message(control_id, charset=charset), control_id="A1")
    assert_one_clean_frame(ack)
    msa2 = msa2_of(ack)
    valid = charset != b"UNICODE UTF-8" or _is_utf8(control_id)
    if valid and not set(control_id) & set(CONTROLS):
        assert msa2 == control_id  # nothing to escape: the very same bytes
    if b"\\" not in control_id:
        # A receiver unescaping MSA-2 gets its MSH-10 back (\\Xhh\\ read as raw bytes).
        assert Encoding().unescape(msa2.decode("latin-1"), "latin-1") == control_id.decode(
            "latin-1"
        )


@given(control_ids)
def test_control_bytes_are_the_only_change(control_id: bytes) -> None:
    # Escape characters and sequences included: MSA-2 is MSH-10 with \Xhh\ for each
    # control byte, nothing more.
    msa2 = msa2_of(build_ack(raw_message(control_id)))
    assert msa2 == hex_escaped(control_id)


def msa2_of(ack: bytes) -> bytes:
    msa = ack_fields(ack)[1]
    return msa[2] if len(msa) > 2 else b""  # an empty MSA-2 is trimmed


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Over a real socket: the sender's MLLP reader must get the whole ACK, and nothing else.
# (A raw VT cannot be sent this way: inside a frame it starts a new one.)


def test_the_sender_reads_the_whole_ack_and_no_stray_bytes() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            conn = await RawConnection.open(port_of(server))
            ack = await conn.exchange(raw_message(b"CTRL1\x1c", sending=b"APP\x1dX"))
            assert ack is not None
            info = parse_ack(ack)
            assert (info.code, info.acknowledged_id) == ("AA", "CTRL1\\X1C\\")
            assert Encoding().unescape(info.acknowledged_id) == "CTRL1\x1c"
            assert info.header.field(5) == "APP\\X1D\\X"
            # The connection goes on, in step: the next ACK is the next message's.
            ack = await conn.exchange(message("NEXT"))
            assert ack is not None and parse_ack(ack).acknowledged_id == "NEXT"
            assert (conn.frames.dropped_bytes, conn.frames.abandoned_frames) == (0, 0)
            await conn.close()

    run(scenario())
