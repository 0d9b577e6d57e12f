"""Session 25, the service as its operator meets it: real ``passerelle serve`` processes,
real sockets.

1. A port that cannot be bound at start-up (in use, an address not of this host) is one
   ``cannot start`` line naming the listener, the setting (and variable) that chose the
   port and what to do; it was Python's ``[Errno 98] error while attempting to bind on
   address ('0.0.0.0', 2575): address already in use``.
2. TLS material a listener cannot load names the setting and the file at fault (it was
   ``cannot load TLS material (a, b, None): [Errno 2] No such file or directory``).
3. A queue maintenance step that fails says why (it said ``exception=OperationalError``).
4. ``passerelle health`` says why the service is unhealthy: nothing listening (it printed
   urllib's ``<urlopen error [Errno 111] Connection refused>``), or what stopped for good
   (it printed ``HTTP 503`` alone).
5. A data_dir or queue folder that cannot be created names its setting and variable (it
   was ``[Errno 30] Read-only file system: '/data/var'``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import listeners.queue.sqlite as sqlite_queue
from listeners.cli import EXIT_FAILED, EXIT_USAGE
from listeners.logs import JsonFormatter, TextFormatter
from listeners.mllp.client import ConnectionClosedError
from listeners.queue import _sqlite_writer
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import (
    adt,
    make_config,
    passerelle,
    running,
    wait_until,
    write_config,
)
from tests.support.certs import Pki, make_pki, openssl_available
from tests.support.log_records import log_records


@contextmanager
def port_taken() -> Iterator[int]:
    """A loopback port some other process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def _cannot_start(config: Path, env: dict[str, str] | None = None) -> str:
    """The last line of a ``passerelle serve`` that could not start (exit 1)."""
    done = passerelle("serve", "--config", str(config), env=env, cwd=config.parent, timeout=120)
    assert done.returncode == EXIT_FAILED, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines, done.stdout
    return lines[-1]


# -- 1. a port that cannot be bound ------------------------------------------------------------
def test_an_mllp_port_in_use_names_the_listener_the_setting_and_the_remedy(
    tmp_path: Path,
) -> None:
    with port_taken() as port:
        config = write_config(
            tmp_path,
            {"mllp": {"host": None, "port": None}},
            extra=f'[[mllp.listeners]]\nname = "chu"\nhost = "127.0.0.1"\nport = {port}\n',
        )
        line = _cannot_start(config)
    assert line.startswith(
        f"passerelle: cannot start: MLLP listener chu cannot listen on 127.0.0.1:{port}: "
        "address already in use: another process listens on that port"
    ), line
    assert "stop it, or set another mllp.listeners[0].port (PASSERELLE_MLLP_PORT)" in line
    assert "Errno" not in line


def test_the_second_listener_s_port_in_use_is_named_by_its_index_without_the_variable(
    tmp_path: Path,
) -> None:
    """PASSERELLE_MLLP_PORT sets the first listener only: naming it for the second would
    send the operator to change the wrong port."""
    with port_taken() as port:
        config = write_config(
            tmp_path,
            {"mllp": {"host": None, "port": None}},
            extra=(
                '[[mllp.listeners]]\nname = "a"\nhost = "127.0.0.1"\nport = 0\n'
                f'[[mllp.listeners]]\nname = "lab"\nhost = "127.0.0.1"\nport = {port}\n'
            ),
        )
        line = _cannot_start(config)
    assert f"MLLP listener lab cannot listen on 127.0.0.1:{port}" in line, line
    assert line.endswith("set another mllp.listeners[1].port"), line


def test_the_mllp_port_of_the_mllp_table_is_named_as_the_file_writes_it(tmp_path: Path) -> None:
    with port_taken() as port:
        config = write_config(tmp_path, {"mllp": {"port": port}})
        line = _cannot_start(config)
    assert f"MLLP listener mllp cannot listen on 127.0.0.1:{port}" in line, line
    assert "set another mllp.port (PASSERELLE_MLLP_PORT)" in line, line


def test_the_http_port_in_use_names_http_port_and_its_variable(tmp_path: Path) -> None:
    with port_taken() as port:
        config = write_config(tmp_path)
        line = _cannot_start(config, env={"PASSERELLE_HTTP_PORT": str(port)})
    assert line.startswith(
        f"passerelle: cannot start: the HTTP API cannot listen on 127.0.0.1:{port}: "
        "address already in use"
    ), line
    assert line.endswith("stop it, or set another http.port (PASSERELLE_HTTP_PORT)"), line


