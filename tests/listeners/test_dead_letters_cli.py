"""``passerelle dead-letters show`` keeps what may quote patient data behind --payload."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from listeners.config import load_config
from listeners.dead_letters_cli import run_dead_letters
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

SERVER_DIAGNOSTIC = "Patient.name: 'Quillebeuf' is not allowed"


def _store(
    path: Path, control_id: str = "DL-1", reason: str = "HTTP 422", *, outcome: bool = True
) -> int:
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
            record: dict[str, object] = {
                "stage": "delivery",
                "kind": "RejectedDeliveryError",
                "reason": reason,
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
            }
            if not outcome:
                del record["outcome"]
            stored = await queue.put_dead_letter(envelope, record)
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


def _two_dead_letters(tmp_path: Path) -> tuple[Path, list[int]]:
    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    letters = [_store(tmp_path / "data" / "queue.db", control_id=f"DL-{n}") for n in (1, 2)]
    return tmp_path / "passerelle.toml", letters


def _count(config: Path) -> str:
    return _dead_letters(config, "list").stdout.splitlines()[0]


def test_purge_without_a_selection_deletes_nothing(tmp_path: Path) -> None:
    # A bare "purge" used to delete every dead letter, without asking.
    config, _ = _two_dead_letters(tmp_path)
    refused = _dead_letters(config, "purge")
    assert refused.returncode == 2
    assert "--older-than-days" in refused.stderr and "--all" in refused.stderr
    assert refused.stdout == ""
    assert _count(config) == "2 dead letter(s)"
    # An explicit age still works; 0 days selects them all.
    purged = _dead_letters(config, "purge", "--older-than-days", "0")
    assert purged.returncode == 0 and purged.stdout.strip() == "2 dead letter(s) purged"


def test_purge_all_in_the_command_handler(tmp_path: Path) -> None:
    """``purge --all`` (the parser's flag lives in listeners/cli.py), and --all with an age."""
    config_path, _ = _two_dead_letters(tmp_path)
    config = load_config(config_path, env={})

    def purge(older_than_days: float | None, purge_all: bool) -> int:
        args = argparse.Namespace(
            dl_command="purge", amqp=False, older_than_days=older_than_days, all=purge_all
        )
        return run_dead_letters(args, config)

    assert purge(None, False) == 2
    assert purge(1.0, True) == 2  # both: ambiguous, a usage error
    assert _count(config_path) == "2 dead letter(s)"
    assert purge(None, True) == 0
    assert _count(config_path) == "0 dead letter(s)"


def test_retry_with_an_id_and_all_is_a_usage_error(tmp_path: Path) -> None:
    # "retry 82 --all" used to ignore the id and retry everything.
    config, letters = _two_dead_letters(tmp_path)
    refused = _dead_letters(config, "retry", str(letters[0]), "--all")
    assert refused.returncode == 2
    assert "not both" in refused.stderr
    assert _count(config) == "2 dead letter(s)"
    one = _dead_letters(config, "retry", str(letters[0]))
    assert one.returncode == 0, one.stderr
    assert _count(config) == "1 dead letter(s)"


def test_reasons_stored_with_the_servers_diagnostics_are_listed_without_them(
    tmp_path: Path,
) -> None:
    """Dead letters stored before the fix have the outcome's summary in their reason."""
    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    old = f"destination default: HTTP 422 Unprocessable Entity: error invalid: {SERVER_DIAGNOSTIC}"
    letter = _store(tmp_path / "data" / "queue.db", reason=old)
    config = tmp_path / "passerelle.toml"
    listed = _dead_letters(config, "list")
    shown = _show(config, letter)
    for output in (listed, shown):
        assert output.returncode == 0, output.stderr
        assert "Quillebeuf" not in output.stdout
    assert "RejectedDeliveryError: destination default: HTTP 422 Unprocessable Entity" in (
        listed.stdout
    )
    assert json.loads(shown.stdout)["error"]["reason"] == (
        "destination default: HTTP 422 Unprocessable Entity"
    )
    assert SERVER_DIAGNOSTIC in _show(config, letter, "--payload").stdout


def test_urls_in_stored_reasons_are_listed_without_credentials(tmp_path: Path) -> None:
    """Reasons stored before the fix quote the destination URL as configured."""
    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    old = (
        "destination default: cannot reach http://fhiruser:URLPASSWORD@127.0.0.1:28099"
        "/fhir/R4?apikey=QSECRET: ConnectError: All connection attempts failed"
    )
    letter = _store(tmp_path / "data" / "queue.db", reason=old, outcome=False)
    config = tmp_path / "passerelle.toml"
    for output in (
        _dead_letters(config, "list"),
        _show(config, letter),
        _show(config, letter, "--payload"),
    ):
        assert output.returncode == 0, output.stderr
        assert "URLPASSWORD" not in output.stdout and "QSECRET" not in output.stdout
        assert "cannot reach http://fhiruser:***@127.0.0.1:28099/fhir/R4?***" in output.stdout


def test_odd_or_huge_ids_are_usage_errors_not_tracebacks(tmp_path: Path) -> None:
    # "²" passed str.isdigit() and int() refused it; a 20-digit id overflowed SQLite.
    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    letter = _store(tmp_path / "data" / "queue.db")
    config = tmp_path / "passerelle.toml"
    for command in ("show", "retry"):
        for odd in ("²", "١٢", "99999999999999999999999", "-1"):
            done = _dead_letters(config, command, odd)
            assert done.returncode == 2, (command, odd, done.stderr)
            assert "Traceback" not in done.stderr and "are numbers" in done.stderr
    huge = _dead_letters(config, "list", "--limit", "99999999999999999999999", "--offset", "0")
    assert huge.returncode == 0, huge.stderr
    assert huge.stdout.startswith("1 dead letter(s)") and f"{letter:>8}" in huge.stdout
    missing = _dead_letters(config, "show", str(2**63 - 1))
    assert missing.returncode == 1 and "no dead letter" in missing.stderr


def test_a_locked_newer_or_foreign_queue_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import sqlite3

    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "queue.db"
    letter = _store(path)
    config = tmp_path / "passerelle.toml"
    # Locked past the busy timeout (a backup, a long purge by another command).
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        locked = _dead_letters(config, "purge", "--all")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert time.monotonic() - started < 50
    assert locked.returncode == 1, locked.stderr
    assert "Traceback" not in locked.stderr and "locked" in locked.stderr
    assert _dead_letters(config, "list").stdout.startswith("1 dead letter(s)")
    # Written by a newer Passerelle.
    with sqlite3.connect(path) as newer:
        newer.execute("PRAGMA user_version = 99")
    refused = _dead_letters(config, "show", str(letter))
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr and "upgrade Passerelle" in refused.stderr
    # Not a database at all.
    for name in ("queue.db-wal", "queue.db-shm"):
        (tmp_path / "data" / name).unlink(missing_ok=True)
    path.write_bytes(b"not a queue\n" * 100)
    foreign = _dead_letters(config, "list")
    assert foreign.returncode == 1, foreign.stderr
    assert "Traceback" not in foreign.stderr and "not a database" in foreign.stderr
