"""Garbage-collector settings of a process that converts many inputs: the service's
conversion processes and ``passerelle convert`` given more than one file.

Such a process holds a large, long-lived heap (code maps, message structures,
compiled templates, FHIR models: about 100,000 tracked objects) and converts messages
whose own objects mostly die by reference counting. CPython's defaults fit neither:

* every full collection walks the whole long-lived heap again, though none of it ever
  becomes garbage: frozen (:func:`gc.freeze`) once loaded, it is skipped;
* a young collection runs every 700 net allocations, about every few hundred
  microseconds while an ORU or a C-CDA document converts. At 10,000, the cyclic
  garbage a conversion leaves (a few hundred kilobytes at most) waits a little longer.

Measured on this project's benchmark messages (share of conversion time spent in the
collector; ``scripts/benchmark.py --service-gc``): ORU_R01 with 20 OBX 7.6 % → 0 %,
a 175 KB CCD 8.4 % → 2.5 %. ADT messages leave no cycles and are unaffected.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["YOUNG_THRESHOLD", "long_lived_settled", "settle_long_lived"]

#: Net allocations of tracked objects between two young-generation collections.
YOUNG_THRESHOLD = 10_000


def settle_long_lived() -> None:
    """Collect once, freeze what survives (what the process loaded), and collect the
    young generation less often. Called once a process has loaded its converters; what
    it builds later (templates compiled on first use) is collected as usual."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)


@contextmanager
def long_lived_settled() -> Iterator[None]:
    """:func:`settle_long_lived` for a while, then the collector as it was: for a command
    run in a process that goes on after it (``converter.cli.main([...])`` in a test or a
    script), which must not find its heap frozen."""
    threshold = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    settle_long_lived()
    try:
        yield
    finally:
        if not frozen_before:  # what someone else froze stays frozen
            gc.unfreeze()
        gc.set_threshold(*threshold)