def test_an_http_host_not_of_this_host_names_http_host(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of the test machine.
    config = write_config(tmp_path, {"http": {"host": "192.0.2.7"}})
    line = _cannot_start(config)
    assert line == (
        "passerelle: cannot start: the HTTP API cannot listen on 192.0.2.7:0: address not "
        "available: 192.0.2.7 is not an address of this host; set http.host to one of its "
        "addresses, or 0.0.0.0 for all"
    ), line


# -- 2. TLS material a listener cannot load ------------------------------------------------------
def _tls_listener(tmp_path: Path, tls: str) -> Path:
    return write_config(
        tmp_path,
        {"mllp": {"host": None, "port": None}},
        extra=f'[[mllp.listeners]]\nname = "chu"\nhost = "127.0.0.1"\nport = 0\ntls = {tls}\n',
    )


def _config_error(config: Path) -> str:
    """The last line of a ``passerelle serve`` refused for its configuration (exit 2)."""
    done = passerelle("serve", "--config", str(config), cwd=config.parent, timeout=120)
    assert done.returncode == EXIT_USAGE, done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if not openssl_available():
        pytest.skip("openssl command not available")
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_a_missing_listener_certificate_names_its_setting_and_file(tmp_path: Path) -> None:
    """It was ``cannot load TLS material (missing.pem, server.key, None): [Errno 2] No such
    file or directory``: which of the files, and which listener's?"""
    (tmp_path / "server.key").write_text("not read\n", encoding="utf-8")
    config = _tls_listener(tmp_path, '{ cert = "missing.pem", key = "server.key" }')
    line = _config_error(config)
    assert line == (
        f"passerelle: mllp.listeners[0].tls.cert: cannot read {tmp_path / 'missing.pem'}: "
        "No such file or directory"
    ), line


def test_a_key_of_another_certificate_is_named_as_such(tmp_path: Path, pki: Pki) -> None:
    config = _tls_listener(tmp_path, f'{{ cert = "{pki.server_cert}", key = "{pki.client_key}" }}')
    line = _config_error(config)
    assert line == (
        f"passerelle: mllp.listeners[0].tls.key: {pki.client_key} is not the private key of "
        f"the certificate {pki.server_cert} (mllp.listeners[0].tls.cert)"
    ), line


def test_a_client_ca_without_certificates_names_client_ca(tmp_path: Path, pki: Pki) -> None:
    """It was ``[X509: NO_CERTIFICATE_OR_CRL_FOUND] …`` after the three paths, the client
    CA's among them."""
    not_a_ca = tmp_path / "senders-ca.pem"
    not_a_ca.write_text("a note, not a certificate\n", encoding="utf-8")
    config = _tls_listener(
        tmp_path,
        f'{{ cert = "{pki.server_cert}", key = "{pki.server_key}", client_ca = "{not_a_ca}" }}',
    )
    line = _config_error(config)
    assert line == (
        f"passerelle: mllp.listeners[0].tls.client_ca: {not_a_ca} holds no usable PEM "
        "certificate (NO_CERTIFICATE_OR_CRL_FOUND)"
    ), line


def test_a_certificate_file_holding_a_key_only_names_cert(tmp_path: Path, pki: Pki) -> None:
    """``[SSL] PEM lib`` said nothing of which file OpenSSL could not read."""
    config = _tls_listener(tmp_path, f'{{ cert = "{pki.server_key}", key = "{pki.server_key}" }}')
    line = _config_error(config)
    assert line.startswith(
        f"passerelle: mllp.listeners[0].tls.cert: {pki.server_key} holds no usable PEM certificate"
    ), line


# -- 3. a queue maintenance that fails says why ----------------------------------------------------
def test_a_failed_queue_maintenance_says_why_in_its_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line said ``queue maintenance failed; will try again exception=OperationalError``:
    a full volume, a read-only one and a file another program holds read the same. Here
    a real SQLite lock held by another connection (a backup, an ``sqlite3`` shell)."""
    monkeypatch.setattr(sqlite_queue, "_MAINTENANCE_INTERVAL", 0.1)  # not a minute
    path = tmp_path / "queue.db"

    async def scenario() -> list[logging.LogRecord]:
        store = SqliteQueue(path, busy_timeout_ms=100)
        await store.start()
        other = sqlite3.connect(path, isolation_level=None)
        try:
            with log_records("passerelle.queue") as records:
                other.execute("BEGIN IMMEDIATE")
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not _maintenance_failures(records):
                    await asyncio.sleep(0.05)
                other.execute("ROLLBACK")
        finally:
            other.close()
            await store.close()
        return _maintenance_failures(records)

    failures = asyncio.run(scenario())
    assert failures, "no maintenance failure logged"
    text = TextFormatter().format(failures[0])
    assert "exception=QueueError (queue storage failed while pruning and checkpointing: " in text
    assert text.endswith("database is locked)"), text
    entry = json.loads(JsonFormatter().format(failures[0]))
    assert entry["exception_text"].endswith("database is locked"), entry


def _maintenance_failures(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.getMessage().startswith("queue maintenance failed")]


# -- 4. `passerelle health` says why ---------------------------------------------------------------
def test_health_with_nothing_listening_says_so_and_names_the_port_settings() -> None:
    """It printed urllib's ``<urlopen error [Errno 111] Connection refused>``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        done = passerelle(
            "health",
            "--timeout",
            "5",
            env={"PASSERELLE_HTTP_HOST": "127.0.0.1", "PASSERELLE_HTTP_PORT": str(port)},
        )
    assert done.returncode == EXIT_FAILED
    assert done.stderr.strip() == (
        f"passerelle: http://127.0.0.1:{port}/health: connection refused: nothing listens "
        "there (the service is not running, or listens on another port than http.port / "
        "PASSERELLE_HTTP_PORT of this configuration)"
    ), done.stderr


