"""Authentication to a FHIR server: none, Basic, static bearer, OAuth2 client credentials.

An :class:`Authenticator` gives the ``Authorization`` header value for the next request and is
told when the server answered 401, so that a token can be dropped and fetched again (once).
Credentials are :class:`~listeners.config.Secret` objects and header values are never logged;
``repr`` of every authenticator shows no secret.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import quote

import httpx

from ..config import AuthConfig, ConfigError, Secret
from ..errors import TransientDeliveryError
from .exchange import MAX_TOKEN_ANSWER_BYTES, AnswerTooLarge, bounded_exchange
from .failures import http_status_text, transport_failure
from .retry_after import parse_retry_after
from .urls import redact_url

__all__ = [
    "Authenticator",
    "BasicAuth",
    "BearerAuth",
    "NoAuth",
    "OAuth2ClientCredentials",
    "build_authenticator",
]

_log = logging.getLogger(__name__)

#: Lifetime assumed for a token whose response has no ``expires_in`` (RFC 6749 §5.1).
DEFAULT_TOKEN_LIFETIME = 300.0
#: A cached token is renewed this long before it expires (at most; 10 % of short lifetimes).
REFRESH_MARGIN = 30.0


class Authenticator(Protocol):
    """Supplies the ``Authorization`` header of FHIR requests."""

    async def authorization(self) -> str | None:
        """The header value for the next request, or ``None`` for no header."""
        ...

    async def invalidate(self, used: str | None) -> bool:
        """The server answered 401 to a request sent with ``used``.

        Returns True when a retry with fresh credentials may succeed (a new token).
        """
        ...


class NoAuth:
    """No ``Authorization`` header."""

    async def authorization(self) -> str | None:
        return None

    async def invalidate(self, used: str | None) -> bool:
        return False

    def __repr__(self) -> str:
        return "NoAuth()"


class BasicAuth:
    """HTTP Basic (RFC 7617), UTF-8 user and password."""

    def __init__(self, username: str, password: Secret) -> None:
        self._username = username
        self._password = password

    async def authorization(self) -> str | None:
        raw = f"{self._username}:{self._password.reveal()}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    async def invalidate(self, used: str | None) -> bool:
        return False

    def __repr__(self) -> str:
        return f"BasicAuth(username={self._username!r}, password={self._password!r})"


class BearerAuth:
    """A static bearer token (an API key issued by the FHIR server's operator)."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    async def authorization(self) -> str | None:
        return f"Bearer {self._token.reveal()}"

    async def invalidate(self, used: str | None) -> bool:
        return False

    def __repr__(self) -> str:
        return f"BearerAuth(token={self._token!r})"


@dataclass(frozen=True, slots=True)
class _Token:
    header: Secret
    #: Monotonic time after which the token is not used any more.
    renew_at: float


class OAuth2ClientCredentials:
    """OAuth2 client-credentials grant (RFC 6749 §4.4) with a shared, cached token.

    The token is fetched from ``token_url`` on first use, reused until shortly before it expires
    (``expires_in`` minus a margin), then fetched again. Concurrent callers share one fetch. A 401
    from the FHIR server drops the token it was sent with, so the next call fetches a new one.
    The client authenticates with HTTP Basic (``client_secret_basic``, the RFC's default) or with
    form fields (``client_secret_post``).

    Token endpoint failures are :class:`TransientDeliveryError`: the bundle is fine, so it must
    wait (not be dead-lettered) until the identity provider or the credentials are fixed.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: Secret,
        scope: str | None,
        client: httpx.AsyncClient,
        client_auth: Literal["client_secret_basic", "client_secret_post"] = ("client_secret_basic"),
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token_url = token_url
        #: What errors and logs show of it: a token endpoint may carry secrets too.
        self._shown_url = redact_url(token_url)
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._client = client
        self._client_auth = client_auth
        self._timeout = timeout
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        #: Tokens fetched so far (for tests and metrics).
        self.fetches = 0

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self._shown_url!r}, "
            f"client_id={self._client_id!r}, client_secret={self._client_secret!r}, "
            f"scope={self._scope!r})"
        )

    async def authorization(self) -> str | None:
        token = self._token
        if token is not None and self._clock() < token.renew_at:
            return token.header.reveal()
        async with self._lock:
            token = self._token
            if token is None or self._clock() >= token.renew_at:
                token = self._token = await self._fetch()
            return token.header.reveal()

    async def invalidate(self, used: str | None) -> bool:
        token = self._token
        if token is not None and used is not None and token.header.reveal() == used:
            self._token = None
        # Either we just dropped it, or another caller already replaced it: retry either way.
        return True

    async def _fetch(self) -> _Token:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        headers = {"Accept": "application/json"}
        if self._client_auth == "client_secret_basic":
            # RFC 6749 §2.3.1: form-urlencode id and secret before Base64.
            secret = quote(self._client_secret.reveal(), safe="")
            pair = f"{quote(self._client_id, safe='')}:{secret}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            form["client_id"] = self._client_id
            form["client_secret"] = self._client_secret.reveal()
        started = self._clock()
        # Raised outside the ``except``: describe_failure gives their own text.
        failure: TransientDeliveryError | None = None
        try:
            # The whole exchange within the timeout, the answer read up to a cap: a token
            # endpoint trickling its answer would hold every delivery waiting for the token.
            response = await bounded_exchange(
                self._client,
                "POST",
                self._token_url,
                data=form,
                headers=headers,
                deadline=self._timeout,
                max_body=MAX_TOKEN_ANSWER_BYTES,
            )
        except httpx.TimeoutException:
            raise TransientDeliveryError(
                f"OAuth2 token endpoint {self._shown_url} timed out"
            ) from None
        except AnswerTooLarge as exc:
            failure = TransientDeliveryError(
                f"OAuth2 token endpoint {self._shown_url}: the answer exceeds {exc.limit} bytes"
            )
        except httpx.DecodingError:
            failure = TransientDeliveryError(
                f"OAuth2 token endpoint {self._shown_url}: the answer's body does not match "
                "its Content-Encoding"
            )
        except (httpx.HTTPError, OSError) as exc:  # OSError: unwrapped ssl.SSLError
            raise TransientDeliveryError(
                f"OAuth2 token endpoint {self._shown_url} unreachable: {transport_failure(exc)}"
            ) from None
        if failure is not None:
            raise failure
        if response.status_code != 200:
            raise TransientDeliveryError(
                f"OAuth2 token endpoint {self._shown_url} answered "
                f"{http_status_text(response.status_code)}{_oauth_error(response)}",
                status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        try:
            payload = response.json()
            access_token = payload["access_token"]
            token_type = str(payload.get("token_type", "Bearer"))
            expires_in = float(payload.get("expires_in", DEFAULT_TOKEN_LIFETIME))
        except (ValueError, KeyError, TypeError):
            raise TransientDeliveryError(
                f"OAuth2 token endpoint {self._shown_url} sent no usable access_token",
                status=response.status_code,
            ) from None
        if not isinstance(access_token, str) or not access_token:
            raise TransientDeliveryError(
                f"OAuth2 token endpoint {self._shown_url} sent no usable access_token"
            )
        if token_type.lower() != "bearer":
            raise TransientDeliveryError(
                f"OAuth2 token endpoint {self._shown_url} issued a {token_type!r} token; "
                "only Bearer tokens are supported"
            )
        self.fetches += 1
        margin = min(REFRESH_MARGIN, expires_in * 0.1)
        _log.debug("OAuth2 token fetched from %s, expires in %.0fs", self._shown_url, expires_in)
        return _Token(
            header=Secret(f"Bearer {access_token}"),
            renew_at=started + max(0.0, expires_in - margin),
        )


def _oauth_error(response: httpx.Response) -> str:
    """`` (error: description)`` from an RFC 6749 §5.2 error body, if it is one."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), str):
        return ""
    description = payload.get("error_description")
    detail = f": {description}" if isinstance(description, str) else ""
    return f" ({payload['error']}{detail})"


def build_authenticator(
    config: AuthConfig, client: httpx.AsyncClient, *, timeout: float | None = None
) -> Authenticator:
    """The authenticator for ``config``; ``client`` is used to reach the token endpoint."""
    if config.kind == "none":
        return NoAuth()
    if config.kind == "basic":
        if not config.username or config.password is None:
            raise ConfigError("basic authentication needs username and password")
        return BasicAuth(config.username, config.password)
    if config.kind == "bearer":
        if config.token is None:
            raise ConfigError("bearer authentication needs a token")
        return BearerAuth(config.token)
    if config.kind == "oauth2":
        if not (config.token_url and config.client_id and config.client_secret is not None):
            raise ConfigError("oauth2 authentication needs token_url, client_id, client_secret")
        return OAuth2ClientCredentials(
            token_url=config.token_url,
            client_id=config.client_id,
            client_secret=config.client_secret,
            scope=config.scope,
            client=client,
            timeout=timeout,
        )
    raise ConfigError(f"unknown authentication kind {config.kind!r}")
