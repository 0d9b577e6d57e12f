"""A client key protected by a passphrase: refused at once, never a prompt.

OpenSSL asks for the passphrase of an encrypted key on the process's terminal when the
program gives none: ``passerelle serve`` started from a terminal (an operator's first run,
``docker run -it``) printed ``Enter PEM pass phrase:`` and waited there, the service not
started; with no terminal it failed with ``[Errno 22] Invalid argument``.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.certs import Pki

REPO_ROOT = Path(__file__).resolve().parents[3]
_LOAD = """
import sys
from pathlib import Path
from listeners.config import AuthConfig, ConfigError, DestinationConfig
from listeners.delivery.tls import ssl_context
destination = DestinationConfig(
    name="lyon", url="https://fhir.example.org/fhir", timeout=5.0, auth=AuthConfig(),
    client_cert=Path(sys.argv[1]), client_key=Path(sys.argv[2]),
)
try:
    ssl_context(destination)
except ConfigError as exc:
    print("ConfigError:", exc, flush=True)
else:
    print("loaded", flush=True)
"""


def _encrypted_copy(pki: Pki, directory: Path) -> Path:
    key = directory / "client-encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(pki.client_key),
            "-aes256",
            "-passout",
            "pass:s3cret",
            "-out",
            str(key),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert "ENCRYPTED" in key.read_text()
    return key


def _run_on_a_terminal(args: list[str], deadline: float) -> tuple[str, bool]:
    """Run ``args`` with a pseudo-terminal as its controlling terminal (as when started
    from a shell); its output, and whether it ended within ``deadline`` seconds."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader whose terminal is the pty
        os.chdir(REPO_ROOT)
        os.execv(args[0], args)
    output = b""
    ended = False
    limit = time.monotonic() + deadline
    try:
        while time.monotonic() < limit:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child closed the terminal: it ended
                    chunk = b""
                if not chunk:
                    ended = True
                    break
                output += chunk
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                ended = True
                break
    finally:
        if not ended:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    return output.decode("utf-8", "replace"), ended


def test_an_encrypted_client_key_is_a_config_error_without_a_prompt(
    pki: Pki, tmp_path: Path
) -> None:
    key = _encrypted_copy(pki, tmp_path)
    output, ended = _run_on_a_terminal(
        [sys.executable, "-c", _LOAD, str(pki.client_cert), str(key)], deadline=20.0
    )
    assert "pass phrase" not in output.lower(), output
    assert ended, f"still waiting after 20 s: {output!r}"
    assert "ConfigError: destinations.lyon: the client key is encrypted" in output, output


def test_an_unencrypted_client_key_still_loads(pki: Pki, tmp_path: Path) -> None:
    output, ended = _run_on_a_terminal(
        [sys.executable, "-c", _LOAD, str(pki.client_cert), str(pki.client_key)], deadline=20.0
    )
    assert ended and "loaded" in output, output
