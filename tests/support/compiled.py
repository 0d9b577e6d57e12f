"""Whether the tests run in the compiled copy of the tree (scripts/build_compiled.py)."""

from __future__ import annotations

import os

import pytest

#: Set by ``make test`` for its run in the compiled copy.
COMPILED = os.environ.get("PASSERELLE_EXPECT_COMPILED") == "1"

#: For a test that instruments Python: counts work (a ``str`` subclass counting its
#: ``split`` calls, a profiler), replaces a method on an instance or passes a stand-in
#: object. Compiled code calls str's C functions directly and makes no Python frame (such
#: counts would read zero and prove nothing), and its classes' methods are read-only and
#: its arguments type-checked.
pure_python_only = pytest.mark.skipif(
    COMPILED,
    reason="instruments Python-level calls, which compiled modules neither make "
    "nor let be replaced",
)
