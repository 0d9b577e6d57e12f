"""Every Prometheus series the README names is one ``GET /metrics`` exports.

An operator copies these names into alert rules: a name the service does not export
(a plural the code does not use, a counter without its ``_total``) matches nothing, and
the alert never fires. The names and label names come from the service's own registry
(:class:`listeners.metrics.Metrics`), not from a list kept here.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from listeners.metrics import Metrics

README = Path(__file__).resolve().parents[2] / "README.md"

#: A series as the README writes it in code spans: ``name`` or ``name{label,label="v"}``.
_SERIES = re.compile(r"\b(passerelle_[a-z0-9_]+)(\{[^}`]*\})?")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")


def _exported() -> dict[str, tuple[str, ...]]:
    """Exported series name → its label names, as the text exposition writes them."""
    registry = Metrics().registry
    series: dict[str, tuple[str, ...]] = {}
    for collector in registry._collector_to_names:  # no public listing of collectors
        assert isinstance(collector, MetricWrapperBase), collector
        name, kind = collector._name, collector._type
        labels = tuple(collector._labelnames)
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                series[name + suffix] = labels
            series[name] = labels  # the family, as prose names it
        else:
            series[name] = labels
    return series


def _readme_series() -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, series name, label names) for each series named in a README code span."""
    found = []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        for span in _CODE_SPAN.findall(line):
            for match in _SERIES.finditer(span):
                braces = match.group(2) or ""
                labels = tuple(
                    part.split("=", 1)[0].strip()
                    for part in braces.strip("{}").split(",")
                    if part.strip()
                )
                found.append((number, match.group(1), labels))
    return found


def test_the_readme_names_series_it_can_find() -> None:
    # The check below means nothing if the README's wording stops matching the pattern.
    assert len(_readme_series()) >= 20


def test_every_series_the_readme_names_is_exported_with_its_labels() -> None:
    exported = _exported()
    wrong = []
    for line, name, labels in _readme_series():
        if name not in exported:
            close = [known for known in exported if known.startswith(name.rstrip("s"))]
            wrong.append(f"README.md:{line}: {name} is not exported (closest: {close})")
            continue
        unknown = [label for label in labels if label not in exported[name]]
        if unknown:
            wrong.append(
                f"README.md:{line}: {name} has no label {unknown} (labels: {exported[name]})"
            )
    assert not wrong, "\n".join(wrong)
