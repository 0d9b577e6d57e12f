"""The compiled build (mypyc, ``PASSERELLE_COMPILE=1``): what the container ships.

``make test`` builds a compiled copy of the tree (scripts/build_compiled.py) and runs the
converter's tests in it with ``PASSERELLE_EXPECT_COMPILED=1``: there, every module the
build lists must have been imported compiled, or those tests would have run the pure
Python modules again and proved nothing about the container's.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.build_compiled import compiled_modules
from tests.support.compiled import COMPILED

REPO = Path(__file__).resolve().parents[1]
in_the_compiled_copy = pytest.mark.skipif(
    not COMPILED, reason="checks the compiled copy of the tree (make test runs it there)"
)


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def test_the_compiled_modules_are_converter_sources() -> None:
    modules = compiled_modules()
    assert modules, "pyproject.toml lists no module to compile"
    assert len(set(modules)) == len(modules)
    for path in modules:
        assert (REPO / path).is_file(), path
        # The converter only: the listeners (asyncio, signal handlers, aio-pika
        # callbacks) stay interpreted, and a compiled module cannot be monkeypatched.
        assert path.startswith("converter/"), path


@in_the_compiled_copy
@pytest.mark.parametrize("path", compiled_modules())
def test_the_module_runs_compiled(path: str) -> None:
    module = importlib.import_module(_module_name(path))
    assert module.__file__ is not None
    assert module.__file__.endswith(".so"), f"{path} imported from {module.__file__}"


@in_the_compiled_copy
def test_the_processes_tests_start_import_the_compiled_modules(tmp_path: Path) -> None:
    """The service and CLI tests start processes (``passerelle serve``, conversion
    processes) elsewhere than the copy: they too must convert with the compiled build."""
    probe = "import converter.hl7v2.value as module; print(module.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().endswith(".so"), done.stdout


def test_the_container_builds_the_compiled_modules() -> None:
    """The image's build stage compiles (a C compiler, mypy at the version the tests ran
    with, the variable set on the install) and the running stage gets no compiler."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    build, _, runtime = dockerfile.rpartition("\nFROM ")  # the last stage runs
    install = [line for line in build.splitlines() if "pip install" in line and " . " in line + " "]
    assert install and all("PASSERELLE_COMPILE=1" in line for line in install), install
    assert re.search(r"apt-get install[^\n]*\bgcc\b", build)
    assert re.search(r"pip install[^\n]*-c constraints\.txt[^\n]*\.\[compile\]", build)
    assert "gcc" not in runtime
