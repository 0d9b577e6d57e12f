"""Authentication to the FHIR server: Basic, static bearer, OAuth2 client credentials."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from listeners.config import AuthConfig, Secret
from listeners.delivery import FhirServerSink, OAuth2ClientCredentials
from listeners.errors import TransientDeliveryError
from tests.listeners.delivery.helpers import destination, fresh, make_envelope, start_server
from tests.support.fhirserver import FhirServer

pytestmark = pytest.mark.anyio

PASSWORD = "s3cr3t-pässword"
STATIC_TOKEN = "static-token-4f9d2c"
CLIENT_ID = "passerelle"
CLIENT_SECRET = "client-s3cret-81ab"
SCOPE = "system/*.write"
FHIR_PATH = "/fhir/R4"
TOKEN_PATH = "/oauth2/token"


@pytest.fixture(scope="module")
def basic_server() -> Iterator[FhirServer]:
    with start_server(auth=f"basic:hl7:{PASSWORD}") as server:
        yield server


@pytest.fixture(scope="module")
def bearer_server() -> Iterator[FhirServer]:
    with start_server(auth=f"bearer:{STATIC_TOKEN}") as server:
        yield server


@pytest.fixture(scope="module")
def oauth_server_module() -> Iterator[FhirServer]:
    with start_server(oauth2=f"{CLIENT_ID}:{CLIENT_SECRET}") as server:
        yield server


@pytest.fixture
def oauth_server(oauth_server_module: FhirServer) -> FhirServer:
    server = fresh(oauth_server_module)
    server.set_token_ttl(60)
    return server


def _oauth(
    server: FhirServer, *, secret: str = CLIENT_SECRET, token_url: str | None = None
) -> AuthConfig:
    return AuthConfig(
        kind="oauth2",
        token_url=token_url or server.token_url,
        client_id=CLIENT_ID,
        client_secret=Secret(secret),
        scope=SCOPE,
    )


def _statuses(server: FhirServer) -> list[tuple[str, int]]:
    return [(r["path"], r["status"]) for r in server.requests()]


# -- Basic and static bearer ----------------------------------------------------------------------


async def test_basic(basic_server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    server = fresh(basic_server)
    auth = AuthConfig(kind="basic", username="hl7", password=Secret(PASSWORD))
    async with FhirServerSink(destination(server, auth=auth)) as sink:
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200
    (request,) = server.requests(FHIR_PATH)
    assert request["headers"]["authorization"].startswith("Basic ")


async def test_basic_wrong_password_is_transient_without_retry(
    basic_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    server = fresh(basic_server)
    auth = AuthConfig(kind="basic", username="hl7", password=Secret("wrong"))
    async with FhirServerSink(destination(server, auth=auth)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.status == 401
    assert "credentials" in str(caught.value)
    assert _statuses(server) == [(FHIR_PATH, 401)]


async def test_bearer(bearer_server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    server = fresh(bearer_server)
    auth = AuthConfig(kind="bearer", token=Secret(STATIC_TOKEN))
    async with FhirServerSink(destination(server, auth=auth)) as sink:
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200
        await sink.check()
    (request,) = server.requests(FHIR_PATH)
    assert request["headers"]["authorization"] == f"Bearer {STATIC_TOKEN}"


@pytest.mark.parametrize("auth", [AuthConfig(kind="bearer", token=Secret("nope")), AuthConfig()])
async def test_bearer_refused(
    bearer_server: FhirServer, adt_bundle: dict[str, Any], auth: AuthConfig
) -> None:
    server = fresh(bearer_server)
    async with FhirServerSink(destination(server, auth=auth)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.status == 401
    assert _statuses(server) == [(FHIR_PATH, 401)]


def test_basic_challenge_and_public_metadata(basic_server: FhirServer) -> None:
    server = fresh(basic_server)
    response = httpx.get(f"{server.base_url}/Patient")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.json()["resourceType"] == "OperationOutcome"
    assert httpx.get(f"{server.base_url}/Patient", auth=("hl7", PASSWORD)).status_code == 200
    assert httpx.get(f"{server.base_url}/metadata").status_code == 200


# -- OAuth2 client credentials --------------------------------------------------------------------


async def test_oauth2_token_fetched_once_and_reused(
    oauth_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(oauth_server, auth=_oauth(oauth_server))) as sink:
        for i in range(3):
            await sink.deliver(adt_bundle, make_envelope(f"M{i}"))
        await sink.check()
        authenticator = sink.authenticator
        assert isinstance(authenticator, OAuth2ClientCredentials)
        assert authenticator.fetches == 1
    (token_request,) = oauth_server.requests(TOKEN_PATH)
    assert token_request["token"] == {
        "grantType": "client_credentials",
        "scope": SCOPE,
        "clientId": CLIENT_ID,
        "clientAuth": "client_secret_basic",
    }
    posts = oauth_server.requests(FHIR_PATH)
    assert [r["status"] for r in posts] == [200, 200, 200]
    assert len({r["headers"]["authorization"] for r in posts}) == 1
    assert posts[0]["headers"]["authorization"].startswith("Bearer ")


async def test_oauth2_token_renewed_before_expiry(
    oauth_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    oauth_server.set_token_ttl(1)
    async with FhirServerSink(destination(oauth_server, auth=_oauth(oauth_server))) as sink:
        await sink.deliver(adt_bundle, make_envelope())
        await asyncio.sleep(1.2)
        await sink.deliver(adt_bundle, make_envelope())
    # Renewed proactively: no request was ever refused.
    assert _statuses(oauth_server) == [
        (TOKEN_PATH, 200),
        (FHIR_PATH, 200),
        (TOKEN_PATH, 200),
        (FHIR_PATH, 200),
    ]
    first, second = (r["headers"]["authorization"] for r in oauth_server.requests(FHIR_PATH))
    assert first != second


async def test_oauth2_401_renews_token_and_retries_once(
    oauth_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(oauth_server, auth=_oauth(oauth_server))) as sink:
        await sink.deliver(adt_bundle, make_envelope())
        oauth_server.revoke_tokens()
        receipt = await sink.deliver(adt_bundle, make_envelope())
    assert receipt.status == 200
    assert _statuses(oauth_server) == [
        (TOKEN_PATH, 200),
        (FHIR_PATH, 200),
        (FHIR_PATH, 401),
        (TOKEN_PATH, 200),
        (FHIR_PATH, 200),
    ]


async def test_oauth2_persistent_401_is_transient(
    oauth_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    oauth_server.fail(401, count=2)
    async with FhirServerSink(destination(oauth_server, auth=_oauth(oauth_server))) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.status == 401
    assert _statuses(oauth_server) == [
        (TOKEN_PATH, 200),
        (FHIR_PATH, 401),
        (TOKEN_PATH, 200),
        (FHIR_PATH, 401),
    ]


async def test_oauth2_concurrent_callers_share_one_fetch(
    oauth_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    async with FhirServerSink(destination(oauth_server, auth=_oauth(oauth_server))) as sink:
        await asyncio.gather(*(sink.deliver(adt_bundle, make_envelope(f"A{i}")) for i in range(10)))
        assert len(oauth_server.requests(TOKEN_PATH)) == 1
        oauth_server.revoke_tokens()
        receipts = await asyncio.gather(
            *(sink.deliver(adt_bundle, make_envelope(f"B{i}")) for i in range(10))
        )
    assert {receipt.status for receipt in receipts} == {200}
    assert len(oauth_server.requests(TOKEN_PATH)) == 2


async def test_oauth2_wrong_secret(oauth_server: FhirServer, adt_bundle: dict[str, Any]) -> None:
    auth = _oauth(oauth_server, secret="not-the-secret")
    async with FhirServerSink(destination(oauth_server, auth=auth)) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
    assert caught.value.status == 401
    assert "invalid_client" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)
    assert oauth_server.requests(FHIR_PATH) == []


async def test_oauth2_token_endpoint_unavailable(
    oauth_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    oauth_server.fail(503, retry_after=5, target="token")
    async with FhirServerSink(destination(oauth_server, auth=_oauth(oauth_server))) as sink:
        with pytest.raises(TransientDeliveryError) as caught:
            await sink.deliver(adt_bundle, make_envelope())
        assert caught.value.status == 503
        assert caught.value.retry_after == 5
        assert (await sink.deliver(adt_bundle, make_envelope())).status == 200


async def test_oauth2_token_endpoint_unreachable(
    oauth_server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    auth = _oauth(oauth_server, token_url="http://127.0.0.1:9/oauth2/token")
    async with FhirServerSink(destination(oauth_server, auth=auth)) as sink:
        with pytest.raises(TransientDeliveryError, match="unreachable"):
            await sink.deliver(adt_bundle, make_envelope())


async def test_oauth2_client_secret_post(oauth_server: FhirServer) -> None:
    async with httpx.AsyncClient() as client:
        auth = OAuth2ClientCredentials(
            token_url=oauth_server.token_url,
            client_id=CLIENT_ID,
            client_secret=Secret(CLIENT_SECRET),
            scope=None,
            client=client,
            client_auth="client_secret_post",
        )
        header = await auth.authorization()
    assert header is not None and header.startswith("Bearer ")
    (token_request,) = oauth_server.requests(TOKEN_PATH)
    assert token_request["token"]["clientAuth"] == "client_secret_post"
    assert token_request["token"]["scope"] is None


async def test_secrets_never_shown(
    oauth_server: FhirServer, adt_bundle: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = destination(oauth_server, auth=_oauth(oauth_server))
    async with FhirServerSink(config) as sink:
        await sink.deliver(adt_bundle, make_envelope())
        oauth_server.revoke_tokens()
        await sink.deliver(adt_bundle, make_envelope())
        shown = [repr(sink), repr(sink.authenticator), repr(config), str(config.auth)]
    tokens = {
        r["headers"]["authorization"].removeprefix("Bearer ")
        for r in oauth_server.requests(FHIR_PATH)
    }
    assert len(tokens) == 2
    text = "\n".join(shown) + caplog.text
    for secret in (CLIENT_SECRET, *tokens):
        assert secret not in text
    assert "Secret('***')" in repr(sink.authenticator)
    basic = AuthConfig(kind="basic", username="hl7", password=Secret(PASSWORD))
    async with FhirServerSink(destination(oauth_server, auth=basic)) as sink:
        assert PASSWORD not in repr(sink)
