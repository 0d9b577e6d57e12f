"""A copy of the tree with the converter's hot modules compiled by mypyc, as the
container's build compiles them (``PASSERELLE_COMPILE=1``, setup.py).

    python scripts/build_compiled.py build/compiled

The copy holds the sources, mappings, samples, tests and scripts; the extension modules
are built in place beside their sources (Python imports an extension before a ``.py`` of
the same name). ``make test`` runs the converter's tests in it with
``PASSERELLE_EXPECT_COMPILED=1`` (tests/test_compiled_build.py checks that every listed
module was loaded compiled), and ``make bench`` runs the benchmark in it. Needs mypy
(installed with the test extras) and a C compiler.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = (
    "converter",
    "listeners",
    "mappings",
    "samples",
    "scripts",
    "tests",
    "pyproject.toml",
    "setup.py",
    "README.md",
    "constraints.txt",
    "Dockerfile",
)
# Installed Node packages of the test tools: linked, not copied (tens of MB).
LINKED = ("tests/r4validator/node_modules", "tests/fhirserver/node_modules")
IGNORED = shutil.ignore_patterns(
    "__pycache__", "node_modules", "*.so", ".hypothesis", ".pytest_cache"
)


def compiled_modules(root: Path = REPO) -> list[str]:
    """The source files the compiled build compiles (pyproject.toml)."""
    with (root / "pyproject.toml").open("rb") as file:
        modules: list[str] = tomllib.load(file)["tool"]["passerelle"]["compile"]["modules"]
    return modules


def copy_tree(destination: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=IGNORED)
        else:
            shutil.copy2(source, destination / name)
    for name in LINKED:
        if (REPO / name).is_dir():
            (destination / name).symlink_to(REPO / name, target_is_directory=True)


def build(destination: Path) -> list[str]:
    """Builds the extension modules in the copy; the modules compiled."""
    environment = {**os.environ, "PASSERELLE_COMPILE": "1"}
    command = [sys.executable, "setup.py", "build_ext", "--inplace", "--parallel", "2"]
    done = subprocess.run(command, cwd=destination, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-20000:] + done.stderr[-20000:])
        raise SystemExit(f"mypyc build failed (exit {done.returncode})")
    modules = compiled_modules(destination)
    missing = [
        module
        for module in modules
        if not list((destination / module).parent.glob(Path(module).stem + ".*.so"))
    ]
    if missing:
        raise SystemExit(f"no extension module built for {', '.join(missing)}")
    return modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("destination", type=Path, help="directory of the copy (replaced)")
    arguments = parser.parse_args()
    destination = arguments.destination.resolve()
    if destination == REPO or REPO.is_relative_to(destination):
        parser.error("the copy cannot be the tree itself or hold it")
    started = time.monotonic()
    copy_tree(destination)
    count = len(build(destination))
    print(
        f"compiled {count} modules with mypyc in {destination} ({time.monotonic() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
