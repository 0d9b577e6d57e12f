"""Requests answered before their body was received whole (401, 413): the answer says
``Connection: close`` and the connection ends after it, without a reset that could destroy
the answer. Real sockets against a running service."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.listeners.service.support import RunningService, make_config

API_KEY = "k3y-for-early-answers"
HEADER_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    directory = tmp_path_factory.mktemp("http-early")
    settings = {"http": {"api_key": API_KEY, "header_timeout": HEADER_TIMEOUT}}
    with RunningService(make_config(directory, settings)) as service:
        yield service


def port_of(api: RunningService) -> int:
    return int(api.http_url.rsplit(":", 1)[1])


def head_and_body(response: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return {"status": lines[0], **headers}, body


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, str]:
    """What the server sends, and how it ended: ``eof``, ``reset`` or ``open``."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, "open"
    except ConnectionResetError:
        return received, "reset"
    return received, "eof"


CASES = {
    # No credentials: 401 before the body is read.
    "401": ("", 100_000, "401 Unauthorized", "login"),
    # Content-Length over the 20 MB limit: 413 before the body is read.
    "413": (f"X-API-Key: {API_KEY}\r\n", 30_000_000, "413 Request Entity Too Large", "too-costly"),
}


@pytest.mark.parametrize("case", CASES)
def test_an_answer_before_the_body_says_connection_close_and_closes(
    api: RunningService, case: str
) -> None:
    """The 401 and 413 sent before the body came carried no Connection: close, though the
    connection could not serve another request (the next one would be read as the rest
    of the body) and was closed a few seconds later."""
    credentials, length, status, code = CASES[case]
    head = f"POST /convert HTTP/1.1\r\nHost: x\r\n{credentials}Content-Length: {length}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port_of(api))) as sock:
        sock.sendall(head.encode() + b"MSH|^~\\&|")
        start = time.monotonic()
        response, ending = read_until_closed(sock, HEADER_TIMEOUT + 5)
        elapsed = time.monotonic() - start
    headers, body = head_and_body(response)
    assert headers["status"] == f"HTTP/1.1 {status}"
    assert headers.get("connection") == "close"
    assert json.loads(body)["issue"][0]["code"] == code
    # Ended right after the answer (the server's half of the connection), not after a
    # keep-alive or header timeout.
    assert ending == "eof"
    assert elapsed < HEADER_TIMEOUT - 1


def test_a_client_still_sending_its_body_reads_the_whole_answer(api: RunningService) -> None:
    """Closed at once while the body's bytes kept arriving, the server's socket would
    answer them with a reset, which can destroy the 401 before the client reads it: the
    rest of the body is read and dropped until the client is done."""
    length = 2_000_000
    head = f"POST /convert HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port_of(api))) as sock:
        sock.sendall(head.encode())
        errors: list[BaseException] = []

        def upload() -> None:
            try:
                for _ in range(length // 20_000):
                    sock.sendall(b"x" * 20_000)
                    time.sleep(0.005)
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=upload)
        sender.start()
        time.sleep(0.2)  # the answer is sent while the body is still coming
        response, ending = read_until_closed(sock, HEADER_TIMEOUT + 5)
        sender.join(10)
    headers, body = head_and_body(response)
    assert headers["status"] == "HTTP/1.1 401 Unauthorized"
    assert headers.get("connection") == "close"
    assert json.loads(body)["issue"][0]["code"] == "login"
    assert ending == "eof"
    assert not errors, errors


def test_a_request_answered_after_its_whole_body_keeps_the_connection(
    api: RunningService,
) -> None:
    """Only an answer sent before the whole body came closes: a 401 to a request whose
    body had arrived keeps the connection for the next request."""
    body = b"x" * 500
    with socket.create_connection(("127.0.0.1", port_of(api))) as sock:
        sock.settimeout(5)
        sock.sendall(
            f"POST /convert HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b'"login"' not in received:
            received += sock.recv(65536)
        headers, _ = head_and_body(received)
        assert headers["status"] == "HTTP/1.1 401 Unauthorized"
        assert "connection" not in headers
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
