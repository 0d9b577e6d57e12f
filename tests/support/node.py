"""What the Node-based test tools (FHIR server, R4 validator) need from the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MIN_NODE", "env_flag", "node_executable", "node_tool_unavailable_reason"]

MIN_NODE = (20, 19)  # @medplum/core and fhir-router 4.5.x: node ^20.19.0 || >=22.12.0


def node_executable() -> str | None:
    return shutil.which("node")


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to something other than off."""
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


def node_tool_unavailable_reason(
    purpose: str, script: Path, packages: Iterable[str], install_hint: str
) -> str | None:
    """Why a Node tool (its ``script`` and its npm ``packages``, ``@medplum/core``…)
    cannot run, or ``None``."""
    node = node_executable()
    if node is None:
        return f"node is not on PATH (Node >= 20.19 is needed for {purpose})"
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"cannot determine the node version: {exc}"
    if (major, minor) < MIN_NODE:
        wanted = ".".join(map(str, MIN_NODE))
        return f"node {version} is too old for {purpose} (need >= {wanted})"
    if not script.is_file():
        return f"{script} is missing"
    modules = script.parent / "node_modules"
    if not all((modules / name).is_dir() for name in packages):
        folder = script.parent.relative_to(script.parents[2])
        return f"{folder}/node_modules is missing or incomplete: {install_hint}"
    return None
