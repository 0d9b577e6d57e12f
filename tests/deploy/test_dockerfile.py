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


def _healthcheck_command(config_in_image: str, shipped: Path) -> list[str]:
    """The HEALTHCHECK's exec-form CMD, with ``passerelle`` and the image's config path
    replaced by this checkout's."""
    healthcheck = _instruction("HEALTHCHECK")
    cmd: list[str] = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert cmd[0] == "passerelle", cmd
    cmd = [sys.executable, "-m", "listeners.cli", *cmd[1:]]
    return [str(shipped) if part == config_in_image else part for part in cmd]


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
        # The HEALTHCHECK as written, in the container's environment: it follows
        # PASSERELLE_HTTP_PORT (before, it asked 127.0.0.1:8080 whatever the port).
        cmd = _healthcheck_command(config_in_image, shipped)
        deadline = time.monotonic() + 60
        while True:
            if service.poll() is not None:
                pytest.fail(f"service exited: {service.stdout.read() if service.stdout else ''}")
            if subprocess.run(cmd, capture_output=True, env=env, timeout=10).returncode == 0:
                break
            assert time.monotonic() < deadline, "healthcheck never passed"
            time.sleep(0.5)
        # Another port, where nothing listens: unhealthy, one line on stderr.
        elsewhere = {**env, "PASSERELLE_HTTP_PORT": str(_free_port())}
        failed = subprocess.run(cmd, capture_output=True, text=True, env=elsewhere, timeout=10)
        assert failed.returncode == 1, failed
        assert "/health" in failed.stderr and "Traceback" not in failed.stderr
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


def test_the_runtime_waits_for_the_drain_before_killing() -> None:
    """SIGTERM drains for up to SHUTDOWN_GRACE seconds: the stop timeout the Dockerfile
    asks for (Docker's default is 10 s, then SIGKILL) must be longer."""
    from listeners.service import SHUTDOWN_GRACE

    assert _instruction("STOPSIGNAL") == "SIGTERM"
    for pattern in (
        r"--stop-timeout (\d+)",
        r"stop_grace_period: (\d+)s",
        r"terminationGracePeriodSeconds: (\d+)",
    ):
        found = re.search(pattern, DOCKERFILE)
        assert found, pattern
        assert int(found.group(1)) >= SHUTDOWN_GRACE + 5, found.group(0)


def test_uvicorn_is_pinned_to_the_tested_range() -> None:
    """server.py subclasses uvicorn's internal H11Protocol: an untested uvicorn may break
    the HTTP limits silently, so pyproject.toml bounds it and the installed one fits."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    [line] = re.findall(r'^\s*"(uvicorn[^"]*)",', text, re.MULTILINE)
    requirement = Requirement(line)
    assert any(spec.operator == "<" for spec in requirement.specifier), line
    assert requirement.specifier.contains(version("uvicorn")), (line, version("uvicorn"))


def _runtime_closure(name: str) -> dict[str, str]:
    """Every distribution ``name`` needs at run time (markers evaluated, extras not taken),
    by canonical name, with its installed version."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    pending = [name]
    while pending:
        dist = distribution(pending.pop())
        key = canonicalize_name(dist.metadata["Name"])
        if key in found:
            continue
        found[key] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def test_the_image_installs_the_versions_the_tests_ran_with() -> None:
    """A rebuilt image once took whatever PyPI had that day; now the Dockerfile installs
    under constraints.txt, which pins every runtime dependency to the version installed
    here (make test installs under the same file)."""
    from packaging.utils import canonicalize_name

    install = [line for line in DOCKERFILE.splitlines() if "pip install" in line]
    assert install and all("-c constraints.txt" in line for line in install), install
    assert re.search(r"^COPY [^\n]*\bconstraints\.txt\b", DOCKERFILE, re.MULTILINE)
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[canonicalize_name(name)] = pinned.strip()
    runtime = _runtime_closure("passerelle")
    runtime.pop("passerelle")
    assert {"jinja2", "lxml", "hl7apy", "pydantic", "aiormq"} <= runtime.keys(), runtime
    unpinned = sorted(runtime.keys() - pins.keys())
    assert not unpinned, f"not pinned in constraints.txt (run make constraints): {unpinned}"
    drifted = {
        key: (pins[key], version) for key, version in runtime.items() if pins[key] != version
    }
    assert not drifted, f"constraints.txt vs installed (run make constraints): {drifted}"
