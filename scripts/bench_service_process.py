"""The service under benchmark: ``passerelle serve`` started in its own process group
with a configuration of its own, and the /proc readings (CPU time, resident memory of the
whole process tree) that scripts/bench_service.py prints. Linux only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class Service:
    """``passerelle serve`` in its own process group."""

    def __init__(
        self, directory: Path, destination: str, extra: str = "", log_level: str = "WARNING"
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.mllp_port = free_port()
        self.http_port = free_port()
        self.config = directory / "passerelle.toml"
        self.config.write_text(
            f'data_dir = "{directory / "data"}"\n'
            f'log_level = "{log_level}"\n'
            f'[mllp]\nhost = "127.0.0.1"\nport = {self.mllp_port}\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n'
            f'[queue]\npath = "{directory / "queue.db"}"\n'
            "[delivery]\nbackoff_initial = 0.1\nbackoff_max = 2\n"
            f"{destination}{extra}",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0
        self._sampling = False
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> Service:
        log = (self.directory / "service.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "listeners.cli", "serve", "--config", str(self.config)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 90
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited; see {self.directory / 'service.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampling = False
        if self._sampler is not None:
            self._sampler.join(2)
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def freeze_conversions(self) -> None:
        """SIGSTOP every process of the service but the main one (``--isolate``)."""
        assert self.process is not None
        for pid in _group(self.process.pid):
            if pid != self.process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)

    def _sample(self) -> None:
        assert self.process is not None
        while self._sampling:
            self.peak_rss = max(self.peak_rss, _rss(_group(self.process.pid)))
            time.sleep(0.1)

    def main_cpu(self) -> float:
        assert self.process is not None
        return _cpu_seconds(self.process.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name_labels, _, value = line.rpartition(" ")
                name = name_labels.split("{", 1)[0]
                with contextlib.suppress(ValueError):
                    values[name] = values.get(name, 0.0) + float(value)
        return values
