"""What a FHIR destination's answer must be for a delivery to count, and how long and large it
may be: a 2xx that is no transaction-response for the bundle sent (an HTML page, an empty body,
an OperationOutcome, fewer entries) is retried, not taken as delivered; a redirect names only
scheme, host and port; an answer trickled or endless is cut by the destination's timeout or
the size cap; a broken Content-Encoding or an absurd Retry-After is a failure like another,
never a crash; URL credentials never replace the configured authentication.

The real test server (Medplum) gives the 2xx answers and Retry-After headers (its fault
injection); a few lines of asyncio serve what it cannot: a Location header, a trickled body,
a body that does not match its Content-Encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from converter import json_dumps
from listeners.config import AuthConfig, ConfigError, DestinationConfig, Secret, load_config
from listeners.delivery import (
    DestinationGate,
    FhirServerSink,
    GatedSink,
    describe_failure,
    parse_retry_after,
    sink_readiness,
)
from listeners.delivery import fhir as fhir_module
from listeners.delivery.failures import UnexpectedAnswerError
from listeners.errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from tests.listeners.delivery.helpers import destination, make_envelope
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records

pytestmark = pytest.mark.anyio

#: Patient data a page, a Location or a body may quote: never in a reason or a log line.
PATIENT = "ZORGLUBIDE"
HTML_PAGE = f"<html><body>Login required (last user: {PATIENT})</body></html>"
OVERFLOWING_DATE = "Sun, 06 Nov 99999999999 08:49:37 GMT"


async def _rejection_or_failure(sink: FhirServerSink, bundle: Any) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver(bundle, make_envelope())
    return caught.value


# -- a 2xx is a delivery only as a transaction-response for every entry sent --------------------


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        (
            {"outcome": False, "body": HTML_PAGE, "contentType": "text/html; charset=utf-8"},
            "HTTP 200 OK with a text/html body, not FHIR JSON",
        ),
        ({"outcome": False, "body": ""}, "HTTP 200 OK with an empty body"),
        (
            {"outcome": {"resourceType": "Parameters", "parameter": []}},
            "HTTP 200 OK with a Parameters, not a transaction-response Bundle",
        ),
        (
            {"outcome": {"resourceType": "Bundle", "type": "searchset", "entry": []}},
            "HTTP 200 OK with a Bundle of type searchset, not transaction-response",
        ),
        (
            {"outcome": {"ok": True, "user": PATIENT}},
            "HTTP 200 OK with JSON that is not a FHIR resource",
        ),
    ],
    ids=["html", "empty", "parameters", "searchset", "json"],
)
async def test_a_2xx_that_is_no_transaction_response_is_not_a_delivery(
    server: FhirServer, adt_bundle: dict[str, Any], fault: dict[str, Any], problem: str
) -> None:
    server.control(faults=[{"status": 200, **fault}])
    async with FhirServerSink(destination(server)) as sink:
        error = await _rejection_or_failure(sink, adt_bundle)
    assert isinstance(error, UnexpectedAnswerError)  # a TransientDeliveryError: retried
    assert error.status == 200
    assert str(describe_failure(error)) == f"UnexpectedAnswerError: {problem}"
    assert str(error).startswith(f"destination test: {problem}: not taken as delivered")
    assert PATIENT not in str(error) and PATIENT not in json.dumps(error.as_record())
    # Nothing was written: the fault answered instead of the server.
    assert server.count("Patient") == 0


async def test_a_201_with_an_operation_outcome_is_not_a_delivery(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": f"{PATIENT} lost"}],
    }
    server.fail(201, outcome=outcome)
    async with FhirServerSink(destination(server)) as sink:
        error = await _rejection_or_failure(sink, adt_bundle)
    assert isinstance(error, UnexpectedAnswerError)
    assert describe_failure(error).reason == (
        "HTTP 201 Created with an OperationOutcome, not a transaction-response Bundle"
    )
    # Its diagnostics stay in the outcome (dead-letters show --payload), not in the reason.
    assert error.outcome == outcome
    assert PATIENT not in str(error)


@pytest.mark.parametrize("as_bytes", [False, True], ids=["dict", "bytes"])
async def test_a_transaction_response_with_fewer_entries_than_sent_is_not_a_delivery(
    server: FhirServer, adt_bundle: dict[str, Any], as_bytes: bool
) -> None:
    sent = len(adt_bundle["entry"])
    answer = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "201 Created"}}] * (sent - 1),
    }
    server.control(faults=[{"status": 200, "outcome": answer}])
    bundle = json_dumps(adt_bundle).encode() if as_bytes else adt_bundle
    async with FhirServerSink(destination(server)) as sink:
        error = await _rejection_or_failure(sink, bundle)
    assert isinstance(error, UnexpectedAnswerError)
    assert describe_failure(error).reason == (
        f"HTTP 200 OK with a transaction-response of {sent - 1} entries for {sent} sent"
    )
    assert "the server did not answer each entry sent" in str(error)


async def test_the_real_answers_still_count_as_deliveries(
    server: FhirServer, batch_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    """A transaction, and a batch (to a server applying it as a batch): one entry each."""
    for target, bundle_type in ((server, "transaction"), (batch_server, "batch")):
        async with FhirServerSink(destination(target, bundle_type=bundle_type)) as sink:
            receipt = await sink.deliver(adt_bundle, make_envelope())
        assert len(receipt.entries) == len(adt_bundle["entry"]), bundle_type
        assert target.count("Patient") == 1


async def test_an_html_200_pauses_the_destination_and_says_why(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    """Like a 3xx: the destination's configuration is at fault. Paused, /ready red, one
    WARNING naming status and Content-Type, never the page."""
    server.control(
        faults=[{"status": 200, "outcome": False, "body": HTML_PAGE, "contentType": "text/html"}]
    )
    gate = DestinationGate({"test": server.base_url}, initial=30.0, maximum=60.0)
    with log_records() as records:
        async with FhirServerSink(destination(server)) as fhir:
            sink = GatedSink(fhir, gate)
            with pytest.raises(UnexpectedAnswerError):
                await sink.deliver(adt_bundle, make_envelope())
            ready = await sink_readiness({"test": sink}, gate)
    assert gate.retry_in("test") is not None  # paused
    reason = ready["destination:test"]
    assert reason is not None
    assert "HTTP 200 OK with a text/html body, not FHIR JSON" in reason
    (warning,) = [r for r in records if "unavailable" in r.getMessage()]
    assert "HTTP 200 OK with a text/html body, not FHIR JSON" in warning.getMessage()
    assert all(PATIENT not in r.getMessage() for r in records)


# -- helpers: a few hand-written HTTP answers ---------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """An HTTP/1.1 server answering each request with ``handler(reader, writer, head)``;
    yields its base url ``http://127.0.0.1:<port>/fhir``."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(rest) < length:
                rest += await reader.read(65536)
            await handler(reader, writer, head)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def answer(status: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def transaction_response(entries: int) -> bytes:
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [{"response": {"status": "200 OK"}}] * entries,
        }
    ).encode()


