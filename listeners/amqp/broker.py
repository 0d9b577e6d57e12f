"""Connections to RabbitMQ and publishing with confirms.

:func:`connect` opens a robust connection (aio-pika re-opens it, its channels, exchanges,
queues and consumers after the broker went away). :class:`ConfirmedPublisher` publishes
on a channel in confirm mode, ``mandatory``, and turns every way a publication can fail
into a :class:`PublishFailure` that says whether trying again may help:

=============================================  ==========================  =========
what happened                                   reason                      permanent
=============================================  ==========================  =========
broker ``basic.nack`` (e.g. queue full with     ``nacked``                  no
``reject-publish``)
``basic.return``: no queue bound (mandatory)    ``unroutable``              no
no confirm within ``timeout`` (also while       ``timeout``                 no
reconnecting)
connection or channel lost                      ``connection``              no
``PRECONDITION_FAILED`` (message too large)     ``refused``                 yes
=============================================  ==========================  =========

Error texts never contain the connection URL (it holds the password).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractRobustConnection,
)
from yarl import URL

from ..config import Secret

__all__ = [
    "ConfirmedPublisher",
    "PublishFailure",
    "connect",
    "connect_plain",
    "describe",
    "is_connected",
    "safe_error",
]


class PublishFailure(Exception):
    """A publication was not confirmed; ``permanent`` when retrying cannot help."""

    def __init__(self, reason: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent


def describe(url: Secret) -> str:
    """``host:port/vhost`` of a broker URL, for logs (no credentials)."""
    parsed = URL(url.reveal())
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    return f"{parsed.host}:{port}/{parsed.path.lstrip('/')}"


def _properties(role: str) -> dict[str, Any]:
    return {"connection_name": f"passerelle {role} {socket.gethostname()}"}


async def connect(
    url: Secret, *, role: str, reconnect_interval: float = 2.0, timeout: float = 10.0
) -> AbstractRobustConnection:
    """A robust connection; ``OSError`` (a ``ConnectionError``) when the broker is not
    reachable now. Later losses are repaired in the background."""
    try:
        return await aio_pika.connect_robust(
            url.reveal(),
            client_properties=_properties(role),
            reconnect_interval=reconnect_interval,
            timeout=timeout,
        )
    except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
        raise ConnectionError(
            f"cannot connect to RabbitMQ at {describe(url)}: {safe_error(exc, url)}"
        ) from None


async def connect_plain(url: Secret, *, role: str, timeout: float = 10.0) -> AbstractConnection:
    """A plain connection (the caller restores its own state after a loss)."""
    try:
        return await aio_pika.connect(
            url.reveal(), client_properties=_properties(role), timeout=timeout
        )
    except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
        raise ConnectionError(
            f"cannot connect to RabbitMQ at {describe(url)}: {safe_error(exc, url)}"
        ) from None


def is_connected(connection: AbstractConnection | None) -> bool:
    """Whether ``connection`` is open now. A robust connection whose broker went away is
    not closed (``is_closed`` stays False while it reconnects): its ``connected`` event
    tells."""
    return (
        connection is not None
        and not connection.is_closed
        and connection.connected.is_set()
        and connection.transport is not None
    )


def safe_error(exc: BaseException, url: Secret | None = None) -> str:
    """The exception's type and text, with the URL and its password scrubbed."""
    text = str(exc) or type(exc).__name__
    if url is not None:
        secret = url.reveal()
        text = text.replace(secret, describe(url))
        password = URL(secret).password
        if password:
            text = text.replace(password, "***")
    return f"{type(exc).__name__}: {text}"[:300]


class ConfirmedPublisher:
    """Publishes on one confirm-mode channel of ``connection`` (opened on first use)."""

    def __init__(
        self, connection: AbstractConnection, *, timeout: float, url: Secret | None = None
    ) -> None:
        self._connection = connection
        self._timeout = timeout
        self._url = url
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._lock = asyncio.Lock()

    async def channel(self) -> AbstractChannel:
        """The confirm channel, (re)opened when needed."""
        async with self._lock:
            current = self._channel
            if current is not None and current.is_closed and not self._connection.is_closed:
                # Closed by the broker (a channel error such as an oversized message), not by
                # a lost connection: aio-pika does not reopen it, so take a new one.
                with contextlib.suppress(Exception):
                    await current.close()
                current = None
            if current is None:
                current = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                self._exchanges.clear()
            self._channel = current
            return current

    async def publish(
        self, message: aio_pika.Message, *, exchange: str, routing_key: str, mandatory: bool = True
    ) -> None:
        """Publish and wait for the broker's confirm; :class:`PublishFailure` otherwise."""
        try:
            async with asyncio.timeout(self._timeout):
                channel = await self.channel()
                target = self._exchanges.get(exchange)
                if target is None:
                    target = (
                        channel.default_exchange
                        if exchange == ""
                        else await channel.get_exchange(exchange, ensure=False)
                    )
                    self._exchanges[exchange] = target
                await target.publish(message, routing_key, mandatory=mandatory)
        except TimeoutError:
            raise PublishFailure(
                "timeout", f"no confirm from the broker within {self._timeout:g}s"
            ) from None
        except aiormq.exceptions.PublishError:
            raise PublishFailure(
                "unroutable",
                f"unroutable: no queue bound to exchange "
                f"{exchange!r} for routing key {routing_key!r}",
            ) from None
        except aiormq.exceptions.DeliveryError:
            raise PublishFailure("nacked", "the broker refused the message (basic.nack)") from None
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise PublishFailure("refused", safe_error(exc, self._url), permanent=True) from None
        except (
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            OSError,
            RuntimeError,
        ) as exc:
            raise PublishFailure(
                "connection", f"connection to the broker lost: {safe_error(exc, self._url)}"
            ) from None

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
            self._channel = None
