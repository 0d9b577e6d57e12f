"""TLS and mutual TLS listeners."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from pathlib import Path

import pytest

from listeners.config import ConfigError, TlsConfig
from listeners.mllp import (
    MllpClient,
    MllpClientError,
    MllpServer,
    client_ssl_context,
    parse_ack,
    server_ssl_context,
)
from tests.support.certs import Pki

from ._support import RawConnection, Recorder, listener, message, port_of, run, serving

CLIENT_SUBJECT = "CN=lab-sender,OU=Lab,O=Passerelle Tests"


def tls(pki: Pki, *, mutual: bool) -> TlsConfig:
    return TlsConfig(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca if mutual else None)


async def refused(port: int, context: ssl.SSLContext) -> bool:
    """Whether the exchange fails (handshake error, alert, or closed without ACK)."""
    client = MllpClient("127.0.0.1", port, ssl_context=context, timeout=5)
    try:
        await client.send(message("INTRUDER"))
    except TimeoutError:  # neither accepted nor refused
        return False
    except (OSError, MllpClientError):
        return True
    finally:
        await client.close()
    return False


def test_tls_listener(pki: Pki) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, [listener(tls=tls(pki, mutual=False))]) as server:
            context = client_ssl_context(ca=pki.ca)
            async with MllpClient("127.0.0.1", port_of(server), ssl_context=context) as client:
                info = parse_ack(await client.send(message("TLS-1")))
            assert (info.code, info.acknowledged_id) == ("AA", "TLS-1")
            peer = recorder.peers[0]
            assert peer.tls and peer.tls_subject is None

            # A client that does not trust the server's CA fails its handshake.
            assert await refused(port_of(server), client_ssl_context(ca=pki.other_ca))
            # Plain TCP on a TLS port: the server sees no valid handshake, no ACK.
            conn = await RawConnection.open(port_of(server))
            await conn.send_raw(b"\x0b" + message("PLAIN") + b"\x1c\r")
            assert await conn.closed_by_server()
            await conn.close()
            assert [p.tls for p in recorder.peers] == [True]
            assert server.stats().tls_handshake_failures >= 2

    run(scenario())


def test_mutual_tls_passes_the_client_subject(pki: Pki) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, [listener(tls=tls(pki, mutual=True))]) as server:
            context = client_ssl_context(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
            async with MllpClient("127.0.0.1", port_of(server), ssl_context=context) as client:
                for n in range(3):
                    info = parse_ack(await client.send(message(f"M{n}")))
                    assert info.code == "AA"
            assert {p.tls_subject for p in recorder.peers} == {CLIENT_SUBJECT}

    run(scenario())


def test_mutual_tls_refuses_missing_or_foreign_certificates(pki: Pki) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with serving(recorder, [listener(tls=tls(pki, mutual=True))]) as server:
            port = port_of(server)
            assert await refused(port, client_ssl_context(ca=pki.ca))
            foreign = client_ssl_context(
                ca=pki.ca, cert=pki.other_client_cert, key=pki.other_client_key
            )
            assert await refused(port, foreign)
            assert recorder.payloads == []
            for _ in range(50):
                if server.stats().tls_handshake_failures >= 2:
                    break
                await asyncio.sleep(0.02)
            assert server.stats().tls_handshake_failures == 2
            # The listener still serves a good client afterwards.
            good = client_ssl_context(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
            async with MllpClient("127.0.0.1", port, ssl_context=good) as client:
                assert parse_ack(await client.send(message("OK"))).code == "AA"

    run(scenario())


def test_bad_tls_material_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError):
        server_ssl_context(TlsConfig(cert=pki.ca, key=pki.server_key))

    async def scenario() -> None:
        bad = TlsConfig(cert=pki.server_cert, key=pki.server_key, client_ca=pki.server_key)
        server = MllpServer([listener("ok"), listener("bad", tls=bad)], Recorder())
        with pytest.raises(ConfigError):
            await server.start()
        assert server.addresses == {}

    run(scenario())


def test_an_encrypted_listener_key_is_a_config_error_naming_it(pki: Pki, tmp_path: Path) -> None:
    """Without a passphrase callback OpenSSL prompted on the terminal (a service started
    from one waited there for ever), or failed with "[Errno 22] Invalid argument"."""
    key = tmp_path / "server-encrypted.key"
    subprocess.run(
        [
            *("openssl", "pkey", "-in", str(pki.server_key), "-aes256"),
            *("-passout", "pass:s3cret", "-out", str(key)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with pytest.raises(ConfigError, match="is encrypted"):
        server_ssl_context(TlsConfig(cert=pki.server_cert, key=key))


def test_a_tls_client_on_a_plain_listener_is_named_and_closed_at_once(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """Read as MLLP, a ClientHello (whose bytes hold VTs now and then) kept a "frame" open
    until frame_timeout, and the log spoke of dropped bytes and a restarted sender, never
    of TLS: a sender configured for TLS on a plain port was a puzzle at 3 a.m."""

    async def scenario() -> float:
        recorder = Recorder()
        async with serving(recorder, frame_timeout=30, idle_timeout=30) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await refused(port_of(server), client_ssl_context(ca=pki.ca))
            elapsed = loop.time() - started
            assert server.stats().tls_handshake_failures == 1
            # The listener still serves plain MLLP.
            conn = await RawConnection.open(port_of(server))
            ack = await conn.exchange(message("PLAIN-AFTER"))
            assert ack is not None and parse_ack(ack).code == "AA"
            await conn.close()
            return elapsed

    with caplog.at_level(logging.WARNING, logger="listeners.mllp.server"):
        elapsed = run(scenario())
    assert elapsed < 5
    texts = [r.getMessage() for r in caplog.records]
    (warning,) = [t for t in texts if "TLS handshake" in t]
    assert "not configured for TLS" in warning
    assert not [t for t in texts if "unfinished frame" in t or "frame not complete" in t]
