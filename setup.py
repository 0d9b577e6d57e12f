"""Optional compiled build: ``PASSERELLE_COMPILE=1`` compiles the converter's hot modules
with mypyc (the list is ``[tool.passerelle.compile] modules`` in pyproject.toml).

Everything else about the distribution is declared in pyproject.toml; without the
variable this file adds nothing and the package is pure Python. The compiled build needs
mypy (which ships mypyc) and a C compiler where it is built: the Dockerfile's build stage
has both, and ``scripts/build_compiled.py`` builds a compiled copy of the tree for tests
and benchmarks. Nothing in the package reads this variable at run time.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).resolve().parent


def compiled_modules() -> list[str]:
    """The source files mypyc compiles, relative to this directory."""
    with (HERE / "pyproject.toml").open("rb") as file:
        config = tomllib.load(file)
    modules: list[str] = config["tool"]["passerelle"]["compile"]["modules"]
    return modules


def extension_modules() -> list[Any]:
    if os.environ.get("PASSERELLE_COMPILE", "") not in ("1", "true", "yes"):
        return []
    from mypyc.build import mypycify  # only the compiled build needs mypy

    return list(mypycify(compiled_modules(), opt_level="3", group_name="passerelle"))


setup(ext_modules=extension_modules())
