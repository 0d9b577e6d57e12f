"""The container's contract, tested without a Docker engine (none runs on build machines):
the Dockerfile's ENTRYPOINT and HEALTHCHECK commands are run as they are written, with
the shipped configuration file and environment overrides."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")


def _instruction(name: str) -> str:
    lines = DOCKERFILE.replace("\\\n", " ").splitlines()
    found = [line[len(name) :].strip() for line in lines if line.startswith(name + " ")]
    assert found, f"no {name} in the Dockerfile"
    return found[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_image_runs_as_non_root_and_exposes_the_service_ports() -> None:
    assert _instruction("USER") not in ("root", "0")
    exposed = set(_instruction("EXPOSE").split())
    assert {"2575", "8080"} <= exposed
    assert "python:3.11-slim" in _instruction("FROM")
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, re.MULTILINE):
        assert (REPO / source).exists(), f"COPY source {source} is missing"


def test_entrypoint_and_healthcheck_work_with_the_shipped_config(tmp_path: Path) -> None:
    entrypoint = json.loads(_instruction("ENTRYPOINT"))
    assert entrypoint[:2] == ["passerelle", "serve"]
    config_in_image = entrypoint[entrypoint.index("--config") + 1]
    shipped = REPO / "docker" / Path(config_in_image).name
    assert shipped.is_file()
    command = [sys.executable, "-m", "listeners.cli", *entrypoint[1:]]
    command[command.index(config_in_image)] = str(shipped)
    http_port, mllp_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PASSERELLE_DATA_DIR": str(tmp_path / "data"),
        "PASSERELLE_HTTP_PORT": str(http_port),
        "PASSERELLE_MLLP_PORT": str(mllp_port),
        "PASSERELLE_HTTP_HOST": "127.0.0.1",
        "PASSERELLE_MLLP_HOST": "127.0.0.1",
    }
    service = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        healthcheck = _instruction("HEALTHCHECK")
        cmd = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
        cmd = [
            sys.executable if part == "python" else part.replace("8080", str(http_port))
            for part in cmd
        ]
        deadline = time.monotonic() + 60
        while True:
            if service.poll() is not None:
                pytest.fail(f"service exited: {service.stdout.read() if service.stdout else ''}")
            if subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0:
                break
            assert time.monotonic() < deadline, "healthcheck never passed"
            time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", mllp_port), timeout=5):
            pass
        assert (tmp_path / "data" / "queue.db").exists(), "queue not under PASSERELLE_DATA_DIR"
    finally:
        service.terminate()
        output = service.communicate(timeout=60)[0]
    assert service.returncode == 0, output
    # JSON logs, as the image configures them.
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines), output
