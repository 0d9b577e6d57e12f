"""``kill -9`` of the running service: nothing acknowledged is lost, nothing is duplicated.

Each test runs ``passerelle serve`` as a subprocess against the real test FHIR server, sends
ADT messages over concurrent MLLP connections that resend whatever got no AA (like an
interface engine), crashes the service mid-stream, restarts it on the same queue file, lets
the queue drain and then checks (see :func:`harness.verify`):

* every message was acknowledged, and the queue file holds exactly one row per control id,
  delivered — none dead-lettered, none left pending;
* for every resource type, the FHIR server holds exactly the ids the acknowledged messages
  convert to (computed by converting them here): a missing id names the lost message, an
  extra id is a duplicate; each patient holds its last update (per-patient order kept);
* redeliveries (at-least-once after a crash) stay within what the crash can explain.

The FHIR server keeps its data in memory, so "the server is down" is played by a TCP proxy in
front of it that resets connections and refuses new ones (:class:`harness.TcpProxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.listeners.crash.conftest import CONNECTIONS
from tests.listeners.crash.harness import (
    EarlyAckError,
    Fleet,
    Outgoing,
    Report,
    ServiceProcess,
    TcpProxy,
    expected_entries,
    in_original_mode,
    until,
    verify,
)
from tests.support.fhirserver import FhirServer

pytestmark = pytest.mark.crash


@pytest.fixture
def proxy(fhir: FhirServer) -> Iterator[TcpProxy]:
    tcp = TcpProxy(fhir.port)
    yield tcp
    tcp.close()


@contextlib.contextmanager
def _service(tmp_path: Path, url: str, **options: Any) -> Iterator[ServiceProcess]:
    """The service subprocess; whatever is left of it is killed at the end."""
    service = ServiceProcess(tmp_path / "service", fhir_url=url, **options)
    try:
        yield service
    finally:
        service.cleanup()


def _finish(
    service: ServiceProcess,
    report: Report,
    *,
    fhir: FhirServer,
    corpus: list[Outgoing],
    fleet: Fleet,
    expected: dict[str, tuple[str, ...]],
    max_redeliveries: int,
    drain_timeout: float = 300.0,
) -> None:
    """Wait for the queue to drain, note the service's counters, stop it gracefully, then
    check every acknowledged message against the FHIR server (:func:`verify`)."""
    service.wait_drained(timeout=drain_timeout)
    metrics = service.metrics()
    report.figures["retransmissions acknowledged again (last run)"] = int(
        metrics.get("passerelle_messages_duplicate_total", 0)
    )
    report.figures["dead-lettered (last run)"] = int(
        metrics.get("passerelle_messages_dead_lettered_total", 0)
    )
    status = service.stop()
    assert status == 0, f"graceful stop ended with status {status}\n{service.log_tail()}"
    verify(
        server=fhir,
        queue_path=service.queue_path,
        corpus=corpus,
        fleet=fleet,
        expected=expected,
        report=report,
        max_redeliveries=max_redeliveries,
    )


def _conclude(report: Report, service: ServiceProcess, name: str, started: float) -> None:
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n[{name}]\n{report}")
    assert not report.problems, (
        f"{name}: {len(report.problems)} problem(s)\n{report}\n{service.log_tail()}"
    )


def _latency_ms(fleet: Fleet, start: float, end: float) -> str:
    values = sorted(s for sent, s in fleet.latencies if start <= sent <= end)
    if not values:
        return "no ACK"
    p50 = values[len(values) // 2] * 1000
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
    return f"{len(values)} ACKs, p50 {p50:.1f} ms, p99 {p99:.1f} ms"


def test_kill_9_mid_stream(
    fhir: FhirServer,
    corpus: list[Outgoing],
    expected: dict[str, tuple[str, ...]],
    tmp_path: Path,
) -> None:
    """(a) kill -9 of the whole service after ~40% acknowledged, restart on the same queue."""
    started = time.monotonic()
    report = Report()
    with _service(tmp_path, fhir.base_url) as service:
        service.start()
        fleet = Fleet(service.mllp_port, corpus, CONNECTIONS)

        async def scenario() -> None:
            senders = asyncio.create_task(fleet.run())
            await until(
                lambda: len(fleet.acked) >= 0.4 * len(corpus), timeout=180, what="40% acknowledged"
            )
            report.figures["acknowledged at the kill"] = len(fleet.acked)
            report.figures["processes killed"] = len(service.kill())
            await asyncio.sleep(0.2)
            await asyncio.to_thread(service.start)
            await asyncio.wait_for(senders, 300)

        asyncio.run(scenario())
        report.figures["sends (with resends)"] = fleet.sends
        report.figures["exchanges without ACK"] = dict(fleet.no_ack)
        _finish(
            service,
            report,
            fhir=fhir,
            corpus=corpus,
            fleet=fleet,
            expected=expected,
            max_redeliveries=4 * service.kills,
        )
        _conclude(report, service, "kill -9 mid-stream", started)


def test_fhir_server_down_and_kill_9_while_down(
    fhir: FhirServer,
    proxy: TcpProxy,
    corpus: list[Outgoing],
    expected: dict[str, tuple[str, ...]],
    tmp_path: Path,
) -> None:
    """(b) the FHIR server becomes unreachable once ~30% is delivered; the second half of
    the messages is sent only then, and ACKs must keep flowing (ack_after="commit"); kill -9
    once 20% more are acknowledged, restart the service while the server is still down,
    acknowledge the rest, then bring the server back."""
    started = time.monotonic()
    report = Report()
    url = f"http://127.0.0.1:{proxy.port}/fhir/R4"
    total = len(corpus)
    with _service(tmp_path, url, destination_timeout=5.0) as service:
        service.start()
        fleet = Fleet(service.mllp_port, corpus, CONNECTIONS, gate_from=total // 2)

        def delivered() -> float:
            return service.metrics().get("passerelle_bundles_delivered_total", 0.0)

        async def scenario() -> None:
            fleet.gate = asyncio.Event()
            senders = asyncio.create_task(fleet.run())
            deadline = time.monotonic() + 180
            while await asyncio.to_thread(delivered) < 0.3 * total:
                assert time.monotonic() < deadline, "30% never delivered"
                await asyncio.sleep(0.1)
            proxy.down()
            fleet.gate.set()
            down_at, acked_at_down = time.time(), len(fleet.acked)
            report.figures["acknowledged when the server went down"] = acked_at_down
            await until(
                lambda: len(fleet.acked) >= acked_at_down + 0.2 * total,
                timeout=60,
                what="ACKs while the FHIR server is down",
            )
            report.figures["ACKs while down, before the kill"] = _latency_ms(
                fleet, down_at, time.time()
            )
            report.figures["processes killed"] = len(service.kill())
            await asyncio.to_thread(service.start)
            restarted_at = time.time()
            await until(
                lambda: len(fleet.acked) == total,
                timeout=60,
                what="ACKs after the restart, server still down",
            )
            report.figures["ACKs after the restart, server down"] = _latency_ms(
                fleet, restarted_at, time.time()
            )
            report.figures["queue depth when the server comes back"] = int(
                (await asyncio.to_thread(service.metrics)).get("passerelle_queue_depth", -1)
            )
            proxy.up()
            await asyncio.wait_for(senders, 60)

        asyncio.run(scenario())
        report.figures["sends (with resends)"] = fleet.sends
        report.figures["exchanges without ACK"] = dict(fleet.no_ack)
        # Connections reset by the outage can leave a few bundles applied but unanswered.
        _finish(
            service,
            report,
            fhir=fhir,
            corpus=corpus,
            fleet=fleet,
            expected=expected,
            max_redeliveries=4 * (service.kills + 1),
        )
        _conclude(report, service, "FHIR server down, kill -9 while down", started)


def _first_written(
    client: httpx.Client, server: FhirServer, resource_type: str, resource_id: str
) -> float | None:
    """When the server first stored the resource (its earliest version's lastUpdated)."""
    response = client.get(f"{server.base_url}/{resource_type}/{resource_id}/_history")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    history = response.json()
    stamps = [
        datetime.fromisoformat(e["resource"]["meta"]["lastUpdated"].replace("Z", "+00:00"))
        for e in history.get("entry", [])
        if "resource" in e
    ]
    return min(stamps).timestamp() if stamps else None


def test_ack_after_delivery_kill_9(
    fhir: FhirServer,
    proxy: TcpProxy,
    corpus: list[Outgoing],
    tmp_path: Path,
) -> None:
    """(c) ack_after="delivery": an AA means the FHIR server has the message. kill -9 after
    ~40% acknowledged, restart while the server is unreachable (senders resend; a delivery
    not confirmed within delivery_ack_timeout gets AE 207 and is resent), then bring the
    server back. Besides the common checks, every AA must have been sent after the server
    first stored that message's MessageHeader (its first version's lastUpdated). In
    original mode: an enhanced-mode ACK is about the commit, sent once stored."""
    started = time.monotonic()
    report = Report()
    messages = [in_original_mode(message) for message in corpus[:600]]
    # Their MessageHeader ids differ from the corpus's (MSH-15/16 are part of the message).
    expected = expected_entries(messages)
    url = f"http://127.0.0.1:{proxy.port}/fhir/R4"
    with _service(
        tmp_path, url, ack_after="delivery", delivery_ack_timeout=1.5, destination_timeout=5.0
    ) as service:
        service.start()
        fleet = Fleet(service.mllp_port, messages, 16, resend_on_error=True)

        async def scenario() -> None:
            senders = asyncio.create_task(fleet.run())
            await until(
                lambda: len(fleet.acked) >= 0.4 * len(messages),
                timeout=120,
                what="40% acknowledged",
            )
            report.figures["acknowledged at the kill"] = len(fleet.acked)
            service.kill()
            proxy.down()
            await asyncio.to_thread(service.start)
            acked_before = len(fleet.acked)
            await asyncio.sleep(3.0)
            report.figures["AAs while the server was unreachable"] = len(fleet.acked) - acked_before
            proxy.up()
            await asyncio.wait_for(senders, 300)

        asyncio.run(scenario())
        report.figures["sends (with resends)"] = fleet.sends
        report.figures["AE answers (resent)"] = len(fleet.rejected)
        fleet.rejected.clear()  # AE 207 "not confirmed in time" is expected while down
        _finish(
            service,
            report,
            fhir=fhir,
            corpus=messages,
            fleet=fleet,
            expected=expected,
            max_redeliveries=4 * (service.kills + 1),
        )
        _conclude(report, service, "ack_after=delivery, kill -9", started)
        early = []
        admin = {"Authorization": f"Bearer {fhir.ready['adminToken']}"}
        with httpx.Client(headers=admin, timeout=30) as client:
            for cid, acked_at in fleet.acked.items():
                header = next(u for u in expected[cid] if u.startswith("MessageHeader/"))
                written = _first_written(client, fhir, "MessageHeader", header.partition("/")[2])
                # lastUpdated has a millisecond precision.
                if written is None or written > acked_at + 0.002:
                    early.append((cid, None if written is None else round(written - acked_at, 3)))
        if early:
            print(f"  AA before the server had the message: {len(early)}")
            raise EarlyAckError(
                f"{len(early)} AA(s) sent before the FHIR server had the message "
                f"(control id, seconds early): {sorted(early)[:10]}"
            )


def test_conversion_process_killed(
    fhir: FhirServer,
    corpus: list[Outgoing],
    expected: dict[str, tuple[str, ...]],
    tmp_path: Path,
) -> None:
    """kill -9 of a conversion process (OOM killer, segfault in a C extension): the service
    replaces the pool and delivers everything, without a restart."""
    started = time.monotonic()
    report = Report()
    messages = corpus[:400]
    with _service(tmp_path, fhir.base_url) as service:
        service.start()
        fleet = Fleet(service.mllp_port, messages, CONNECTIONS)

        async def scenario() -> None:
            senders = asyncio.create_task(fleet.run())
            await until(
                lambda: len(fleet.acked) >= 0.3 * len(messages),
                timeout=120,
                what="30% acknowledged",
            )
            children = service.conversion_processes()
            assert children, "no conversion process found"
            os.kill(children[-1], signal.SIGKILL)
            await asyncio.wait_for(senders, 300)

        asyncio.run(scenario())
        _finish(
            service,
            report,
            fhir=fhir,
            corpus=messages,
            fleet=fleet,
            expected=expected,
            max_redeliveries=0,
            drain_timeout=120,
        )
        _conclude(report, service, "conversion process killed", started)


def test_main_process_killed_alone(
    fhir: FhirServer,
    corpus: list[Outgoing],
    expected: dict[str, tuple[str, ...]],
    tmp_path: Path,
) -> None:
    """kill -9 of the main process only (what the OOM killer does): its conversion processes
    must not outlive it holding the queue file, so that the restart succeeds."""
    started = time.monotonic()
    report = Report()
    messages = corpus[:400]
    with _service(tmp_path, fhir.base_url) as service:
        service.start()
        fleet = Fleet(service.mllp_port, messages, CONNECTIONS)

        async def scenario() -> None:
            senders = asyncio.create_task(fleet.run())
            await until(
                lambda: len(fleet.acked) >= 0.4 * len(messages),
                timeout=120,
                what="40% acknowledged",
            )
            old = service.pid
            service.kill(whole_group=False)
            deadline = time.monotonic() + 10
            while service.leftovers() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            report.figures["processes left 10 s after the main one died"] = len(
                [p for p in service.leftovers() if p != old]
            )
            await asyncio.to_thread(service.start)
            await asyncio.wait_for(senders, 300)

        asyncio.run(scenario())
        _finish(
            service,
            report,
            fhir=fhir,
            corpus=messages,
            fleet=fleet,
            expected=expected,
            max_redeliveries=4,
            drain_timeout=120,
        )
        orphans = report.figures["processes left 10 s after the main one died"]
        if orphans:
            report.problems.append(f"{orphans} conversion process(es) outlived the service")
        _conclude(report, service, "main process killed alone", started)
