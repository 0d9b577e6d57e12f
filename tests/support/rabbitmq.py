"""Python driver of a throwaway RabbitMQ node (the distribution's ``rabbitmq-server``).

Each :class:`RabbitMq` is a node of its own — unique node name, free AMQP and
distribution ports, data and logs in a fresh directory under ``/tmp`` — started detached
and stopped with ``rabbitmqctl shutdown``::

    with RabbitMq.start() as broker:
        connection = await aio_pika.connect(broker.url)
        broker.stop_app(); broker.start_app()     # the broker goes away and comes back
        broker.restart()                          # full node restart, same data and ports

As root, Debian's wrappers (``/usr/sbin/rabbitmq-server``, ``rabbitmqctl``) run the node
as the ``rabbitmq`` user, so the directory is handed to that user. As another user, the
scripts behind the wrappers (``/usr/lib/rabbitmq/bin``) run directly, with ``HOME`` in the
directory (the Erlang cookie lives there). :func:`rabbitmq_unavailable_reason` says why
neither is possible; tests then skip — or fail, with ``PASSERELLE_REQUIRE_RABBITMQ=1``.
Starting takes about 7-10 s: fixtures start one node per session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "RabbitMq",
    "RabbitMqError",
    "rabbitmq_required",
    "rabbitmq_unavailable_reason",
]

_REQUIRE_ENV = "PASSERELLE_REQUIRE_RABBITMQ"
_WRAPPER_DIR = Path("/usr/sbin")
_SCRIPT_DIR = Path("/usr/lib/rabbitmq/bin")
_INSTALL_HINT = "install it with `apt-get install -y rabbitmq-server`"


class RabbitMqError(RuntimeError):
    """The node could not be started or a rabbitmqctl command failed."""


def _is_root() -> bool:
    return os.geteuid() == 0


def _tools() -> tuple[Path, Path] | None:
    """(rabbitmq-server, rabbitmqctl) to run as the current user, if installed."""
    directory = _WRAPPER_DIR if _is_root() else _SCRIPT_DIR
    server, ctl = directory / "rabbitmq-server", directory / "rabbitmqctl"
    if os.access(server, os.X_OK) and os.access(ctl, os.X_OK):
        return server, ctl
    return None


def rabbitmq_unavailable_reason() -> str | None:
    """Why a RabbitMQ node cannot be started here, or ``None`` if it can."""
    if _tools() is None:
        where = _WRAPPER_DIR if _is_root() else _SCRIPT_DIR
        return (
            f"rabbitmq-server is not installed ({where} has no rabbitmq-server/rabbitmqctl): "
            f"{_INSTALL_HINT}"
        )
    if shutil.which("erl") is None and not Path("/usr/lib/erlang/bin/erl").exists():
        return f"Erlang (erl) is not installed: {_INSTALL_HINT}"
    if _is_root():
        try:
            pwd.getpwnam("rabbitmq")
        except KeyError:
            return "running as root but there is no `rabbitmq` user for Debian's wrapper"
    return None


def rabbitmq_required() -> bool:
    """True when ``PASSERELLE_REQUIRE_RABBITMQ`` asks tests to fail instead of skipping."""
    return os.environ.get(_REQUIRE_ENV, "").strip() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RabbitMq:
    """A running RabbitMQ node (see the module docstring)."""

    def __init__(self, directory: Path, *, startup_timeout: float) -> None:
        tools = _tools()
        if tools is None:
            raise RabbitMqError(rabbitmq_unavailable_reason() or "rabbitmq is not installed")
        self._server, self._ctl = tools
        self.directory = directory
        self.node = f"passerelle-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.port = _free_port()
        self.dist_port = _free_port()
        self._startup_timeout = startup_timeout
        self._running = False
        self._env = {
            **os.environ,
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(directory / "feature_flags"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
        }
        if not _is_root():
            self._env["HOME"] = str(directory)  # the Erlang cookie is created there

    @classmethod
    def start(cls, *, startup_timeout: float = 90.0) -> Self:
        """Create a node in a fresh directory and wait until it accepts connections."""
        reason = rabbitmq_unavailable_reason()
        if reason is not None:
            raise RabbitMqError(reason)
        directory = Path(tempfile.mkdtemp(prefix="passerelle-rabbitmq-"))
        for sub in ("mnesia", "log"):
            (directory / sub).mkdir()
        # Quick failure detection for the tests (the default heartbeat is 60 s).
        (directory / "rabbitmq.conf").write_text("heartbeat = 10\n", encoding="utf-8")
        if _is_root():
            record = pwd.getpwnam("rabbitmq")
            for path in (directory, *directory.rglob("*")):
                os.chown(path, record.pw_uid, record.pw_gid)
        broker = cls(directory, startup_timeout=startup_timeout)
        atexit.register(broker.stop)
        try:
            broker._boot()
        except BaseException:
            broker.stop()
            raise
        return broker

    # -- lifecycle ---------------------------------------------------------------------------
    def _boot(self) -> None:
        result = subprocess.run(
            [str(self._server), "-detached"],
            env=self._env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RabbitMqError(
                f"rabbitmq-server -detached failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        self._running = True
        self.await_startup()

    def await_startup(self) -> None:
        """Wait until the node (and its app) answers ``rabbitmqctl await_startup``."""
        deadline = time.monotonic() + self._startup_timeout
        while True:
            result = self.ctl("await_startup", "--timeout", "30", check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RabbitMqError(
                    f"the node did not start within {self._startup_timeout:g}s{self._log_tail()}"
                )
            time.sleep(0.5)

    def stop_app(self) -> None:
        """Stop the RabbitMQ application (the node stays up): clients are disconnected."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.await_startup()

    def restart(self) -> None:
        """Full restart of the node: same directory (durable data kept), same ports."""
        self.ctl("shutdown")
        self._running = False
        self._boot()

    def stop(self) -> None:
        """Shut the node down and delete its directory (idempotent)."""
        if self._running:
            self._running = False
            with contextlib.suppress(RabbitMqError, subprocess.SubprocessError):
                self.ctl("shutdown", timeout=60)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.directory)
        atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        return self._running

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- access ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/`` (guest may log in from localhost)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(
        self, *args: str, check: bool = True, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n NODE ARGS…``; :class:`RabbitMqError` when it fails (``check``)."""
        result = subprocess.run(
            [str(self._ctl), "-n", self.node, *args],
            env=self._env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RabbitMqError(
                f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result

    def _log_tail(self) -> str:
        logs = sorted((self.directory / "log").glob("*.log"))
        if not logs:
            return ""
        lines = logs[-1].read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        return "; node log:\n" + "\n".join(lines)
