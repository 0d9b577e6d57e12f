"""Session 21 review of ingestion (listeners/ingest.py, conversion.py, amqp/intake.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from listeners.amqp.envelope import AmqpEnvelope
from listeners.amqp.intake import envelope_of
from listeners.config import load_config
from listeners.cpu_limits import cgroup_cpu_limit, cpu_quota, usable_cpus
from listeners.ingest import SupportChecker
from listeners.queue.base import PutResult
from listeners.queue.sqlite import SqliteQueue
from tests.listeners.service.support import adt, limit_queue_pages, make_config, running

WRITE_FAILURES = "passerelle_queue_write_failures_total"


# -- 1. MLLP messages the queue refuses are counted ----------------------------------------
def test_a_received_message_the_full_disk_refuses_is_counted(tmp_path: Path) -> None:
    # Before, only the AMQP consumer counted a refused put: an MLLP feed stalled on a full
    # disk (every sender without ACK, resending) left the counter at 0, so the alert on
    # it never fired for the main intake.
    with running(make_config(tmp_path)) as service:
        assert service.send([adt("FITS-1")])[0].code == "AA"
        before = service.metrics().value(WRITE_FAILURES, operation="put")
        limit_queue_pages(service, 2)
        large = adt("FULL-1", family="X" * 200_000)
        for _ in range(2):  # the sender resends: each refusal counts
            with pytest.raises(Exception):  # noqa: B017 - no ACK, the connection closed
                service.send([large], timeout=5)
        assert service.metrics().value(WRITE_FAILURES, operation="put") == before + 2
        limit_queue_pages(service, None)
        assert service.send([large])[0].code == "AA"
        assert service.metrics().value(WRITE_FAILURES, operation="put") == before + 2


def test_an_unsupported_message_the_full_disk_refuses_as_dead_letter_is_counted(
    tmp_path: Path,
) -> None:
    # on_unsupported = "dead-letter": the message is stored as a dead letter; a refusal
    # of that write closes the connection without ACK just as a put's does.
    config = make_config(tmp_path, {"mllp": {"on_unsupported": "dead-letter"}})
    with running(config) as service:
        assert service.send([adt("FITS-1")])[0].code == "AA"
        before = service.metrics().value(WRITE_FAILURES, operation="put")
        limit_queue_pages(service, 2)
        unsupported = adt("ZZZ-1", msh9="ZZZ^Z99^ZZZ_Z99", family="X" * 200_000)
        with pytest.raises(Exception):  # noqa: B017 - no ACK, the connection closed
            service.send([unsupported], timeout=5)
        assert service.metrics().value(WRITE_FAILURES, operation="put") == before + 1


# -- 2. processes = 0: one conversion process per CPU the service may use ------------------
@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [
        ("max", "100000", None),  # v2: no limit
        ("-1", "100000", None),  # v1: no limit
        ("200000", "100000", 2),
        ("150000", "100000", 2),  # rounded up
        ("50000", "100000", 1),  # at least 1
        ("100000", "0", None),  # not a quota
        ("lots", "100000", None),
    ],
)
def test_cpu_quota(quota: str, period: str, cpus: int | None) -> None:
    assert cpu_quota(quota, period) == cpus


def test_the_cgroup_v2_limit_is_read_first(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    quota, period = tmp_path / "cpu.cfs_quota_us", tmp_path / "cpu.cfs_period_us"
    quota.write_text("400000\n")
    period.write_text("100000\n")
    cpu_max.write_text("200000 100000\n")
    assert cgroup_cpu_limit(cpu_max, quota, period) == 2
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max, quota, period) is None
    cpu_max.write_bytes(b"\xff\xfe 100000\n")  # unreadable: no limit known, no crash
    assert cgroup_cpu_limit(cpu_max, quota, period) is None
    cpu_max.unlink()  # cgroup v1 (a hybrid host): its quota and period files
    assert cgroup_cpu_limit(cpu_max, quota, period) == 4
    quota.write_text("-1\n")
    assert cgroup_cpu_limit(cpu_max, quota, period) is None
    quota.unlink()
    assert cgroup_cpu_limit(cpu_max, quota, period) is None


def test_usable_cpus_of_this_machine() -> None:
    # Whatever this machine's cgroup files hold (v2, v1 or none).
    cpus = usable_cpus(cgroup_cpu_limit())
    assert 1 <= cpus <= (os.cpu_count() or 1)
    assert usable_cpus(1) == 1
    assert usable_cpus(None) == len(os.sched_getaffinity(0))
    assert usable_cpus(10_000) == len(os.sched_getaffinity(0))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin to 1")
def test_a_pool_of_one_per_cpu_follows_the_affinity_and_the_quota(tmp_path: Path) -> None:
    # Before, processes = 0 meant os.cpu_count(): the host's CPUs, whatever the service
    # was pinned to (taskset, a cpuset) or limited to (a container's CPU quota). Run in a
    # process pinned to one CPU, with a cgroup file of 1 CPU written here.
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from listeners import conversion, cpu_limits\n"
        "pinned = len(os.sched_getaffinity(0))\n"
        f"cpu_limits.CGROUP_V2_CPU_MAX = Path({str(cpu_max)!r})\n"
        "limited = conversion.ConversionPool({}, use_threads=True)\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "cpu_limits.CGROUP_V2_CPU_MAX = Path('/nonexistent/cpu.max')\n"
        "cpu_limits.CGROUP_V1_CFS_QUOTA = Path('/nonexistent/quota')\n"
        "one = conversion.ConversionPool({}, use_threads=True)\n"
        "explicit = conversion.ConversionPool({}, processes=3, use_threads=True)\n"
        "print(limited.processes, one.processes, explicit.processes)\n"
        "for pool in (limited, one, explicit): pool.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "3"]


# -- 3. AMQP: a control id that reads blank once unescaped is no control id -----------------
def _consumed(control_id: str, pid: str, message_id: str | None = None) -> Any:
    body = (
        f"MSH|^~\\&|APP|FAC|RCV|RCVFAC|20240101120000||ADT^A08^ADT_A01|{control_id}|P|2.5\r"
        f"EVN|A08|20240101120000\r{pid}\rPV1|1|I\r"
    ).encode()
    return SimpleNamespace(
        body=body, content_type=None, headers={}, message_id=message_id, correlation_id=None
    )


def _envelope(consumed: Any) -> AmqpEnvelope:
    config = load_config(None, env={})
    support = SupportChecker({"default": config.default_route()})
    return envelope_of(consumed, listener="amqp", config=config, support=support)


BLANK_IDS = ["\\H\\", "\\X20\\", "\\X0920\\", "\\.br\\", " ", '""']


@pytest.mark.parametrize("control_id", BLANK_IDS)
def test_a_control_id_blank_once_unescaped_is_no_control_id(control_id: str) -> None:
    # The MLLP listener refuses these (AR 101); the AMQP intake took " ", "\t " or '""'
    # as the id the message is filed under.
    envelope = _envelope(_consumed(control_id, "PID|1||123^^^CHU^MR||MARTIN^JEAN"))
    assert envelope.control_id is None
    # Naming no patient: ordered by the AMQP message id, else a digest of the body.
    anonymous = _envelope(_consumed(control_id, "PID|1||||MARTIN^JEAN", message_id="m-1"))
    assert anonymous.ordering_key == "amqp/APP^FAC|message:m-1"
    first = _envelope(_consumed(control_id, "PID|1||||MARTIN^JEAN"))
    second = _envelope(_consumed(control_id, "PID|1||||DURAND^PAUL"))
    assert first.ordering_key != second.ordering_key  # not one lane, one behind the other
    assert "MARTIN" not in first.ordering_key


@pytest.mark.parametrize(("control_id", "kept"), [("\\E\\", "\\"), ("MSG-1", "MSG-1")])
def test_a_control_id_with_a_value_is_kept(control_id: str, kept: str) -> None:
    assert _envelope(_consumed(control_id, "PID|1||123^^^CHU^MR")).control_id == kept


def test_two_messages_with_a_blank_control_id_are_not_one_id_reused(tmp_path: Path) -> None:
    # Before, two different messages filed under " " by one sender were a "control id
    # reused" (a WARNING telling the operator the sender's counter was reset), and a
    # message under " " a duplicate of any earlier one with the same content.
    first = _envelope(_consumed("\\X20\\", "PID|1||123^^^CHU^MR||MARTIN^JEAN"))
    second = _envelope(_consumed("\\X20\\", "PID|1||123^^^CHU^MR||MARTIN^JEANNE"))

    async def scenario() -> list[PutResult]:
        async with SqliteQueue(tmp_path / "queue.db") as queue:
            return [await queue.put(first), await queue.put(second)]

    stored = asyncio.run(scenario())
    assert [result.duplicate or result.control_id_reused for result in stored] == [False] * 2
    assert stored[0].seq != stored[1].seq
