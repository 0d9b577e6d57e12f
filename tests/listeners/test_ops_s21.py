"""Operator's review (session 21): what a hospital's on-call engineer needs at 3 a.m."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from converter import MappingError
from listeners.config import ConfigError, load_config
from listeners.config.environment import environment_warnings
from listeners.entry import EarlyStops
from listeners.errors import QueueError
from listeners.logs import JsonFormatter, TextFormatter
from listeners.metrics import Metrics
from listeners.queue._sqlite_backlog import Backlog
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue
from listeners.stop_signals import install_stop_handlers, stop_signals
from tests.listeners.service.support import (
    adt,
    limit_queue_pages,
    make_config,
    running,
    wait_until,
)

SEGMENT = "PID|1||0012345678^^^CHU^MR||DUPONT^Marie||19850312|F"


def _record(exc: BaseException) -> logging.LogRecord:
    rec = logging.LogRecord(
        "passerelle.ingest", logging.ERROR, __file__, 1, "storing the message failed", (), None
    )
    rec.exc_info = (type(exc), exc, None)
    return rec


def test_a_full_disk_is_named_in_the_log_line() -> None:
    # Before, the line said "exception": "QueueError" and nothing else: a full disk, a
    # read-only volume and a locked file looked the same.
    full = QueueError("queue storage failed while storing: database or disk is full")
    entry = json.loads(JsonFormatter().format(_record(full)))
    assert entry["exception"] == "QueueError"
    assert entry["exception_text"] == str(full)
    line = TextFormatter().format(_record(full))
    assert (
        "exception=QueueError (queue storage failed while storing: database or disk is full)"
        in (line)
    )


def test_only_our_exceptions_texts_are_logged() -> None:
    mapping = MappingError("invalid timestamp", location="PID-7", detail="19850312")
    leaky = ValueError(f"could not parse {SEGMENT}")
    entry = json.loads(JsonFormatter().format(_record(mapping)))
    assert "invalid timestamp" in entry["exception_text"]
    for exc in (mapping, leaky):
        for formatter in (JsonFormatter(), TextFormatter()):
            line = formatter.format(_record(exc))
            assert "DUPONT" not in line and "19850312" not in line and "PID|" not in line
    assert "exception_text" not in json.loads(JsonFormatter().format(_record(leaky)))


# -- the backlog on /metrics: oldest waiting message, dead letters kept -----------------------
class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _envelope(n: int, key: str) -> Envelope:
    return Envelope(
        payload=f"MSH|^~\\&|APP|FAC|||20240101||ADT^A01|{n}|P|2.5\r".encode(),
        sender="APP^FAC",
        listener="mllp",
        received_at=1_600_000_000.0 + n,
        ordering_key=key,
        control_id=f"C{n}",
        message_type="ADT^A01",
    )


def test_the_queue_reports_its_oldest_waiting_message_and_its_dead_letters(
    tmp_path: Path,
) -> None:
    clock = _Clock(1_700_000_000.0)

    async def scenario() -> list[Backlog]:
        seen = []
        async with SqliteQueue(tmp_path / "queue.db", clock=clock) as queue:
            seen.append(queue.backlog())
            for n, key in enumerate(("a", "a", "b", "c")):
                await queue.put(_envelope(n, key))
                clock.now += 10
            seen.append(queue.backlog())  # seq 1 (a) is the oldest: pending head
            first, *_ = await queue.claim(1)
            seen.append(queue.backlog())  # ... in flight: still the oldest
            await queue.complete(first.seq)  # delivered: a's next (stored at +10) is oldest
            seen.append(queue.backlog())
            jobs = await queue.claim(3)
            for job in jobs:  # a dead letter no longer waits, and is counted
                await queue.dead_letter(job.seq, {"kind": "MappingError", "reason": "x"})
            seen.append(queue.backlog())
        return seen

    start = 1_700_000_000.0
    assert asyncio.run(scenario()) == [
        Backlog(oldest_stored_at=None, dead_letters=0),
        Backlog(oldest_stored_at=start, dead_letters=0),
        Backlog(oldest_stored_at=start, dead_letters=0),
        Backlog(oldest_stored_at=start + 10, dead_letters=0),
        Backlog(oldest_stored_at=None, dead_letters=3),
    ]


def test_metrics_show_how_long_the_oldest_message_waits() -> None:
    clock = _Clock(1_000.0)
    metrics = Metrics(clock=clock)
    metrics.show_oldest(None)
    assert _sample(metrics, "passerelle_queue_oldest_age_seconds") == 0.0
    metrics.show_oldest(400.0)
    assert _sample(metrics, "passerelle_queue_oldest_age_seconds") == 600.0
    clock.now += 30  # measured at the scrape, not when the queue was last read
    assert _sample(metrics, "passerelle_queue_oldest_age_seconds") == 630.0


def _sample(metrics: Metrics, name: str) -> float:
    values = [
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    ]
    assert len(values) == 1, values
    return values[0]


def test_a_stuck_queue_and_its_dead_letters_show_on_metrics(tmp_path: Path) -> None:
    # The FHIR server is unreachable: a message waits (retried); an unsupported one is
    # kept as a dead letter. Before, /metrics showed the depth only: a queue stuck for
    # hours looked like a busy one, and the dead letters kept were nowhere (the counters
    # count since the start only).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}/fhir"
    config = make_config(
        tmp_path, {"mllp": {"on_unsupported": "dead-letter"}}, fhir_url=unreachable
    )
    with running(config) as service:
        unsupported = adt("ZZZ-1", msh9="ZZZ^Z01")
        assert [a.code for a in service.send([adt("WAIT-1"), unsupported])] == ["AA", "AA"]
        wait_until(
            lambda: (
                service.metrics().value("passerelle_dead_letters") == 1
                and service.metrics().value("passerelle_queue_oldest_age_seconds") >= 1.5
            ),
            timeout=15,
            what="the backlog gauges",
        )
        assert service.metrics().value("passerelle_queue_depth") == 1


# -- /ready while received messages cannot be stored ------------------------------------------
def test_ready_is_red_while_the_disk_refuses_received_messages(tmp_path: Path) -> None:
    # Before, /ready stayed green (a read succeeds on a full disk) while every sender got
    # no ACK: nothing told the operator why the feeds had stopped.
    with running(make_config(tmp_path)) as service:
        assert service.send([adt("FITS-1")])[0].code == "AA"
        limit_queue_pages(service, 2)
        large = adt("FULL-1", family="X" * 200_000)
        with pytest.raises(Exception):  # noqa: B017 - no ACK, the connection closed
            service.send([large], timeout=5)
        answer = httpx.get(f"{service.http_url}/ready", timeout=10)
        assert answer.status_code == 503, answer.text
        check = answer.json()["checks"]["queue"]
        assert "storing received messages failing" in check and "disk is full" in check
        assert "X" * 20 not in check
        # Room again: /ready is green without waiting for a message to come.
        limit_queue_pages(service, None)
        answer = httpx.get(f"{service.http_url}/ready", timeout=10)
        assert answer.status_code == 200, answer.text
        assert service.send([large])[0].code == "AA"


# -- secrets of another TOML type ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "kind"),
    [
        ('auth = { kind = "basic", username = "u", password = ["s3cret-pw"] }', "array"),
        ('auth = { kind = "bearer", token = true }', "boolean"),
        ('auth = { kind = "basic", username = "u", password = 31415926 }', "integer"),
    ],
)
def test_a_secret_that_is_not_a_string_is_refused_without_showing_it(
    tmp_path: Path, setting: str, kind: str
) -> None:
    # Before, str() of the value was the secret: ["s3cret-pw"] was sent as "['s3cret-pw']",
    # true as "True" — every delivery refused (401) although the service started fine.
    path = tmp_path / "passerelle.toml"
    path.write_text(f'[destinations.default]\nurl = "https://fhir.example.org/fhir"\n{setting}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    text = str(caught.value)
    assert "destinations.default.auth." in text and "must be a string" in text
    assert f"TOML {kind}" in text
    assert "s3cret" not in text and "31415926" not in text and "True" not in text


def test_an_api_key_that_is_not_a_string_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "passerelle.toml"
    path.write_text("[http]\napi_key = true\n")
    with pytest.raises(ConfigError, match=r"http\.api_key must be a string"):
        load_config(path, env={})


# -- a stop signal before the event loop: kept by a handler object, not module state ----------
def test_an_early_stop_signal_stops_the_next_service_only() -> None:
    # listeners.entry kept it in a module global: every later service of the process
    # (tests run several) saw it again and stopped at once. The handler object keeps it
    # now, and the event loop's handlers replace it.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    keeper = EarlyStops()
    try:
        signal.signal(signal.SIGTERM, keeper)
        signal.signal(signal.SIGHUP, keeper)
        os.kill(os.getpid(), signal.SIGTERM)  # a supervisor's stop during the imports
        time.sleep(0.01)  # Python runs the handler at the next bytecode boundary
        assert keeper.signum == signal.SIGTERM

        async def starts_stopped() -> bool:
            stop = asyncio.Event()
            install_stop_handlers(stop, logging.getLogger("passerelle.test"))
            try:
                return stop.is_set()
            finally:
                for sig in stop_signals():
                    asyncio.get_running_loop().remove_signal_handler(sig)

        assert asyncio.run(starts_stopped()) is True
        assert asyncio.run(starts_stopped()) is False
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# -- the container's healthcheck -----------------------------------------------------------------
def _seconds(text: str) -> float:
    assert text.endswith("s"), text
    return float(text[:-1])


def test_the_healthcheck_timeout_leaves_room_for_the_commands_start() -> None:
    # Docker's --timeout bounds the whole `passerelle health`: interpreter start and
    # imports (2.4 s measured on a 2-CPU host busy converting), then its own --timeout
    # for the answer. At 5 s against --timeout 4, a slow answer was killed and counted as
    # a failure before the command's own timeout.
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    line = dockerfile.replace("\\\n", " ")
    healthcheck = next(x for x in line.splitlines() if x.startswith("HEALTHCHECK "))
    docker_timeout = _seconds(re.search(r"--timeout=(\S+)", healthcheck)[1])  # type: ignore[index]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    own_timeout = float(command[command.index("--timeout") + 1])
    assert docker_timeout >= own_timeout + 5.0, (docker_timeout, own_timeout)


# -- the number of conversion processes from the environment -------------------------------------
def test_the_conversion_processes_can_be_set_by_a_variable(tmp_path: Path) -> None:
    # A container limited to 2 CPUs on a large node started one conversion process per
    # CPU of the node; the count needed a mounted configuration file to be set.
    env = {"PASSERELLE_DELIVERY_CONVERT_PROCESSES": "2"}
    assert load_config(None, env=env).delivery.convert_processes == 2
    assert environment_warnings(env) == []
    with pytest.raises(ConfigError, match="from PASSERELLE_DELIVERY_CONVERT_PROCESSES"):
        load_config(None, env={"PASSERELLE_DELIVERY_CONVERT_PROCESSES": "many"})


def test_the_oauth2_scope_can_be_set_by_a_variable() -> None:
    # Every other OAuth2 setting had its variable; a server requiring a scope needed a
    # mounted file for that one alone, and PASSERELLE_FHIR_SCOPE was ignored (a warning).
    env = {
        "PASSERELLE_FHIR_URL": "https://fhir.example.org/fhir",
        "PASSERELLE_FHIR_AUTH": "oauth2",
        "PASSERELLE_FHIR_TOKEN_URL": "https://auth.example.org/token",
        "PASSERELLE_FHIR_CLIENT_ID": "passerelle",
        "PASSERELLE_FHIR_CLIENT_SECRET": "not-shown",
        "PASSERELLE_FHIR_SCOPE": "system/*.write",
    }
    auth = load_config(None, env=env).destinations["default"].auth
    assert auth is not None and auth.scope == "system/*.write"
    assert environment_warnings(env) == []


# -- purging one dead letter -----------------------------------------------------------------------
def _dead_letter_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listeners.cli", "dead-letters", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_one_dead_letter_can_be_purged_and_the_others_kept(tmp_path: Path) -> None:
    # A training patient's message sent to the production feed must never be delivered;
    # the other dead letters are to be retried --all once their cause is fixed. Before,
    # `purge` took only --older-than-days or --all: deleting it deleted the others too.
    config = tmp_path / "passerelle.toml"
    config.write_text('data_dir = "data"\n')

    async def store() -> list[int]:
        async with SqliteQueue(tmp_path / "data" / "queue.db") as queue:
            error = {"kind": "MappingError", "reason": "invalid timestamp"}
            return [
                (await queue.put_dead_letter(_envelope(n, f"k{n}"), error)).seq for n in range(3)
            ]

    first, second, third = asyncio.run(store())
    done = _dead_letter_cli(config, "purge", str(second))
    assert (done.returncode, done.stdout) == (0, f"dead letter {second} purged\n"), done.stderr
    listed = _dead_letter_cli(config, "list")
    assert listed.stdout.startswith("2 dead letter(s)\n")
    assert [int(line.split()[0]) for line in listed.stdout.splitlines()[1:]] == [first, third]
    again = _dead_letter_cli(config, "purge", str(second))
    assert again.returncode == 1 and f"no dead letter {second}" in again.stderr
    # One selection only: an ID with --all is refused, nothing deleted.
    both = _dead_letter_cli(config, "purge", str(first), "--all")
    assert both.returncode == 2 and "not several" in both.stderr
    assert _dead_letter_cli(config, "list").stdout.startswith("2 dead letter(s)\n")
