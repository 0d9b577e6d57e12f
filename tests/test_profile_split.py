"""``scripts/profile_split.py`` still knows where the code lives: when a module moves,
its samples would silently fall into "other" and the split would mislead."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGPROF sampling is POSIX only")
def test_profile_split_attributes_almost_every_sample() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "profile_split.py"), "--count", "400"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
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
