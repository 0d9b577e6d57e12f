"""``/health``, ``/ready`` and ``/metrics`` of a running service."""

from __future__ import annotations

from pathlib import Path

import httpx

from listeners.mllp import parse_ack
from tests.listeners.service.support import (
    MetricsSnapshot,
    RunningService,
    adt,
    make_config,
    patients,
    running,
    wait_until,
)
from tests.support.fhirserver import FhirServer


def ready(service: RunningService) -> httpx.Response:
    return httpx.get(f"{service.http_url}/ready", timeout=30)


def test_health_and_readiness_follow_the_fhir_server(tmp_path: Path, fhir: FhirServer) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    with running(config) as service:
        health = httpx.get(f"{service.http_url}/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        answer = ready(service)
        assert answer.status_code == 200, answer.text
        assert answer.json()["checks"] == {"queue": "ok", "destination:default": "ok"}

        fhir.stop()
        try:
            answer = ready(service)
            assert answer.status_code == 503
            body = answer.json()
            assert body["status"] == "not ready"
            assert body["checks"]["queue"] == "ok"
            assert "cannot reach" in body["checks"]["destination:default"]
            # The process itself is fine.
            assert httpx.get(f"{service.http_url}/health", timeout=10).status_code == 200
            # Messages are still accepted (stored) while the server is down ...
            assert service.send([adt("DOWN-1", mrn="MRN-DOWN")])[0].code == "AA"
        finally:
            fhir.restart()
        assert ready(service).status_code == 200
        # ... and delivered once it is back.
        wait_until(lambda: patients(fhir, "MRN-DOWN"), what="delivery after the outage")


def test_ready_with_a_folder_destination(tmp_path: Path) -> None:
    with running(make_config(tmp_path)) as service:
        answer = ready(service)
        assert answer.status_code == 200
        assert answer.json()["checks"] == {"queue": "ok", "destination:default": "ok"}


def test_metrics_move_with_the_traffic(tmp_path: Path, fhir: FhirServer) -> None:
    config = make_config(tmp_path, fhir_url=fhir.base_url)
    with running(config) as service:
        before = service.metrics()
        assert before.value("passerelle_messages_received_total") == 0
        for name in (
            "passerelle_queue_depth",
            "passerelle_messages_received_total",
        ):
            assert name in before.names() or name.endswith("_total")

        # Queue depth: the server holds the first delivery 2.5 s; three messages of one
        # patient wait behind it.
        fhir.delay(2500, count=1)
        held = [adt(f"HELD-{i}", mrn="MRN-HELD") for i in range(3)]
        assert [a.code for a in service.send(held)] == ["AA"] * 3
        wait_until(
            lambda: service.metrics().value("passerelle_queue_depth") >= 2,
            timeout=5,
            what="the queue depth gauge",
        )
        service.drained()

        fhir.fail(503, count=1, retry_after="0")
        traffic = [
            adt("MET-OK-1", mrn="MRN-MET-1"),  # 503 once, then delivered
            adt("MET-OK-2", mrn="MRN-MET-2"),
            adt("MET-OK-2", mrn="MRN-MET-2"),  # retransmission
            adt("MET-BAD-1", birth_date="19991399"),  # conversion error → dead letter
            adt("MET-UNSUP-1", msh9="ZZZ^Z01^ZZZ_Z01"),  # AR
        ]
        acks = service.send(traffic)
        assert [a.code for a in acks] == ["AA", "AA", "AA", "AA", "AR"]
        service.drained()
        # Both gauges are sampled once a second: the closed client connection may not be
        # counted out yet when the queue depth already reads 0.
        wait_until(
            lambda: (
                service.metrics().value("passerelle_queue_depth") == 0
                and service.metrics().value("passerelle_mllp_connections", listener="mllp") == 0
            ),
            timeout=5,
            what="the queue depth and connection gauges back to 0",
        )
        after = service.metrics()

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("passerelle_messages_received_total", listener="mllp") == 8
    assert delta("passerelle_messages_received_total", type="ZZZ^Z01") == 1
    assert delta("passerelle_messages_acknowledged_total", code="AA") == 7
    assert delta("passerelle_messages_acknowledged_total", code="AR") == 1
    assert delta("passerelle_messages_duplicate_total") == 1
    assert delta("passerelle_bundles_delivered_total", destination="default") == 5
    assert delta("passerelle_bundles_delivered_total", type="ADT^A01") == 5
    assert delta("passerelle_messages_converted_total", type="ADT^A01") >= 5
    assert delta("passerelle_deliveries_retried_total", reason="503") == 1
    assert delta("passerelle_messages_dead_lettered_total", reason="conversion") == 1
    # Latency histograms: one observation per ACK, conversion, delivery.
    assert delta("passerelle_ack_seconds_count", listener="mllp") == 8
    assert delta("passerelle_delivery_seconds_count", destination="default") == 5
    assert delta("passerelle_conversion_seconds_count") >= 5
    slow = after.value("passerelle_delivery_seconds_bucket", destination="default", le="1.0")
    assert slow <= 4, "the 2.5 s delivery must land above the 1 s bucket"
    # Open connections are gauged per listener (none left once the clients closed).
    assert "passerelle_mllp_connections" in after.names()
    assert after.value("passerelle_mllp_connections", listener="mllp") == 0


def test_connection_and_framing_error_metrics(tmp_path: Path) -> None:
    import socket

    with running(make_config(tmp_path, {"mllp": {"max_frame_bytes": 2048}})) as service:
        port = service.mllp_port()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            wait_until(
                lambda: (
                    service.metrics().value("passerelle_mllp_connections", listener="mllp") == 1
                ),
                timeout=5,
                what="the connections gauge",
            )
            # An oversized frame is refused with an AR naming its MSH-10, and the connection
            # goes on: closed without an ACK, it would be re-sent for ever.
            big = adt("BIG-1") + b"NTE|1||" + b"X" * 4096 + b"\r"
            sock.sendall(b"\x0b" + big + b"\x1c\r" + b"\x0b" + adt("AFTER-BIG-1") + b"\x1c\r")
            sock.settimeout(5)
            replies = b""
            while replies.count(b"\x1c\r") < 2:
                data = sock.recv(4096)
                assert data, "the connection was closed"
                replies += data
        first, second = (parse_ack(r.strip(b"\x0b")) for r in replies.split(b"\x1c\r")[:2])
        assert (first.code, first.acknowledged_id, first.error_codes) == ("AR", "BIG-1", ("207",))
        assert (second.code, second.acknowledged_id) == ("AA", "AFTER-BIG-1")
        wait_until(
            lambda: (
                service.metrics().value("passerelle_mllp_framing_errors_total", listener="mllp")
                == 1
            ),
            timeout=5,
            what="the framing errors counter",
        )
        metrics = service.metrics()
        assert metrics.value("passerelle_messages_received_total", type="oversized") == 1
        assert metrics.value("passerelle_messages_acknowledged_total", code="AR") == 1


def test_metrics_snapshot_parses_histograms() -> None:
    text = (
        "# TYPE x histogram\n"
        'x_bucket{le="1.0",d="a"} 2.0\nx_bucket{le="+Inf",d="a"} 3.0\n'
        'x_count{d="a"} 3.0\nx_sum{d="a"} 1.5\n'
    )
    snapshot = MetricsSnapshot.parse(text)
    assert snapshot.value("x_count", d="a") == 3
    assert snapshot.value("x_bucket", le="1.0") == 2
