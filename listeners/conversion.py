"""Conversion off the event loop, in worker processes.

Conversion is CPU-bound Python: threads would keep the loop responsive but not use more
than one core, so conversions run in a process pool. Each process builds, on first use,
one :class:`converter.Converter` per route (its own template overrides and settings) and
keeps it for its lifetime. Results cross the process boundary as JSON bytes plus a few
facts; errors as plain data, so nothing unpicklable travels back.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from converter import ConversionError, Converter, ConverterConfig

__all__ = ["ConversionFailure", "ConversionPool", "ConversionResult"]


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """One message converted: the bundle as JSON bytes and what to log about it."""

    bundle: bytes
    message_type: str
    control_id: str | None
    entries: int
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ConversionFailure:
    """Why a message did not convert: safe to log except ``detail`` (may hold values)."""

    kind: str
    reason: str
    hl7_error_code: str
    location: str | None = None
    template: str | None = None
    control_id: str | None = None
    message_type: str | None = None
    detail: str | None = None
    issues: tuple[str, ...] = field(default=())

    @classmethod
    def from_error(cls, error: ConversionError) -> ConversionFailure:
        return cls(
            kind=type(error).__name__,
            reason=error.reason,
            hl7_error_code=error.hl7_error_code,
            location=error.location,
            template=error.template,
            control_id=error.control_id,
            message_type=error.message_type,
            detail=error.detail,
            issues=tuple(getattr(error, "issues", ()) or ()),
        )

    def as_record(self) -> dict[str, Any]:
        """The error as stored with a dead letter."""
        return {k: v for k, v in {
            "kind": self.kind, "reason": self.reason, "hl7_error_code": self.hl7_error_code,
            "location": self.location, "template": self.template,
            "control_id": self.control_id, "message_type": self.message_type,
            "detail": self.detail, "issues": list(self.issues) or None,
        }.items() if v is not None}


class _ProcessState:
    """Converters of one worker process, one per route, built on first use."""

    def __init__(self, configs: Mapping[str, ConverterConfig]) -> None:
        self.configs = configs
        self.converters: dict[str, Converter] = {}

    def converter(self, route: str) -> Converter:
        found = self.converters.get(route)
        if found is None:
            found = self.converters[route] = Converter(self.configs[route])
        return found


# The state of a *worker process*, set by its initializer: the documented way to give
# ProcessPoolExecutor workers long-lived objects. The service process never sets it.
_state: _ProcessState | None = None


def _init_process(configs: Mapping[str, ConverterConfig]) -> None:
    global _state
    _state = _ProcessState(configs)


def _convert(route: str, payload: bytes, input_type: str,
             root_template: str | None) -> list[ConversionResult] | ConversionFailure:
    assert _state is not None, "conversion process not initialised"
    started = time.perf_counter()
    try:
        converter = _state.converter(route)
        results = []
        for conversion in converter.convert(
            payload, input_type=input_type,  # type: ignore[arg-type]
            root_template=root_template,
        ):
            results.append(ConversionResult(
                bundle=json.dumps(conversion.bundle, ensure_ascii=False,
                                  separators=(",", ":")).encode("utf-8"),
                message_type=conversion.message_type,
                control_id=conversion.control_id,
                entries=len(conversion.bundle.get("entry", [])),
                warnings=conversion.warnings,
                seconds=time.perf_counter() - started,
            ))
        return results
    except ConversionError as exc:
        return ConversionFailure.from_error(exc)


class ConversionPool:
    """Converts messages for the service; ``processes=0`` means one per CPU."""

    def __init__(self, configs: Mapping[str, ConverterConfig], *, processes: int = 0,
                 use_threads: bool = False) -> None:
        self._configs = dict(configs)
        workers = processes or max(1, os.cpu_count() or 1)
        self._executor: Executor
        if use_threads:
            _init_process(self._configs)
            self._executor = ThreadPoolExecutor(max_workers=workers)
        else:
            self._executor = ProcessPoolExecutor(
                max_workers=workers, initializer=_init_process, initargs=(self._configs,)
            )

    def warm_up(self) -> None:
        """Start the worker processes and load every route's templates now, not on the
        first message (a slow first ACK or delivery would look like a hang)."""
        futures = [self._executor.submit(_warm, route) for route in self._configs]
        for future in futures:
            future.result()

    async def convert(self, route: str, payload: bytes, *, input_type: str = "auto",
                      root_template: str | None = None,
                      ) -> list[ConversionResult] | ConversionFailure:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, _convert, route, payload, input_type, root_template
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _warm(route: str) -> None:
    assert _state is not None
    _state.converter(route)
