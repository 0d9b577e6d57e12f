"""``scripts/profile_split.py`` still knows where the code lives: when a module moves,
its samples would silently fall into "other" and the split would mislead."""

from __future__ import annotations

import re
import sys

import pytest

from tests.support.scripts import run_script


@pytest.mark.skipif(sys.platform == "win32", reason="SIGPROF sampling is POSIX only")
def test_profile_split_attributes_almost_every_sample() -> None:
    run = run_script("profile_split.py", "--count", "400", timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    shares = {
        kind: float(share)
        for share, kind in re.findall(r"^\s*([\d.]+)%\s+(.+)$", run.stdout, re.MULTILINE)
    }
    assert sum(shares.values()) == pytest.approx(100, abs=0.5)
    expected = {
        "HL7 v2 parsing and value access",
        "JSON text out (to_json, Markup, encoder)",
        "JSON text in (decode, prune)",
        "Jinja sandbox checks",
        "Jinja runtime (contexts, macros, loops)",
        "assembly (emit, ids, merge, bundle)",
        "validation",
    }
    assert expected <= set(shares), run.stdout
    assert shares.get("other", 0) < 10, run.stdout
