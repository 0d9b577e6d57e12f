"""``scripts/bench_sizes.py`` still builds its inputs and converts them: its figures
(time per OBX, line, MB) are how a quadratic step over large inputs is noticed."""

from __future__ import annotations

import re

from tests.support.scripts import run_script


def test_bench_sizes_prints_a_figure_per_size() -> None:
    run = run_script("bench_sizes.py", "--only", "mdm-pdf", "cda-pdf", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = re.findall(r"^(\S+)\s+([\d,]+) MB .* s\s+([\d.]+) ms per MB$", run.stdout, re.MULTILINE)
    assert [(name, size) for name, size, _ in rows] == [
        ("mdm-pdf", "1"),
        ("mdm-pdf", "3"),
        ("mdm-pdf", "7"),
        ("cda-pdf", "1"),
        ("cda-pdf", "5"),
        ("cda-pdf", "10"),
        ("cda-pdf", "20"),  # a text node over libxml2's default limit: converted
    ], run.stdout
    assert all(float(per_mb) > 0 for _, _, per_mb in rows)
