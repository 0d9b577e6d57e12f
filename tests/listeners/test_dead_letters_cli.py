"""``passerelle dead-letters show`` keeps what may quote patient data behind --payload."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

SERVER_DIAGNOSTIC = "Patient.name: 'Quillebeuf' is not allowed"


def _store(path: Path, control_id: str = "DL-1") -> int:
    async def run() -> int:
        queue = SqliteQueue(path)
        await queue.start()
        try:
            envelope = Envelope(
                payload=b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|%s|P|2.5\rPID|1||1^^^X||QUILLEBEUF"
                % control_id.encode(),
                sender="mllp/A^B",
                listener="mllp",
                received_at=time.time(),
                ordering_key="k",
                control_id=control_id,
                message_type="ADT^A01^ADT_A01",
            )
            stored = await queue.put_dead_letter(
                envelope,
                {
                    "stage": "delivery",
                    "kind": "RejectedDeliveryError",
                    "reason": "HTTP 422",
                    "status": 422,
                    "detail": "value 19711341",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [
                            {
                                "severity": "error",
                                "code": "invalid",
                                "diagnostics": SERVER_DIAGNOSTIC,
                            }
                        ],
                    },
                },
            )
            return stored.seq
        finally:
            await queue.close()

    return asyncio.run(run())


def _dead_letters(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listeners.cli", "dead-letters", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _show(config: Path, letter: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return _dead_letters(config, "show", str(letter), *extra)


def test_show_hides_server_diagnostics_and_values_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    letter = _store(tmp_path / "data" / "queue.db")
    shown = _show(tmp_path / "passerelle.toml", letter)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["error"]["status"] == 422 and info["error"]["kind"] == "RejectedDeliveryError"
    assert "Quillebeuf" not in shown.stdout and "QUILLEBEUF" not in shown.stdout
    assert "19711341" not in shown.stdout
    assert "--payload" in info["error"]["outcome"]
    full = _show(tmp_path / "passerelle.toml", letter, "--payload")
    assert full.returncode == 0, full.stderr
    assert SERVER_DIAGNOSTIC in full.stdout and "19711341" in full.stdout
    assert "QUILLEBEUF" in full.stdout


def test_purge_refuses_a_negative_or_odd_age_and_keeps_the_dead_letters(tmp_path: Path) -> None:
    # "--older-than-days -5" once purged every dead letter: the cut-off lay in the future.
    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    _store(tmp_path / "data" / "queue.db")
    config = tmp_path / "passerelle.toml"
    for days in ("-5", "-inf", "nan"):
        refused = _dead_letters(config, "purge", f"--older-than-days={days}")
        assert refused.returncode == 2, refused.stderr
        assert "--older-than-days" in refused.stderr
    assert _dead_letters(config, "list").stdout.startswith("1 dead letter(s)")
    kept = _dead_letters(config, "purge", "--older-than-days", "1")
    assert kept.returncode == 0, kept.stderr
    assert _dead_letters(config, "list").stdout.startswith("1 dead letter(s)")


def test_control_characters_of_a_dead_letter_are_printed_escaped(tmp_path: Path) -> None:
    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    letter = _store(tmp_path / "data" / "queue.db", control_id="DL\x1b[2J\u2028\x9b1")
    config = tmp_path / "passerelle.toml"
    listed = _dead_letters(config, "list")
    assert "control-id=DL\\x1b[2J\\u2028\\x9b1" in listed.stdout
    for shown in (listed, _show(config, letter), _show(config, letter, "--payload")):
        assert shown.returncode == 0, shown.stderr
        assert not any(ch in shown.stdout for ch in "\x1b\u2028\x9b"), repr(shown.stdout)
    info = json.loads(_show(config, letter).stdout)
    assert info["control_id"] == "DL\x1b[2J\u2028\x9b1"  # the JSON still holds the value
    assert "|DL\\x1b[2J\\u2028\\x9b1|" in _show(config, letter, "--payload").stdout
