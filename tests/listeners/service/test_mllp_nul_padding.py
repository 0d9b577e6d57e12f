"""An engine padding its frames with NUL bytes, against the running service: its messages
are stored and delivered, and its NUL keep-alives are not answered."""

from __future__ import annotations

import socket
from pathlib import Path

from listeners.mllp import parse_ack
from listeners.mllp.framing import FrameDecoder, frame
from tests.listeners.service.support import adt, make_config, running


def _exchange(port: int, payload: bytes, timeout: float = 10.0) -> bytes | None:
    """Send one frame; the frame answered, or None when nothing comes within ``timeout``."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(frame(payload))
        sock.settimeout(timeout)
        decoder = FrameDecoder()
        try:
            while data := sock.recv(65536):
                for item in decoder.feed(data):
                    assert isinstance(item, bytes)
                    return item
        except TimeoutError:
            return None
    return None


def test_nul_padded_messages_are_delivered_and_nul_keep_alives_not_answered(
    tmp_path: Path,
) -> None:
    """Before: a frame of NULs got an AR; a message with leading NULs an AR (error 100);
    one with trailing NULs an AA, then a dead letter (``ParseError``, its last segment
    holding the NULs): acknowledged and never delivered."""
    with running(make_config(tmp_path, {})) as service:
        port = service.mllp_port()
        assert _exchange(port, b"\x00" * 32, timeout=1.0) is None
        for control_id, payload in (
            ("PAD-LEAD", b"\x00\x00" + adt("PAD-LEAD", mrn="MRN-PAD-1")),
            ("PAD-TAIL", adt("PAD-TAIL", mrn="MRN-PAD-2") + b"\x00" * 40),
        ):
            reply = _exchange(port, payload)
            assert reply is not None
            ack = parse_ack(reply)
            assert (ack.code, ack.acknowledged_id) == ("AA", control_id), ack.texts
        service.drained()
        assert service.service.queue.list_dead_letters() == []
        out = sorted((tmp_path / "data" / "out").rglob("*.json"))
        assert len(out) == 2
        metrics = service.metrics()
        assert metrics.value("passerelle_messages_acknowledged_total", code="AR") == 0
