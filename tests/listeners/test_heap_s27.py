"""Session 27: a conversion process freezes what it loaded and collects its young
generation less often (converter.heap), in real conversion processes; the service's own
process keeps CPython's settings."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from converter import ConverterConfig
from converter.heap import YOUNG_THRESHOLD
from listeners import conversion
from listeners.conversion import ConversionPool, ConversionResult
from tests.listeners.service.support import adt

#: A converter with its code maps and message structures loaded holds far more objects
#: than this: fewer frozen means the freeze came before the loading (or never).
LOADED_OBJECTS = 20_000


# -- run in the conversion processes (pickled by reference: module-level) ----------------------
def heap_report(route: str, payload: bytes, *args: Any) -> tuple[int, tuple[int, ...], object]:
    """The process's collector settings, around a real conversion."""
    outcome = conversion._convert(route, payload, *args)
    return gc.get_freeze_count(), gc.get_threshold(), outcome


def test_conversion_processes_freeze_what_they_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversion, "_convert", heap_report)
    before = gc.get_threshold()

    async def scenario() -> list[Any]:
        pool = ConversionPool({"default": ConverterConfig()}, processes=1)
        try:
            return [
                await pool.convert("default", adt("HEAP-1")),
                await pool.convert("default", adt("HEAP-2"), alone=True),
            ]
        finally:
            pool.close(5)

    for frozen, threshold, outcome in asyncio.run(asyncio.wait_for(scenario(), 600)):
        assert frozen > LOADED_OBJECTS
        assert threshold[0] == YOUNG_THRESHOLD
        assert isinstance(outcome, list)
        assert isinstance(outcome[0], ConversionResult)
    # Only the conversion processes: the service's event loop process is left as it was.
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
