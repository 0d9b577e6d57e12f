"""A throw-away PKI for the TLS tests, made with the ``openssl`` command line.

A CA, a server certificate for ``127.0.0.1``/``localhost`` and a client certificate signed by it,
plus a second, unrelated CA with its own client certificate (to check that the server refuses
certificates it does not trust). Keys are unencrypted EC P-256; everything lives in ``directory``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki", "openssl_unavailable_reason"]


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: Signed by another CA that the server does not trust.
    rogue_client_cert: Path
    rogue_client_key: Path


def openssl_unavailable_reason() -> str | None:
    return None if shutil.which("openssl") else "the openssl command is not on PATH"


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return path


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key = _key(directory / f"{name}.key")
    cert = directory / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        key,
        "-sha256",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        cert,
    )
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key = _key(directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    cert = directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions, encoding="ascii")
    _openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca[0],
        "-CAkey",
        ca[1],
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        ext,
        "-out",
        cert,
    )
    return cert, key


def make_pki(directory: Path) -> Pki:
    """Create the CA, server and client certificates under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "passerelle-test-ca")
    server = _leaf(
        directory,
        "passerelle-test-server",
        ca,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    client_ext = (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n"
    )
    client = _leaf(directory, "passerelle-client", ca, client_ext)
    rogue_ca = _ca(directory, "rogue-ca")
    rogue = _leaf(directory, "rogue-client", rogue_ca, client_ext)
    return Pki(
        ca_cert=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        rogue_client_cert=rogue[0],
        rogue_client_key=rogue[1],
    )
