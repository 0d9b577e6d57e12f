"""A running service facing a failing destination (real FHIR server with fault injection,
real ``passerelle`` commands): what the operator and the sender get to see.

- a ``Retry-After`` of years is capped at ``backoff_max`` (and logged), not obeyed;
- credentials in the destination URL never reach ``/ready``, an AE, a dead letter or a log;
- wrong credentials turn ``/ready`` red, though ``/metadata`` is public;
- every retry line says why (kind and safe reason), a message dead-lettered after
  ``max_attempts`` gets its line;
- the server's diagnostics (patient values) stay out of ``dead-letters list``/``show``, and
  go back to the sender in the AE of ``ack_after = "delivery"``;
- the queue's disk full when a delivery's outcome is to be written (a real tmpfs, as
  root): the outcome is written once the disk has room, meanwhile ``/ready`` and the
  metrics say so, and the patient's next message is delivered without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.listeners.service.support import (
    adt,
    bundle_posts,
    make_config,
    passerelle,
    patients,
    running,
    wait_until,
)
from tests.support.fhirserver import FhirServer, require_fhirserver
from tests.support.leaks import OUTCOME, PASSWORD, PATIENT_DIAGNOSTIC, SECRETS


@pytest.fixture(scope="module")
def basic_fhir() -> Iterator[FhirServer]:
    """A FHIR server requiring Basic credentials (``/metadata`` stays public)."""
    require_fhirserver()
    with FhirServer.start(auth=f"basic:hl7:{PASSWORD}") as server:
        yield server


@contextlib.contextmanager
def _refusing_port() -> Iterator[int]:
    """A port that refuses connections for as long as the block runs: bound, never
    listening. (A port bound then released could be handed to the service's own HTTP API,
    started on port 0 meanwhile, which answers 404 instead of refusing.)"""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def _ready(http_url: str) -> httpx.Response:
    return httpx.get(f"{http_url}/ready", timeout=30)


def _cfg(tmp_path: Path) -> tuple[str, str]:
    return ("--config", str(tmp_path / "passerelle.toml"))


def test_a_retry_after_of_years_is_capped_and_the_patient_goes_on(
    tmp_path: Path, fhir: FhirServer, captured_text_logs: io.StringIO
) -> None:
    fhir.fail(503, retry_after="99999999")  # about 3 years
    config = make_config(tmp_path, fhir_url=fhir.base_url)  # backoff_max 0.5 s
    with running(config) as service:
        acks = service.send(
            [
                adt("RA-1", mrn="MRN-RA", family="First"),
                adt("RA-2", event="A08", mrn="MRN-RA", family="Second"),
            ]
        )
        assert [a.code for a in acks] == ["AA", "AA"]
        # Both delivered within seconds, in order: the first did not park the patient.
        service.drained(timeout=15)
    assert [r["status"] for r in bundle_posts(fhir)] == [503, 200, 200]
    assert patients(fhir, "MRN-RA")[0]["name"][0]["family"] == "Second"
    text = captured_text_logs.getvalue()
    assert "Retry-After 99999999s capped at delivery.backoff_max 0.5s" in text


def test_a_retry_parked_by_an_earlier_version_is_brought_forward_at_start(
    tmp_path: Path, fhir: FhirServer, captured_text_logs: io.StringIO
) -> None:
    # An earlier version obeyed such a Retry-After: the queue on disk still holds a retry
    # due in three years. The service makes it due within backoff_max when it starts.
    config = make_config(tmp_path, fhir_url=fhir.base_url)  # backoff_max 0.5 s
    fhir.fail(503, count=10_000)  # never delivered in the first run
    with running(config) as service:
        service.send([adt("PARKED-1", mrn="MRN-PARKED")])
        wait_until(lambda: len(bundle_posts(fhir)) >= 1, what="a failed attempt")
    with sqlite3.connect(config.queue.path) as db:
        parked = db.execute(
            "UPDATE messages SET next_attempt_at = next_attempt_at + 99999999"
            " WHERE state = 'pending'"
        ).rowcount
    assert parked == 1
    fhir.reset()  # the server answers again
    with running(config) as service:
        wait_until(lambda: patients(fhir, "MRN-PARKED"), what="the parked message delivered")
    assert "retries scheduled beyond delivery.backoff_max brought forward" in (
        captured_text_logs.getvalue()
    )


def test_url_credentials_never_leave_the_service(
    tmp_path: Path, captured_text_logs: io.StringIO
) -> None:
    """Nothing listens on the port: every attempt fails; the sender waits for the outcome."""
    with _refusing_port() as port:
        url = f"http://fhiruser:URLPASSWORD@127.0.0.1:{port}/fhir/R4?apikey=QSECRET"
        config = make_config(
            tmp_path,
            {
                "mllp": {"ack_after": "delivery", "delivery_ack_timeout": 20},
                "delivery": {"max_attempts": 2},
                "destinations.default": {"url": url},
            },
        )
        with running(config) as service:
            answer = _ready(service.http_url)
            (ack,) = service.send([adt("PW-1", mrn="MRN-PW")])
            service.drained()
    listing = passerelle("dead-letters", "list", *_cfg(tmp_path))
    (letter,) = [line.split()[0] for line in listing.stdout.splitlines()[1:]]
    shown = passerelle("dead-letters", "show", letter, *_cfg(tmp_path))
    exposed = {
        "/ready": answer.text,
        "the AE": "\r".join(ack.segments),
        "dead-letters list": listing.stdout,
        "dead-letters show": shown.stdout,
        "the logs": captured_text_logs.getvalue(),
    }
    leaks = {where: s for where, text in exposed.items() for s in SECRETS if s in text}
    assert not leaks, leaks
    # Still says where and why.
    assert answer.status_code == 503
    assert "fhiruser:***@127.0.0.1" in answer.json()["checks"]["destination:default"]
    assert ack.code == "AE"
    assert any("connection refused" in text for text in ack.texts), ack.texts
    assert "cannot reach http://fhiruser:***@127.0.0.1" in listing.stdout


def test_wrong_credentials_turn_ready_red(
    tmp_path: Path, basic_fhir: FhirServer, captured_text_logs: io.StringIO
) -> None:
    if not basic_fhir.running:
        basic_fhir.restart()
    basic_fhir.reset()
    auth = {"kind": "basic", "username": "hl7", "password": "wrong"}
    config = make_config(
        tmp_path, {"destinations.default": {"url": basic_fhir.base_url, "auth": auth}}
    )
    with running(config) as service:
        assert _ready(service.http_url).status_code == 200  # nothing delivered yet
        assert service.send([adt("AUTH-1", mrn="MRN-AUTH")])[0].code == "AA"
        answer = wait_until(
            lambda: (r := _ready(service.http_url)).status_code == 503 and r,
            what="/ready to fail after a 401",
        )
        assert service.depth() == 1  # retried, not dead-lettered
    reason = answer.json()["checks"]["destination:default"]
    assert "HTTP 401 Unauthorized" in reason and "credentials" in reason
    assert "wrong" not in answer.text and PASSWORD not in answer.text
    # The retry lines say why.
    assert "will retry (HTTP 401 Unauthorized)" in captured_text_logs.getvalue()


def test_retry_lines_say_why_and_the_last_attempt_gets_a_line(
    tmp_path: Path, fhir: FhirServer, captured_text_logs: io.StringIO
) -> None:
    fhir.fail(503, count=2, outcome=OUTCOME)
    config = make_config(tmp_path, {"delivery": {"max_attempts": 2}}, fhir_url=fhir.base_url)
    with running(config) as service:
        assert service.send([adt("WHY-1", mrn="MRN-WHY")])[0].code == "AA"
        service.drained()
        assert service.service.queue.count_dead_letters() == 1
    lines = captured_text_logs.getvalue().splitlines()
    retried = [line for line in lines if "delivery failed; will retry" in line]
    exhausted = [line for line in lines if "attempts exhausted, message dead-lettered" in line]
    assert len(retried) == 1 and len(exhausted) == 1, lines
    for line in retried + exhausted:
        assert "(HTTP 503 Service Unavailable)" in line
        assert "error_kind=TransientDeliveryError" in line and "status=503" in line
        assert "control_id=WHY-1" in line
    assert "attempt=2" in exhausted[0]
    assert PATIENT_DIAGNOSTIC not in captured_text_logs.getvalue()


def test_connection_failures_are_named_in_the_retry_lines(
    tmp_path: Path, captured_text_logs: io.StringIO
) -> None:
    with _refusing_port() as port:
        url = f"http://127.0.0.1:{port}/fhir/R4"
        config = make_config(tmp_path, {"delivery": {"max_attempts": 2}}, fhir_url=url)
        with running(config) as service:
            assert service.send([adt("CONN-1", mrn="MRN-CONN")])[0].code == "AA"
            service.drained()
    text = captured_text_logs.getvalue()
    assert "delivery failed; will retry (connection refused)" in text
    assert "attempts exhausted, message dead-lettered (connection refused)" in text
    assert "error_kind=ConnectError" in text


def test_server_diagnostics_go_to_the_sender_not_to_the_listings(
    tmp_path: Path, fhir: FhirServer
) -> None:
    fhir.fail(422, outcome=OUTCOME)
    config = make_config(tmp_path, {"mllp": {"ack_after": "delivery"}}, fhir_url=fhir.base_url)
    with running(config) as service:
        (ack,) = service.send([adt("DIAG-1", mrn="MRN-DIAG")])
        (letter,) = service.service.queue.list_dead_letters()
    # Stored without them (the source of every listing and the AMQP -error-reason header).
    assert letter.error["reason"] == "destination default: HTTP 422 Unprocessable Entity"
    assert letter.error["outcome"] == OUTCOME  # for show --payload
    # The sender sent those values: it gets the server's words back (README, ack_after).
    assert ack.code == "AE"
    assert any(PATIENT_DIAGNOSTIC in text for text in ack.texts), ack.texts
    # The operator's listings do not show them unless --payload asks.
    listing = passerelle("dead-letters", "list", *_cfg(tmp_path))
    shown = passerelle("dead-letters", "show", str(letter.id), *_cfg(tmp_path))
    for output in (listing, shown):
        assert output.returncode == 0, output.stderr
        assert PATIENT_DIAGNOSTIC not in output.stdout and "GIRARD" not in output.stdout
    assert "RejectedDeliveryError: destination default: HTTP 422 Unprocessable Entity" in (
        listing.stdout
    )
    assert json.loads(shown.stdout)["error"]["status"] == 422
    full = passerelle("dead-letters", "show", str(letter.id), "--payload", *_cfg(tmp_path))
    assert PATIENT_DIAGNOSTIC in full.stdout


# -- the queue's disk full ----------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of its own, 8 MB (tmpfs), to fill up; skipped unless it can be
    mounted (root). The variant that always runs refuses the queue's writes with a
    lock: tests/listeners/delivery/test_destination_pause.py."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {(mounted.stderr or mounted.stdout).strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its file system is full (ENOSPC)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_holds_the_outcome_until_it_is_written_and_the_patient_goes_on(
    tmp_path: Path, small_disk: Path, fhir: FhirServer
) -> None:
    """The disk fills while the first message's POST is under way: writing ``done``
    fails (SQLITE_FULL). The message is held, not sent again, ``/ready`` says the queue
    is not writable; once the disk has room, it is written and the patient's next message
    (acknowledged AA) is delivered, without a restart. Before, the failure escaped the
    worker's task: the row stayed in flight, and the next message waited for a restart."""
    config = make_config(
        tmp_path, {"queue": {"path": str(small_disk / "queue.db")}}, fhir_url=fhir.base_url
    )
    fhir.delay(1500)
    with running(config) as service:
        assert [a.code for a in service.send([adt("DF-1", mrn="MRN-DF", family="First")])] == ["AA"]
        wait_until(lambda: bundle_posts(fhir), what="the POST under way")
        filler = fill(small_disk)
        wait_until(
            lambda: service.metrics().value("passerelle_outcomes_unrecorded") == 1,
            what="the refused write",
        )
        ready = _ready(service.http_url)
        time.sleep(1.0)
        failures = service.metrics().value(
            "passerelle_queue_write_failures_total", operation="complete"
        )
        filler.unlink()
        wait_until(lambda: service.depth() == 0, what="the outcome written")
        # Ready again without a restart, once the worker's next claim (retried every
        # second) succeeds too: read at once, a loaded machine still saw it failing.
        after = wait_until(
            lambda: (response := _ready(service.http_url)).status_code == 200 and response,
            what="/ready again",
        )
        (ack,) = service.send([adt("DF-2", event="A08", mrn="MRN-DF", family="Second")])
        service.drained(timeout=15)
        gauge = service.metrics().value("passerelle_outcomes_unrecorded")
    assert ack.code == "AA"
    assert [r["status"] for r in bundle_posts(fhir)] == [200, 200]  # DF-1 once, then DF-2
    assert patients(fhir, "MRN-DF")[0]["name"][0]["family"] == "Second"
    assert ready.status_code == 503
    queue_check = ready.json()["checks"]["queue"]
    assert "writing delivery outcomes to the queue failing for" in queue_check
    assert "database or disk is full" in queue_check
    assert failures >= 2
    assert after.status_code == 200 and after.json()["checks"]["queue"] == "ok"
    assert gauge == 0
