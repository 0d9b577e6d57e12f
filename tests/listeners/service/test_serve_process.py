"""``passerelle serve --config FILE`` as a real process: start, serve, SIGTERM, restart."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from listeners.mllp import MllpClient, parse_ack
from tests.listeners.service.support import (
    SAMPLES,
    ServeProcess,
    adt,
    bundle_posts,
    passerelle,
    patients,
    run,
    wait_until,
    write_config,
)
from tests.support.fhirserver import FhirServer

ACKED_SAMPLES = [
    SAMPLES / name
    for name in (
        "ADT_A01_admission-full.hl7",
        "ADT_A08_update-patient.hl7",
        "ORU_R01_lab-results.hl7",
        "MDM_T02_discharge-summary.hl7",
    )
]


def test_serve_receives_converts_delivers_and_stops_on_sigterm(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = write_config(tmp_path, {"destinations.default": {"url": fhir.base_url}})
    with ServeProcess(config) as serve:
        assert set(serve.mllp_ports) == {"mllp"} and serve.mllp_ports["mllp"] > 0
        base = f"http://127.0.0.1:{serve.http_port}"
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        assert httpx.get(f"{base}/ready", timeout=30).status_code == 200

        sent = passerelle("send", *map(str, ACKED_SAMPLES), "--port", str(serve.mllp_ports["mllp"]))
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.count(": CA in ") == len(ACKED_SAMPLES)
        wait_until(lambda: len(bundle_posts(fhir)) == len(ACKED_SAMPLES), what="deliveries")
        assert fhir.search_by_identifier("Patient", "urn:oid:1.2.250.1.999.1.1", "0012345678")

        assert serve.terminate() == 0
    messages = [e.get("message") for e in serve.entries()]
    assert "stopping" in messages and "stopped" in messages
    assert messages.count("delivered") == len(ACKED_SAMPLES)


def test_sigterm_while_messages_flow_loses_nothing_acknowledged(
    tmp_path: Path, fhir: FhirServer
) -> None:
    # A slow server: when SIGTERM comes, messages are stored but not yet delivered.
    fhir.delay(150, count=1000)
    config = write_config(
        tmp_path,
        {"destinations.default": {"url": fhir.base_url}, "delivery": {"workers": 2}},
    )
    acknowledged: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def sender(port: int, name: str) -> None:
        async def flow() -> None:
            async with MllpClient("127.0.0.1", port, timeout=10) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    control_id = f"{name}-{n}"
                    ack = parse_ack(await client.send(adt(control_id, mrn=f"MRN-{control_id}")))
                    if ack.code == "AA" and ack.acknowledged_id == control_id:
                        with lock:
                            acknowledged.append(control_id)

        # The shutdown closes the connection under the sender: expected.
        with contextlib.suppress(Exception):
            run(flow(), timeout=60)

    serve = ServeProcess(config).start()
    try:
        port = serve.mllp_ports["mllp"]
        threads = [threading.Thread(target=sender, args=(port, f"S{i}")) for i in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 30, timeout=30, what="traffic")
        assert serve.terminate(timeout=60) == 0
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
        serve.kill()
    log = [e.get("message") for e in serve.entries()]
    assert "stopped" in log
    pending = [cid for cid in acknowledged if not patients(fhir, f"MRN-{cid}")]
    assert pending, "the slow server should have left acknowledged messages in the queue"

    # Restart on the same queue: everything acknowledged is delivered.
    fhir.control(clearFaults=True)
    with ServeProcess(config) as again:
        wait_until(
            lambda: all(patients(fhir, f"MRN-{cid}") for cid in acknowledged),
            timeout=60,
            interval=0.3,
            what="every acknowledged message delivered after the restart",
        )
        assert again.terminate() == 0
    delivered_ids = {p["identifier"][0]["value"] for p in _all_patients(fhir)}
    assert {f"MRN-{cid}" for cid in acknowledged} <= delivered_ids


def _all_patients(fhir: FhirServer) -> list[dict[str, Any]]:
    bundle = fhir.search("Patient", _count="1000")
    return [entry["resource"] for entry in bundle.get("entry", [])]


def test_serve_exits_2_on_a_bad_configuration(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[mllp]\nprot = 2575\n")
    result = passerelle("serve", "--config", str(config))
    assert result.returncode == 2
    assert "prot" in result.stderr
    assert "Traceback" not in result.stderr
    started = time.monotonic()
    missing = passerelle("serve", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert time.monotonic() - started < 30


def test_serve_exits_1_when_a_port_is_taken(tmp_path: Path) -> None:
    """Busy HTTP or MLLP port: a one-line error and exit status 1, the queue released."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for table in ("http", "mllp"):
            config = write_config(tmp_path / table, {table: {"port": port}})
            result = passerelle("serve", "--config", str(config))
            assert result.returncode == 1, (table, result.stderr)
            assert "passerelle: cannot start:" in result.stderr
            assert "Traceback" not in result.stderr
        # Nothing left behind (queue lock, processes): it starts on that data directory.
        with ServeProcess(write_config(tmp_path / "http", {})) as serve:
            assert serve.terminate() == 0