# -- redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        (
            f"https://sso.example.org/fhir/Patient/{PATIENT}-MRN?token=T0KEN",
            "redirected to another host, https://sso.example.org:443",
        ),
        (
            f"/login?next=/fhir/Patient/{PATIENT}",
            "redirected to the same host, http://127.0.0.1:{port}",
        ),
        (
            f"http://127.0.0.1:1/fhir/Patient/{PATIENT}",
            "redirected to the same host, http://127.0.0.1:1",
        ),
        (f"http://[bad/Patient/{PATIENT}", "redirected (Location not shown: unreadable)"),
    ],
    ids=["other-host", "relative", "other-port", "unreadable"],
)
async def test_a_redirect_shows_scheme_host_and_port_only(location: str, shown: str) -> None:
    async def redirect(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        writer.write(answer("302 Found", headers=(f"Location: {location}",)))

    async with raw_server(redirect) as url, FhirServerSink(DestinationConfig(url=url)) as sink:
        error = await _rejection_or_failure(sink, {"resourceType": "Bundle", "entry": []})
        port = url.split(":")[2].split("/")[0]
    shown = shown.replace("{port}", port)
    assert isinstance(error, UnexpectedAnswerError)
    assert error.status == 302
    assert str(error) == (f"destination default: HTTP 302 Found ({shown}; fix the destination url)")
    assert describe_failure(error).reason == f"HTTP 302 Found, {shown}"
    record = error.dead_letter_record("default", 3)
    # The whole Location only in the record's detail, which only `show --payload` prints.
    assert PATIENT not in record["reason"]
    assert record["detail"] == f"Location: {location}"


# -- time and size of an answer -----------------------------------------------------------------


async def test_a_trickled_answer_is_cut_at_the_destination_timeout() -> None:
    """A byte every 0.1 s keeps every read within httpx's timeout: the whole exchange's
    deadline ends it."""

    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n")
        writer.write(b"Content-Length: 100000\r\n\r\n")
        for _ in range(100):  # 10 s
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

    async with (
        raw_server(trickle) as url,
        FhirServerSink(DestinationConfig(url=url, timeout=1.0)) as sink,
    ):
        started = time.monotonic()
        error = await _rejection_or_failure(sink, {"resourceType": "Bundle", "entry": []})
        took = time.monotonic() - started
    assert isinstance(error, TransientDeliveryError)
    assert took < 3.0
    assert str(describe_failure(error)) == (
        "SlowAnswerTimeout: timeout: the answer came too slowly"
    )
    assert "limit 1s for the whole exchange" in str(error)


async def test_an_oauth2_token_endpoint_trickling_is_cut_too() -> None:
    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 100000\r\n\r\n")
        for _ in range(100):  # 10 s
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

    async with raw_server(trickle) as url:
        auth = AuthConfig(
            kind="oauth2", token_url=f"{url}/token", client_id="c", client_secret=Secret("s")
        )
        async with FhirServerSink(DestinationConfig(url=url, timeout=1.0, auth=auth)) as sink:
            started = time.monotonic()
            error = await _rejection_or_failure(sink, {"resourceType": "Bundle", "entry": []})
    assert isinstance(error, TransientDeliveryError)
    assert time.monotonic() - started < 3.0
    assert "OAuth2 token endpoint" in str(error) and "timed out" in str(error)


async def test_an_answer_over_the_cap_is_not_read(
    server: FhirServer, adt_bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fhir_module, "MAX_ANSWER_BYTES", 100)
    async with FhirServerSink(destination(server)) as sink:
        error = await _rejection_or_failure(sink, adt_bundle)
    assert isinstance(error, TransientDeliveryError)
    assert "the answer exceeds 100 bytes" in str(error)


async def test_the_cap_counts_decompressed_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small gzip body that inflates past the cap (a decompression bomb) is cut."""
    monkeypatch.setattr(fhir_module, "MAX_ANSWER_BYTES", 10_000)
    body = gzip.compress(transaction_response(0)[:-1] + b" " * 1_000_000 + b"}")
    assert len(body) < 10_000

    async def bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        writer.write(answer("200 OK", body, ("Content-Encoding: gzip",)))

    async with raw_server(bomb) as url, FhirServerSink(DestinationConfig(url=url)) as sink:
        error = await _rejection_or_failure(sink, {"resourceType": "Bundle", "entry": []})
    assert "the answer exceeds 10000 bytes" in str(error)


# -- answers that broke the sink ----------------------------------------------------------------


async def test_a_body_not_matching_its_content_encoding_is_a_transient_failure() -> None:
    async def broken(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> None:
        writer.write(answer("200 OK", b"this is not gzip", ("Content-Encoding: gzip",)))

    async with raw_server(broken) as url, FhirServerSink(DestinationConfig(url=url)) as sink:
        error = await _rejection_or_failure(sink, {"resourceType": "Bundle", "entry": []})
        ready = await sink_readiness({"default": sink})
    assert isinstance(error, TransientDeliveryError)
    assert "body does not match its Content-Encoding" in describe_failure(error).reason
    reason = ready["destination:default"]
    assert reason is not None and "does not match its Content-Encoding" in reason


async def test_readiness_never_raises() -> None:
    class Broken:
        name = "broken"

        async def check(self) -> None:
            raise RuntimeError(f"a bug quoting {PATIENT}")

    ready = await sink_readiness({"broken": Broken()})  # type: ignore[dict-item]
    reason = ready["destination:broken"]
    assert reason == ("destination broken: readiness check failed (RuntimeError: unexpected error)")


def test_a_retry_after_date_out_of_range_is_ignored() -> None:
    assert parse_retry_after(OVERFLOWING_DATE) is None
    assert parse_retry_after("Mon, 01 Jan 10000 00:00:00 GMT") is None
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=lambda: 784111700.0) == 77.0


@pytest.mark.parametrize(
    ("status", "kind"), [(422, RejectedDeliveryError), (503, TransientDeliveryError)]
)
async def test_an_overflowing_retry_after_does_not_crash_the_delivery(
    server: FhirServer, adt_bundle: dict[str, Any], status: int, kind: type[DeliveryError]
) -> None:
    """Before, OverflowError: a 422 was retried for ever as "delivery crashed"."""
    server.fail(status, retry_after=OVERFLOWING_DATE)
    async with FhirServerSink(destination(server)) as sink:
        error = await _rejection_or_failure(sink, adt_bundle)
    assert type(error) is kind
    assert error.status == status
    if isinstance(error, TransientDeliveryError):
        assert error.retry_after is None


# -- credentials in the url ----------------------------------------------------------------------


def test_url_credentials_with_an_auth_kind_are_refused(tmp_path: Path) -> None:
    """httpx would build Basic from them and silently replace the bearer token."""
    config = tmp_path / "passerelle.toml"
    config.write_text(
        '[destinations.default]\nurl = "https://user:urlpass@fhir.example.org/fhir"\n'
        'auth = { kind = "bearer", token = "BEARER-T" }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    text = str(caught.value)
    assert "destinations.default.url holds credentials" in text
    assert "destinations.default.auth.kind is 'bearer'" in text
    assert "urlpass" not in text
    # Through the environment, named by its variables.
    with pytest.raises(ConfigError, match="PASSERELLE_FHIR_URL"):
        load_config(
            None,
            env={
                "PASSERELLE_FHIR_URL": "https://user:urlpass@fhir.example.org/fhir",
                "PASSERELLE_FHIR_AUTH": "bearer",
                "PASSERELLE_FHIR_TOKEN": "BEARER-T",
            },
        )
    # Without an auth kind they are the authentication, as before.
    config.write_text(
        '[destinations.default]\nurl = "https://user:urlpass@fhir.example.org/fhir"\n',
        encoding="utf-8",
    )
    assert load_config(config, env={}).destinations["default"].url is not None


def test_the_sink_refuses_them_too() -> None:
    """A DestinationConfig built in code, not read from a file."""
    bearer = AuthConfig(kind="bearer", token=Secret("BEARER-T"))
    with pytest.raises(ConfigError, match=r"destinations\.d\.url holds credentials"):
        FhirServerSink(
            DestinationConfig(name="d", url="http://user:urlpass@127.0.0.1:1/fhir", auth=bearer)
        )


# -- readiness -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "described"),
    [
        (HTML_PAGE.encode(), ("Content-Type: text/html",), "a text/html body"),
        (b"", (), "an empty body"),
        (
            b'{"resourceType": "Bundle", "type": "searchset"}',
            ("Content-Type: application/fhir+json",),
            "a Bundle",
        ),
    ],
    ids=["html", "empty", "bundle"],
)
async def test_readiness_wants_a_capability_statement(
    body: bytes, headers: tuple[str, ...], described: str
) -> None:
    """A base url answered by a web page, a login page or a proxy passed the readiness
    probe (any 2xx) until the first delivery failed: /ready says it at once now."""

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter, __: bytes) -> None:
        writer.write(answer("200 OK", body, headers))

    async with raw_server(handler) as url:
        sink = FhirServerSink(DestinationConfig(url=url))
        try:
            with pytest.raises(DeliveryError) as caught:
                await sink.check()
        finally:
            await sink.close()
    assert f"answered HTTP 200 OK without a CapabilityStatement ({described};" in str(caught.value)


async def test_readiness_of_a_real_fhir_server(server: FhirServer) -> None:
    async with FhirServerSink(destination(server)) as sink:
        await sink.check()
    # A read of the CapabilityStatement, never a write.
    assert [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in server.requests()] == [
        ("GET", "metadata")
    ]
