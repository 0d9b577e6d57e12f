"""TLS and mutual TLS on the service's MLLP listeners, with real clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from listeners.config import ServiceConfig
from listeners.mllp import MllpClientError, client_ssl_context
from tests.listeners.service.support import (
    adt,
    make_config,
    mllp_send_cli,
    passerelle,
    running,
    send_mllp,
)
from tests.support.certs import Pki


def tls_config(tmp_path: Path, pki: Pki) -> ServiceConfig:
    listeners = f"""
[[mllp.listeners]]
name = "plain"
host = "127.0.0.1"
port = 0

[[mllp.listeners]]
name = "tls"
host = "127.0.0.1"
port = 0
tls = {{ cert = "{pki.server_cert}", key = "{pki.server_key}" }}

[[mllp.listeners]]
name = "mtls"
host = "127.0.0.1"
port = 0
tls = {{ cert = "{pki.server_cert}", key = "{pki.server_key}", client_ca = "{pki.ca}" }}

[[routes]]
name = "from-mtls"
listener = "mtls"
destination = "trusted"

[destinations.trusted]
folder = "trusted-out"
"""
    config = make_config(tmp_path, {"mllp": {"host": None, "port": None}}, extra=listeners)
    assert [listener.name for listener in config.mllp.listeners] == ["plain", "tls", "mtls"]
    return config


def test_tls_and_mutual_tls_listeners(tmp_path: Path, pki: Pki) -> None:
    config = tls_config(tmp_path, pki)
    server_only = client_ssl_context(ca=pki.ca)
    with_cert = client_ssl_context(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    intruder = client_ssl_context(ca=pki.ca, cert=pki.other_client_cert, key=pki.other_client_key)
    with running(config) as service:
        ports = {name: service.mllp_port(name) for name in ("plain", "tls", "mtls")}
        assert len(set(ports.values())) == 3

        # Plain listener, python-hl7's client.
        assert [a.code for a in mllp_send_cli(ports["plain"], [adt("PLAIN-1")], tmp_path)] == ["AA"]
        # TLS: verified against the test CA, no client certificate needed.
        ack = send_mllp(ports["tls"], [adt("TLS-1")], ssl_context=server_only)[0]
        assert ack.code == "AA" and ack.acknowledged_id == "TLS-1"
        # A plain-text client gets no ACK from a TLS listener.
        with pytest.raises((MllpClientError, OSError)):
            send_mllp(ports["tls"], [adt("TLS-PLAIN-1")], timeout=3)

        # Mutual TLS: a certificate from the trusted CA is required ...
        ack = send_mllp(ports["mtls"], [adt("MTLS-1", mrn="MRN-MTLS")], ssl_context=with_cert)[0]
        assert ack.code == "AA" and ack.acknowledged_id == "MTLS-1"
        # ... no certificate, or one from another CA, is refused.
        for context in (server_only, intruder):
            with pytest.raises((MllpClientError, OSError)):
                send_mllp(ports["mtls"], [adt("MTLS-REFUSED")], ssl_context=context, timeout=5)

        # passerelle send with TLS options.
        message = tmp_path / "tls.hl7"
        message.write_bytes(adt("SEND-MTLS-1", mrn="MRN-SEND-MTLS"))
        result = passerelle(
            "send",
            str(message),
            "--port",
            str(ports["mtls"]),
            "--ca",
            str(pki.ca),
            "--cert",
            str(pki.client_cert),
            "--key",
            str(pki.client_key),
        )
        assert result.returncode == 0, result.stderr
        assert "MSA|AA|SEND-MTLS-1" in result.stdout
        refused = passerelle(
            "send", str(message), "--port", str(ports["mtls"]), "--ca", str(pki.ca)
        )
        assert refused.returncode == 1
        service.drained()
        stats = service.service.mllp.stats("mtls")  # type: ignore[union-attr]
        assert stats.tls_handshake_failures >= 2

    # Only messages that were really received were stored: routed by listener.
    trusted = sorted(p.name.split("-")[0] for p in (tmp_path / "trusted-out").rglob("*.json"))
    assert trusted == ["MTLS", "SEND"]
    others = sorted(
        p.name.rsplit("-", 5)[0] for p in config.destinations["default"].folder.rglob("*.json")
    )
    assert others == ["PLAIN-1", "TLS-1"]
