"""Throw-away certificates for TLS tests, made with the ``openssl`` command line.

:func:`make_pki` writes, into a directory: a CA, a server certificate for ``localhost`` /
``127.0.0.1`` signed by it, a client certificate signed by it, and a second, unrelated
CA with its own client certificate (to check that mutual TLS refuses it). P-256 keys,
valid for two days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLIENT_SUBJECT", "Pki", "make_pki", "openssl_available"]

CLIENT_SUBJECT = "/O=Passerelle Tests/OU=Lab/CN=lab-sender"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: Another CA and a client certificate it signed: not trusted by the server.
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(directory: Path, name: str, subject: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _run(
        "req",
        "-x509",
        *_CURVE,
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    return cert, key


def _leaf(
    directory: Path, name: str, subject: str, ca: tuple[Path, Path], extensions: str, serial: int
) -> tuple[Path, Path]:
    cert, key, csr = (
        directory / f"{name}.pem",
        directory / f"{name}.key",
        directory / f"{name}.csr",
    )
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n" + extensions,
        encoding="ascii",
    )
    _run(
        "req",
        "-new",
        *_CURVE,
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        subject,
        cwd=directory,
    )
    _run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-set_serial",
        str(serial),
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
        cwd=directory,
    )
    return cert, key


def make_pki(directory: Path) -> Pki:
    """Create the certificates in ``directory`` (which must exist)."""
    ca = _ca(directory, "ca", "/O=Passerelle Tests/CN=Passerelle Test CA")
    other = _ca(directory, "other-ca", "/O=Elsewhere/CN=Unrelated CA")
    server = _leaf(
        directory,
        "server",
        "/O=Passerelle Tests/CN=localhost",
        ca,
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        1001,
    )
    client = _leaf(directory, "client", CLIENT_SUBJECT, ca, "extendedKeyUsage=clientAuth\n", 1002)
    intruder = _leaf(
        directory,
        "other-client",
        "/O=Elsewhere/CN=lab-sender",
        other,
        "extendedKeyUsage=clientAuth\n",
        2001,
    )
    return Pki(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca=other[0],
        other_client_cert=intruder[0],
        other_client_key=intruder[1],
    )