def test_health_of_a_service_whose_queue_stopped_names_what_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It printed ``HTTP 503`` alone: the healthcheck's output (``docker inspect``) did not
    say that the queue's writer had stopped for good, nor why."""
    trigger = threading.Event()
    original = _sqlite_writer.Writer._gather

    def _gather(self: _sqlite_writer.Writer) -> bool:
        # The fault of tests/listeners/test_service_s23.py: the writer thread dies at its
        # next batch (nothing real kills it on demand).
        if trigger.is_set():
            trigger.clear()
            raise MemoryError
        return original(self)

    monkeypatch.setattr(_sqlite_writer.Writer, "_gather", _gather)
    config = make_config(tmp_path, {"destinations.default": {"url": "http://127.0.0.1:9/fhir"}})
    with running(config) as service:
        port = service.service.http_port
        trigger.set()
        with pytest.raises(ConnectionClosedError):
            service.send([adt("HEALTH-1")], timeout=10)
        wait_until(
            lambda: httpx.get(f"{service.http_url}/health", timeout=5).status_code == 503,
            timeout=20,
            what="/health 503",
        )
        done = passerelle(
            "health",
            env={
                "PASSERELLE_HTTP_HOST": "127.0.0.1",
                "PASSERELLE_HTTP_PORT": str(port),
            },
        )
    assert done.returncode == EXIT_FAILED
    line = done.stderr.strip()
    assert line.startswith(
        f"passerelle: http://127.0.0.1:{port}/health: HTTP 503: "
        "stopped: queue (queue storage failed while writing: MemoryError"
    ), line


# -- 5. a data folder that cannot be created names its setting ---------------------------------
def test_a_data_dir_that_cannot_be_created_names_data_dir_and_its_variable(tmp_path: Path) -> None:
    """It was ``cannot start: [Errno 30] Read-only file system: '/data/var'``. Here the
    data_dir's parent is a file (the same failure from the same call, for any user: a
    read-only volume does not stop root, which tests may run as)."""
    (tmp_path / "volume").write_text("a file, not a folder\n", encoding="utf-8")
    config = write_config(tmp_path / "etc", {"": {"data_dir": str(tmp_path / "volume" / "var")}})
    line = _cannot_start(config)
    assert line == (
        f"passerelle: cannot start: cannot create {tmp_path / 'volume' / 'var'} (data_dir): "
        "Not a directory; give data_dir (PASSERELLE_DATA_DIR) a writable folder of a volume "
        "with room"
    ), line


def test_a_queue_folder_that_cannot_be_created_names_queue_path(tmp_path: Path) -> None:
    (tmp_path / "volume").write_text("a file, not a folder\n", encoding="utf-8")
    queue_file = tmp_path / "volume" / "queue" / "queue.db"
    config = write_config(tmp_path / "etc", {"queue": {"path": str(queue_file)}})
    line = _cannot_start(config)
    assert line.startswith(
        f"passerelle: cannot start: cannot create {queue_file.parent} (queue.path): Not a "
        "directory; give queue.path (PASSERELLE_QUEUE_PATH)"
    ), line
