"""Session 22: ``passerelle send`` and ``passerelle templates list`` as an interface
engineer uses them. Real processes (the installed ``passerelle`` script), a real MLLP peer
on a socket, real override folders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"
SAMPLES = REPO / "samples" / "hl7v2"
PASSERELLE = Path(sys.executable).parent / "passerelle"
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
START, END = b"\x0b", b"\x1c\r"


def _message(control_id: str) -> bytes:
    return (
        f"MSH|^~\\&|APP|FAC|PASSERELLE|GHT|20240314083512||ADT^A01^ADT_A01|{control_id}|P|2.5\r"
        "PID|1||123^^^CHU^MR||DUPONT^Marie\r"
    ).encode()


class _Peer:
    """An MLLP server on a thread: AA, or AE with an ERR-8 naming the patient, for the
    control ids in ``refuse``; nothing at all for those in ``silent``."""

    def __init__(self, refuse: frozenset[str] = frozenset(), silent: frozenset[str] = frozenset()):
        self.refuse, self.silent = refuse, silent
        self.received: list[str] = []
        self.got_silent = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while data := conn.recv(65536):
                buffer += data
                while END in buffer:
                    block, buffer = buffer.split(END, 1)
                    control_id = block.lstrip(START).split(b"\r")[0].split(b"|")[9].decode()
                    self.received.append(control_id)
                    if control_id in self.silent:
                        self.got_silent.set()
                        continue
                    code = "AE" if control_id in self.refuse else "AA"
                    ack = (
                        f"MSH|^~\\&|PASSERELLE|GHT|APP|FAC|20240314||ACK|A{control_id}|P|2.5\r"
                        f"MSA|{code}|{control_id}\r"
                    )
                    if code == "AE":
                        ack += "ERR|||207|E||||patient DUPONT Marie unknown\r"
                    conn.sendall(START + ack.encode() + END)


@contextmanager
def _peer(**kwargs: frozenset[str]) -> Iterator[_Peer]:
    peer = _Peer(**kwargs)
    thread = threading.Thread(target=peer.serve, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        peer.sock.close()


def _write(path: Path, *control_ids: str) -> Path:
    path.write_bytes(b"".join(_message(c) for c in control_ids))
    return path


# -- passerelle send ------------------------------------------------------------------------
def test_send_quiet_names_each_message_not_accepted_without_the_ack_text(
    tmp_path: Path,
) -> None:
    # --quiet printed only "AA 2, AE 1; 1 not accepted": which of the file's messages to
    # look at or send again was lost. The ACK's ERR-8 (patient data) stays out of it.
    path = _write(tmp_path / "feed.hl7", "M1", "M2", "M3")
    with _peer(refuse=frozenset({"M2"})) as peer:
        result = subprocess.run(
            [PASSERELLE, "send", str(path), "--port", str(peer.port), "--quiet"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert f"{path}[2] MSH-10 M2: AE" in lines
    assert not any("M1" in line or "M3" in line for line in lines[:-1])
    assert "DUPONT" not in result.stderr
    assert lines[-1] == f"3 message(s) sent to 127.0.0.1:{peer.port}: AA 2, AE 1; 1 not accepted"


def test_send_interrupted_says_how_far_it_went(tmp_path: Path) -> None:
    # Ctrl-C while a message waited for its ACK: exit 130 and not a word, so the whole
    # file was sent again and the messages already stored arrived twice.
    path = _write(tmp_path / "feed.hl7", "M1", "M2", "M3", "M4")
    with _peer(silent=frozenset({"M3"})) as peer:
        process = subprocess.Popen(
            [PASSERELLE, "send", str(path), "--port", str(peer.port), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        try:
            assert peer.got_silent.wait(60), "M3 never reached the server"
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert peer.received == ["M1", "M2", "M3"]
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[0] == "interrupted after 2 of 4 messages"
    assert lines[1] == f"{path}[3] MSH-10 M3: sent, no ACK yet (it may be stored)"
    assert lines[2] == f"3 of 4 message(s) sent to 127.0.0.1:{peer.port}: AA 2; 0 not accepted"
    assert out == ""


def test_send_to_a_server_that_is_down_says_nothing_was_sent(tmp_path: Path) -> None:
    # Messages asking for no ACK (MSH-15 NE, as the batch sample's) to a port nobody
    # listens on: a ConnectionRefusedError traceback. The others said "3 message(s)
    # sent" when none was.
    never = tmp_path / "never.hl7"
    never.write_bytes(
        b"".join(_message(c).replace(b"|P|2.5\r", b"|P|2.5|||NE|NE\r") for c in ("N1", "N2"))
    )
    acked = _write(tmp_path / "acked.hl7", "A1")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    result = subprocess.run(
        [PASSERELLE, "send", str(never), str(acked), "--port", str(port), "--timeout", "5"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [
        f"{never}[1]",
        f"{never}[2]",
        str(acked),
    ]
    assert all(": no ACK: not sent (ConnectionRefusedError" in line for line in lines[:-1])
    assert lines[-1] == f"0 of 3 message(s) sent to 127.0.0.1:{port}: not sent 3; 3 not accepted"


# -- passerelle templates list --------------------------------------------------------------
def _listing(*overrides: Path) -> list[str]:
    options = [str(part) for folder in overrides for part in ("--templates", folder)]
    result = subprocess.run(
        [PASSERELLE, "templates", "list", *options],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _line(lines: list[str], *words: str) -> str:
    return next(line for line in lines if line.split()[: len(words)] == list(words))


def _override(site: Path, name: str) -> None:
    target = site / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((MAPPINGS / name).read_bytes())


def test_templates_list_shows_what_an_override_changes(tmp_path: Path) -> None:
    # An overridden root template, resource template or datatype macro file: the routes
    # they serve said "(built-in)", the templates importing the macros "built-in", as if
    # the override were never used.
    root, resource, macros = tmp_path / "root", tmp_path / "resource", tmp_path / "macros"
    _override(root, "hl7v2/messages/ADT.j2")
    _override(resource, "hl7v2/resources/Patient.j2")
    _override(macros, "hl7v2/datatypes/names.j2")

    lines = _listing(root)
    assert _line(lines, "event", "ADT^A01").endswith(
        "(built-in route, uses override hl7v2/messages/ADT.j2)"
    )
    assert _line(lines, "event", "ORU^R01").endswith("(built-in)")

    lines = _listing(resource)
    assert "uses override hl7v2/resources/Patient.j2" in _line(lines, "event", "ADT^A01")
    assert "uses override hl7v2/resources/Patient.j2" in _line(lines, "event", "ORU^R01")
    assert _line(lines, "event", "MFN^M02").endswith("(built-in)")  # no Patient in it
    assert _line(lines, "hl7v2/resources/Encounter.j2").endswith("built-in")

    lines = _listing(macros)
    assert "uses override hl7v2/datatypes/names.j2" in _line(lines, "event", "ADT^A01")
    assert _line(lines, "hl7v2/resources/Patient.j2").endswith(
        "built-in, uses override hl7v2/datatypes/names.j2"
    )
    assert _line(lines, "hl7v2/datatypes/names.j2").endswith(
        f"override: {macros / 'hl7v2/datatypes/names.j2'}"
    )
    # The CDA templates import their own macros: untouched.
    assert _line(lines, "cda/resources/Patient.j2").endswith("built-in")


@pytest.mark.parametrize("command", ["convert", "templates"])
def test_a_route_to_a_template_that_does_not_exist_is_a_configuration_error(
    command: str, tmp_path: Path
) -> None:
    # A typo in an override routes.toml ("ADTT"): every ADT^A01 then failed "template ...
    # not found", one by one (in the service, each a dead letter). Said when the converter
    # is built, naming the routes file, as a template's syntax error is.
    (tmp_path / "hl7v2").mkdir()
    routes = tmp_path / "hl7v2" / "routes.toml"
    routes.write_text('[events]\n"ADT^A01" = "ADTT"\n')
    words = (
        ["convert", str(SAMPLES / "ADT_A01_admission-full.hl7")]
        if command == "convert"
        else ["templates", "list"]
    )
    result = subprocess.run(
        [PASSERELLE, *words, "--templates", str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{routes}: route 'ADT^A01' names template 'ADTT'" in result.stderr
    assert "hl7v2/messages/ADTT.j2" in result.stderr
    assert "Traceback" not in result.stderr


# -- --templates one level too deep -----------------------------------------------------------
@pytest.mark.parametrize("command", ["convert", "templates"])
def test_an_override_folder_given_one_level_too_deep_is_a_usage_error(
    command: str, tmp_path: Path
) -> None:
    # --templates my-maps/hl7v2: "resources/Patient.j2" is no name the converter loads;
    # the run exited 0 with the built-in Patient, and the listing marked it an override.
    site = tmp_path / "my-maps"
    (site / "hl7v2" / "resources").mkdir(parents=True)
    (site / "hl7v2" / "resources" / "Patient.j2").write_text(
        '{"resourceType": "Patient", "active": true}'
    )
    words = (
        ["convert", str(SAMPLES / "ADT_A01_admission-full.hl7")]
        if command == "convert"
        else ["templates", "list"]
    )
    result = subprocess.run(
        [PASSERELLE, *words, "--templates", str(site / "hl7v2")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"passerelle: template directory {site / 'hl7v2'} holds no hl7v2/, cda/ or "
        "codemaps/ folder: resources/Patient.j2 and the rest would be ignored (give the "
        "folder above hl7v2/, as my-maps for my-maps/hl7v2/resources/Patient.j2)\n"
    )
    # The right level, and an empty folder (nothing in it is ignored), still run.
    for folder in (site, tmp_path / "empty"):
        folder.mkdir(exist_ok=True)
        ok = subprocess.run(
            [PASSERELLE, *words, "--templates", str(folder)],
            capture_output=True,
            env=ENV,
            timeout=120,
        )
        assert ok.returncode == 0, ok.stderr
