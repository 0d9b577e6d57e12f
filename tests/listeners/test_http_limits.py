"""The HTTP API's defences, over real sockets: bad JSON, framework errors as FHIR, empty
secrets, connection limits and timeouts, messages per request (probe D3, D4, D5, D8, D9)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from listeners.config import ConfigError, HttpConfig
from listeners.http.api import create_app
from listeners.metrics import Metrics
from tests.listeners.service.support import RunningService, adt, make_config

API_KEY = "k3y-for-limits"
AUTH = {"X-API-Key": API_KEY}
MAX_CONNECTIONS = 3
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_MESSAGES = 3


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    directory = tmp_path_factory.mktemp("http-limits")
    settings = {
        "http": {
            "api_key": API_KEY,
            "max_connections": MAX_CONNECTIONS,
            "header_timeout": HEADER_TIMEOUT,
            "body_timeout": BODY_TIMEOUT,
            "max_messages": MAX_MESSAGES,
        }
    }
    with RunningService(make_config(directory, settings)) as service:
        yield service


def port_of(api: RunningService) -> int:
    return int(api.http_url.rsplit(":", 1)[1])


def assert_outcome(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    return outcome


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


# -- D8: bad JSON is a 400 --------------------------------------------------------------------
def test_deep_or_huge_json_is_a_400_not_a_500(
    api: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    bodies = [
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b'{"resourceType": "Parameters", "parameter": ' + b"[" * 100_000,
        b'{"resourceType": "Parameters", "n": ' + b"9" * 5000 + b"}",
    ]
    with caplog.at_level(logging.ERROR, logger="passerelle.http"):
        for body in bodies:
            response = httpx.post(
                f"{api.http_url}/$convert-data", content=body, headers=AUTH, timeout=30
            )
            outcome = assert_outcome(response, 400, "structure")
            assert outcome["issue"][0]["diagnostics"] == "body is not JSON"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- D9: framework responses --------------------------------------------------------------------
def test_framework_errors_are_operation_outcomes_and_nothing_redirects(
    api: RunningService,
) -> None:
    url = api.http_url
    assert_outcome(httpx.get(f"{url}/nowhere", headers=AUTH), 404, "not-found")
    not_allowed = httpx.get(f"{url}/convert", headers=AUTH)
    assert_outcome(not_allowed, 405, "not-supported")
    assert "POST" in not_allowed.headers["allow"]
    # A trailing slash is a 404, not a 307 to the client's Host (which replays the body).
    slash = httpx.post(
        f"{url}/convert/",
        content=adt("SLASH-1"),
        headers={**AUTH, "Host": "evil.example.com"},
    )
    assert "location" not in slash.headers
    assert_outcome(slash, 404, "not-found")
    # No server header, on any response.
    for response in (slash, not_allowed, httpx.get(f"{url}/health")):
        assert "server" not in response.headers
    # uvicorn's own 400 (a malformed request head) is FHIR too.
    with socket.create_connection(("127.0.0.1", port_of(api)), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/fhir+json" in head
    assert b'"resourceType": "OperationOutcome"' in body


# -- D5: empty secrets, open API ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "env", "named"),
    [
        ({}, {"PASSERELLE_HTTP_API_KEY": ""}, "http.api_key"),
        ({}, {"PASSERELLE_HTTP_BEARER_TOKEN": " "}, "http.bearer_token"),
        ({}, {"PASSERELLE_HTTP_API_KEY_FILE": ""}, "http.api_key_file"),
        ({"http": {"api_key_file": ""}}, {}, "http.api_key_file"),
        ({"http": {"api_key": ""}}, {}, "http.api_key"),
    ],
)
def test_an_empty_api_key_or_token_is_refused(
    tmp_path: Path, settings: dict[str, Any], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=f"{named} is empty"):
        make_config(tmp_path, settings, env=env)


def test_an_open_api_is_announced_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="passerelle.http"),
        RunningService(make_config(tmp_path)),
    ):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("requires no credentials" in m for m in warnings), warnings
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="passerelle.http"):
        create_app(_CountingBackend(), HttpConfig(api_key=None, bearer_token=None))
        assert len(caplog.records) == 1
        caplog.clear()
        config = make_config(tmp_path / "keyed", {"http": {"api_key": API_KEY}})
        create_app(_CountingBackend(), config.http)
        assert not caplog.records


def test_limit_settings(tmp_path: Path) -> None:
    assert HttpConfig().max_connections == 100
    assert HttpConfig().max_messages == 100
    assert HttpConfig().header_timeout == 10.0
    assert HttpConfig().body_timeout == 30.0
    for bad in (
        {"max_connections": 0},
        {"max_messages": 0},
        {"header_timeout": 0},
        {"body_timeout": -1},
    ):
        with pytest.raises(ConfigError, match=r"http\."):
            make_config(tmp_path, {"http": bad})


# -- D3: connections ------------------------------------------------------------------------------
def test_idle_and_slow_connections_are_closed_after_the_header_timeout(
    api: RunningService,
) -> None:
    port = port_of(api)
    with socket.create_connection(("127.0.0.1", port)) as idle:
        start = time.monotonic()
        assert closed_within(idle, HEADER_TIMEOUT + 3)
        assert HEADER_TIMEOUT - 0.2 <= time.monotonic() - start < HEADER_TIMEOUT + 3
    # Headers trickled in: closed too, though bytes keep coming.
    with socket.create_connection(("127.0.0.1", port)) as slow:
        start = time.monotonic()
        closed = False
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if closed_within(slow, 0.1):
                closed = True
                break
        assert closed
        assert time.monotonic() - start < HEADER_TIMEOUT + 3
    # After a response, a kept-alive connection gets the same time for its next head.
    with socket.create_connection(("127.0.0.1", port)) as kept:
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        kept.settimeout(5)
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        kept.sendall(b"GET /health HTTP/1.1\r\n")  # stops the keep-alive timer
        assert closed_within(kept, HEADER_TIMEOUT + 3)
    # A prompt request is served as before.
    assert httpx.get(f"{api.http_url}/health").status_code == 200


def read_response(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes ``sock`` (or ``seconds`` pass)."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
    return received


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
def test_a_body_not_received_within_the_body_timeout_gets_a_408_and_a_close(
    api: RunningService, trickle: bool
) -> None:
    head = (
        f"POST /convert HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
        "Content-Type: application/hl7-v2\r\nContent-Length: 5000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port_of(api))) as slow:
        start = time.monotonic()
        slow.sendall(head.encode() + b"MSH|^~\\&|")
        if trickle:
            # Bytes keep coming, each well within the timeout: the limit is on the whole body.
            for _ in range(int(BODY_TIMEOUT / 0.2) + 5):
                try:
                    slow.sendall(b"x")
                except OSError:
                    break
                time.sleep(0.2)
        response = read_response(slow, BODY_TIMEOUT + 5)
        elapsed = time.monotonic() - start
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b"connection: close" in response.lower()
    assert b'"code":"timeout"' in response.replace(b" ", b"")
    assert BODY_TIMEOUT - 0.2 <= elapsed < BODY_TIMEOUT + 5
    # A prompt request is served as before.
    prompt = httpx.post(f"{api.http_url}/convert", content=adt("PROMPT-1"), headers=AUTH)
    assert prompt.status_code == 200, prompt.text


def test_beyond_max_connections_requests_get_a_503_at_once_but_health(
    api: RunningService,
) -> None:
    port = port_of(api)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        start = time.monotonic()
        busy = httpx.post(f"{api.http_url}/convert", content=adt("BUSY-1"), headers=AUTH)
        assert time.monotonic() - start < 1
        assert_outcome(busy, 503, "transient")
        assert busy.headers["connection"] == "close"
        # The liveness probe still answers: the service is busy, not dead.
        assert httpx.get(f"{api.http_url}/health").status_code == 200
        # Past twice the limit, new connections are closed unread (bounded descriptors).
        more = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
        try:
            extra = socket.create_connection(("127.0.0.1", port))
            with extra:
                assert closed_within(extra, 1)
        finally:
            for sock in more:
                sock.close()
    finally:
        for sock in idle:
            sock.close()
    # Once they are gone (or timed out), requests are served again.
    time.sleep(0.3)
    served = httpx.post(f"{api.http_url}/convert", content=adt("BUSY-2"), headers=AUTH)
    assert served.status_code == 200, served.text


# -- D4: messages per request -------------------------------------------------------------------
class _CountingBackend:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.calls = 0

    async def readiness(self) -> dict[str, str | None]:
        return {}

    async def convert(
        self, data: bytes, *, input_type: str, root_template: str | None
    ) -> list[bytes]:
        self.calls += 1
        return [b'{"resourceType":"Bundle"}']


def test_more_messages_than_max_messages_is_a_413_before_converting(
    api: RunningService,
) -> None:
    batch = b"".join(adt(f"MANY-{n}") for n in range(MAX_MESSAGES + 1))
    response = httpx.post(f"{api.http_url}/convert", content=batch, headers=AUTH, timeout=30)
    outcome = assert_outcome(response, 413, "too-costly")
    assert f"more than {MAX_MESSAGES} messages" in outcome["issue"][0]["diagnostics"]
    assert "http.max_messages" in outcome["issue"][0]["diagnostics"]
    # At the limit: converted.
    batch = b"".join(adt(f"FEW-{n}") for n in range(MAX_MESSAGES))
    response = httpx.post(f"{api.http_url}/convert", content=batch, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.text.splitlines()) == MAX_MESSAGES
    # Nothing of the refused batch reaches the converter.
    backend = _CountingBackend()
    app = create_app(backend, HttpConfig(max_messages=2))

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.post("/convert", content=adt("A") + adt("B") + adt("C"))

    assert asyncio.run(scenario()).status_code == 413
    assert backend.calls == 0


def test_count_messages_matches_the_splitter() -> None:
    from converter.hl7v2.er7 import split_messages
    from listeners.http.bodies import count_messages

    batch = (
        b"\xef\xbb\xbfFHS|^~\\&\rBHS|^~\\&\r"
        + adt("C-1")
        + b"\n\n\x0b"
        + adt("C-2").replace(b"\r", b"\r\n")
        + b"\x1c\r"
        + b"  "
        + adt("C-3")
        + b"BTS|3\rFTS|1\r"
    )
    assert count_messages(batch, "hl7v2", 100) == len(split_messages(batch)) == 3
    assert count_messages(batch, "auto", 1) == 2  # stops past the limit
    assert count_messages(b"  <ClinicalDocument/>", "auto", 100) == 1
    assert count_messages(b"MSH|x\rMSH|y", "cda", 100) == 1


@pytest.mark.parametrize(
    ("headers", "length", "status"),
    [("", 30 * 1024 * 1024, b"413"), ("X-API-Key: wrong\r\n", 5000, b"401")],
    ids=["413", "401"],
)
def test_the_unread_body_of_an_answered_request_cannot_hold_the_connection(
    api: RunningService, headers: str, length: int, status: bytes
) -> None:
    """A request answered before its body was read (401, 413): a client trickling the rest
    of the body kept the connection for ever, each byte restarting uvicorn's keep-alive
    timer; it is closed header_timeout after the response."""
    credentials = headers or f"X-API-Key: {API_KEY}\r\n"
    head = f"POST /convert HTTP/1.1\r\nHost: x\r\n{credentials}Content-Length: {length}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port_of(api))) as slow:
        slow.sendall(head.encode() + b"MSH|^~\\&|")
        slow.settimeout(5)
        assert slow.recv(65536).startswith(b"HTTP/1.1 " + status)
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < HEADER_TIMEOUT + 4:
            try:
                slow.sendall(b"x")
            except OSError:
                closed = True
                break
            if closed_within(slow, 0.2):
                closed = True
                break
        assert closed, "a trickled body kept the connection open"
        assert time.monotonic() - start < HEADER_TIMEOUT + 3


def test_a_body_sent_whole_after_an_early_answer_keeps_the_connection(
    api: RunningService,
) -> None:
    """The bound on an unread body does not close a kept-alive connection whose client sent
    the whole body: its next request is answered."""
    body = b"x" * 3000
    with socket.create_connection(("127.0.0.1", port_of(api))) as sock:
        sock.settimeout(5)
        sock.sendall(
            f"POST /convert HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b'"code":"login"' not in received.replace(b" ", b""):
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 401")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
