"""A destination url with a wrong base path is the destination's problem, not the messages'.

``fhir_server.url = http://host:port/fhir`` when the server's base is ``/fhir/R4``: the real
test FHIR server answers the transaction POST 404 (an OperationOutcome "Not found"). Before,
that was a rejection: every message of the feed went to the dead letters, at 3 a.m., for a
configuration mistake. Now the destination is paused and retried, ``/ready``, the log and the
metrics name the cause, and the queue drains by itself once the path answers.

The service sits in front of the real server through a small real HTTP proxy (an ingress
whose rule is wrong, then fixed): its path ``/fhir`` goes to the server's ``/fhir`` (a 404)
until ``fixed`` is set, then to ``/fhir/R4``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from listeners.config import DestinationConfig
from listeners.delivery import FhirServerSink
from listeners.errors import RejectedDeliveryError, TransientDeliveryError
from tests.listeners.delivery.helpers import make_envelope
from tests.listeners.delivery.proxies import RelayProxy, serving
from tests.listeners.service.support import adt, make_config, patients, running, wait_until
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records


class _Ingress(RelayProxy):
    def __init__(self, upstream_origin: str) -> None:
        super().__init__()
        self.upstream_origin = upstream_origin
        self.fixed = threading.Event()
        self.posts: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/fhir"

    def target(self, path: str) -> str:
        if self.fixed.is_set():
            path = "/fhir/R4" + path.removeprefix("/fhir")
        return self.upstream_origin + path

    def answered(self, command: str, status: int) -> None:
        if command == "POST":
            self.posts.append(status)


@pytest.fixture
def ingress(server: FhirServer) -> Iterator[_Ingress]:
    with serving(_Ingress(server.origin)) as proxy:
        yield proxy


def test_a_wrong_base_path_pauses_the_destination_instead_of_dead_lettering(
    tmp_path: Path, server: FhirServer, ingress: _Ingress
) -> None:
    settings = {"delivery": {"workers": 2, "backoff_initial": 0.1, "backoff_max": 0.5}}
    config = make_config(tmp_path, settings, fhir_url=ingress.url)
    messages = [adt(f"WB-{n}", mrn=f"MRN-WB-{n}", family=f"Wrongbase{n}") for n in range(3)]
    with log_records("passerelle") as records, running(config) as service:
        acks = service.send(messages)
        assert [ack.code for ack in acks] == ["AA"] * 3
        wait_until(lambda: len(ingress.posts) >= 3, timeout=20, what="three refused POSTs")
        assert set(ingress.posts) == {404}, ingress.posts
        assert service.service.queue.count_dead_letters() == 0
        ready = httpx.get(f"{service.http_url}/ready", timeout=30)
        assert ready.status_code == 503
        reason = ready.json()["checks"]["destination:default"]
        assert "no FHIR server at the destination url" in reason, reason
        assert "Wrongbase" not in reason and "MRN-WB" not in reason
        metrics = service.metrics()
        assert metrics.value("passerelle_destination_available", destination="default") == 0
        assert (
            metrics.value(
                "passerelle_deliveries_retried_total", destination="default", reason="404"
            )
            >= 1
        )
        # The ingress rule is fixed: the queue drains by itself, nothing dead-lettered.
        ingress.fixed.set()
        service.drained(timeout=30)
        assert service.service.queue.count_dead_letters() == 0
        assert all(patients(server, f"MRN-WB-{n}") for n in range(3))
    paused = [
        r.getMessage()
        for r in records
        if r.levelno == logging.WARNING and "unavailable" in r.getMessage()
    ]
    assert paused and "no FHIR server at the destination url" in paused[0], paused
    assert not any("Wrongbase" in r.getMessage() for r in records)


def _sink(url: str) -> FhirServerSink:
    return FhirServerSink(DestinationConfig(name="test", url=url, timeout=10.0))


def _deliver(sink: FhirServerSink, bundle: dict[str, Any]) -> None:
    async def scenario() -> None:
        async with sink:
            await sink.deliver(bundle, make_envelope())

    asyncio.run(scenario())


def test_a_404_from_a_server_whose_base_answers_stays_a_rejection(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    """The right base, and a 404 with an OperationOutcome about the bundle (the server's
    verdict): ``[base]/metadata`` answers a CapabilityStatement, so the rejection stands."""
    server.fail(404, count=1)
    with pytest.raises(RejectedDeliveryError) as caught:
        _deliver(_sink(server.base_url), adt_bundle)
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("status", "phrase"), [(503, "Service Unavailable"), (401, "Unauthorized")]
)
def test_a_404_whose_metadata_cannot_be_read_is_retried(
    server: FhirServer, adt_bundle: dict[str, Any], status: int, phrase: str
) -> None:
    """The POST is refused 404 and the metadata read gets a 503 (or a 401: kept behind
    credentials): nothing tells a wrong url from a rejection, so the message is kept
    (retried), not dead-lettered."""
    server.control(faults=[{"status": 404, "count": 1}, {"status": status, "count": 1}])
    with pytest.raises(TransientDeliveryError) as caught:
        _deliver(_sink(server.base_url), adt_bundle)
    assert caught.value.status == 404
    assert f"could not be read (HTTP {status} {phrase})" in str(caught.value)
    requests = [(r["method"], r["status"]) for r in server.requests()]
    assert requests == [("POST", 404), ("GET", status)]


def test_a_404_at_a_base_without_a_fhir_server_is_transient(
    server: FhirServer, adt_bundle: dict[str, Any]
) -> None:
    """A base one level too deep: the real server answers 404 (Unknown resource type: R4)
    to the POST and to ``[base]/metadata``."""
    with pytest.raises(TransientDeliveryError) as caught:
        _deliver(_sink(server.base_url + "/R4"), adt_bundle)
    assert caught.value.status == 404
    assert "no FHIR server at the destination url" in str(caught.value)
    assert not server.search("Patient").get("entry")


class _WebApplication(ThreadingHTTPServer):
    """A web application at the configured url: POST 405, GET an HTML page."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebPage)


class _WebPage(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _page(self, status: int) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>Intranet</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self._page(405)

    def do_GET(self) -> None:
        self._page(404)


def test_a_405_from_a_web_application_is_transient(adt_bundle: dict[str, Any]) -> None:
    web = _WebApplication()
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        sink = _sink(f"http://127.0.0.1:{web.server_address[1]}/intranet")
        with pytest.raises(TransientDeliveryError) as caught:
            _deliver(sink, adt_bundle)
    finally:
        web.shutdown()
        web.server_close()
    assert caught.value.status == 405
    assert "no FHIR server at the destination url" in str(caught.value)
