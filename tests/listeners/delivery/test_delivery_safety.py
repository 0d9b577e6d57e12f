"""What delivery errors say, against the real test FHIR server: the status and a safe
reason, never URL credentials or the server's diagnostics; readiness that notices refused
credentials; Retry-After values that cannot park a feed for years."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from listeners.config import AuthConfig, DestinationConfig, Secret
from listeners.delivery import (
    FhirServerSink,
    backoff_delay,
    describe_failure,
    join_url,
    outcome_summary,
    redact_url,
    sink_readiness,
)
from listeners.errors import DeliveryError, RejectedDeliveryError, TransientDeliveryError
from tests.listeners.delivery.helpers import destination, fresh, make_envelope, start_server
from tests.support.fhirserver import FhirServer
from tests.support.leaks import OUTCOME, PASSWORD, PATIENT_DIAGNOSTIC, SECRETS

pytestmark = pytest.mark.anyio


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def basic_server() -> Iterator[FhirServer]:
    with start_server(auth=f"basic:hl7:{PASSWORD}") as server:
        yield server


def _with_secrets(base_url: str) -> str:
    """``base_url`` with a password in its userinfo and an API key in its query string."""
    scheme, rest = base_url.split("://", 1)
    return f"{scheme}://fhiruser:URLPASSWORD@{rest}?apikey=QSECRET"


def _assert_no_secret(text: str) -> None:
    assert not [s for s in SECRETS if s in text], text


# -- URLs --------------------------------------------------------------------------------------


def test_redact_and_join_urls() -> None:
    url = "https://fhiruser:URLPASSWORD@fhir.example.org:8443/fhir/R4/?apikey=QSECRET#frag"
    assert redact_url(url) == "https://fhiruser:***@fhir.example.org:8443/fhir/R4/?***"
    assert redact_url("https://TOKEN@h/fhir") == "https://***@h/fhir"
    assert redact_url("https://h/fhir") == "https://h/fhir"
    assert redact_url("http://[::1/fhir?k=v") == "(url not shown: unparseable)"
    # The resource goes on the path, the query string stays at the end.
    assert (
        join_url("https://h/fhir/R4?apikey=Q", "metadata") == "https://h/fhir/R4/metadata?apikey=Q"
    )
    assert join_url("https://h/fhir/R4/", "metadata") == "https://h/fhir/R4/metadata"


async def test_credentials_in_the_url_never_show(unused_port: int, adt_bundle: Any) -> None:
    url = _with_secrets(f"http://127.0.0.1:{unused_port}/fhir/R4")
    sink = FhirServerSink(DestinationConfig(name="default", url=url, timeout=2))
    try:
        with pytest.raises(TransientDeliveryError) as delivered:
            await sink.deliver(adt_bundle, make_envelope())
        with pytest.raises(DeliveryError) as checked:
            await sink.check()
        readiness = await sink_readiness({"default": sink})
    finally:
        await sink.close()
    texts = [
        str(delivered.value),
        str(delivered.value.dead_letter_record("default", 3)),
        str(checked.value),
        str(readiness),
        repr(sink),
    ]
    for text in texts:
        _assert_no_secret(text)
    # Still useful: where, and why.
    where = f"http://fhiruser:***@127.0.0.1:{unused_port}/fhir/R4"
    assert f"cannot reach {where}?***: ConnectError: connection refused" in str(delivered.value)
    assert f"cannot reach {where}/metadata?***" in str(checked.value)
    reason = readiness["destination:default"]
    assert reason is not None and "connection refused" in reason


async def test_the_query_string_stays_after_metadata(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    url = f"{server.base_url}?apikey=QSECRET"
    async with FhirServerSink(DestinationConfig(name="q", url=url)) as sink:
        await sink.check()
        await sink.deliver(adt_bundle, make_envelope())
    (metadata,) = server.requests("/fhir/R4/metadata")
    assert metadata["method"] == "GET" and metadata["query"] == "apikey=QSECRET"
    (post,) = server.requests("/fhir/R4")
    assert post["method"] == "POST" and post["status"] == 200


# -- the server's diagnostics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"), [(422, RejectedDeliveryError), (503, TransientDeliveryError)]
)
async def test_errors_name_the_status_and_keep_the_diagnostics_in_the_outcome(
    server: FhirServer, adt_bundle: dict[str, Any], status: int, error: type[DeliveryError]
) -> None:
    server.fail(status, outcome=OUTCOME)
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(error) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    exc = caught.value
    record = exc.dead_letter_record("default")
    assert PATIENT_DIAGNOSTIC not in str(exc)
    assert PATIENT_DIAGNOSTIC not in record["reason"]
    phrase = {422: "Unprocessable Entity", 503: "Service Unavailable"}[status]
    assert record["reason"] == f"destination test: HTTP {status} {phrase}"
    # Kept where `dead-letters show --payload` and the AE to the sender take them from.
    assert record["outcome"] == OUTCOME
    assert outcome_summary(record["outcome"]) == f"error processing: {PATIENT_DIAGNOSTIC}"
    assert describe_failure(exc).reason == f"HTTP {status} {phrase}"


# -- readiness and refused credentials -----------------------------------------------------------


async def test_wrong_basic_credentials_make_the_destination_not_ready(
    basic_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    server = fresh(basic_server)
    auth = AuthConfig(kind="basic", username="hl7", password=Secret("wrong"))
    async with FhirServerSink(destination(server, auth=auth)) as sink:
        await sink.check()  # /metadata is public: the probe alone cannot tell
        with pytest.raises(TransientDeliveryError):
            await sink.deliver(adt_bundle, make_envelope())
        with pytest.raises(DeliveryError) as caught:
            await sink.check()
        readiness = await sink_readiness({"default": sink})
    assert caught.value.status == 401
    assert "HTTP 401 Unauthorized" in str(caught.value) and "credentials" in str(caught.value)
    assert readiness["destination:default"] == str(caught.value)[:200]
    assert PASSWORD not in str(readiness) and "wrong" not in str(readiness)
    # Readiness only reads: no write reached the server besides the delivery.
    assert [r["method"] for r in server.requests("/fhir/R4")] == ["POST"]


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refusal_keeps_the_destination_not_ready_until_a_delivery_succeeds(
    server: FhirServer, adt_bundle: dict[str, Any], status: int
) -> None:
    server.fail(status, outcome=OUTCOME)
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(DeliveryError):
            await sink.deliver(adt_bundle, make_envelope())
        with pytest.raises(DeliveryError) as caught:
            await sink.check()
        assert caught.value.status == status
        assert f"HTTP {status} " in str(caught.value)
        assert PATIENT_DIAGNOSTIC not in str(caught.value)
        # Other failures leave the refusal standing: they prove nothing about credentials.
        server.fail(503)
        with pytest.raises(TransientDeliveryError):
            await sink.deliver(adt_bundle, make_envelope())
        with pytest.raises(DeliveryError):
            await sink.check()
        # The credentials work again (fixed): the next delivery clears it.
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200
        await sink.check()


# -- why a delivery failed -----------------------------------------------------------------------


async def test_describe_failure_names_the_transport_problem(
    server: FhirServer, adt_bundle: dict[str, Any], unused_port: int
) -> None:
    async def failure(config: DestinationConfig) -> TransientDeliveryError:
        async with FhirServerSink(config) as sink:
            with pytest.raises(TransientDeliveryError) as caught:
                await sink.deliver(adt_bundle, make_envelope())
        return caught.value

    refused = await failure(
        DestinationConfig(name="d", url=f"http://127.0.0.1:{unused_port}/fhir/R4")
    )
    assert (describe_failure(refused).kind, describe_failure(refused).reason) == (
        "ConnectError",
        "connection refused",
    )
    unknown = await failure(DestinationConfig(name="d", url="http://host.invalid/fhir", timeout=5))
    assert describe_failure(unknown).reason == "host name not resolved"
    server.delay(3000)
    slow = await failure(destination(server, timeout=0.5))
    assert str(describe_failure(slow)) == "ReadTimeout: timeout waiting for the answer"
    server.drop()
    dropped = await failure(destination(server))
    assert describe_failure(dropped).kind == "RemoteProtocolError"
    assert "closed the connection" in describe_failure(dropped).reason


# -- Retry-After ---------------------------------------------------------------------------------


async def test_a_huge_retry_after_waits_backoff_max_at_most(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    server.fail(503, retry_after="99999999")
    async with FhirServerSink(destination(server)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.retry_after == 99999999
    delay = backoff_delay(
        1, initial=1.0, maximum=300.0, retry_after=caught.value.retry_after, rng=random.Random(0)
    )
    assert delay == 300.0
