"""``passerelle worker`` whose conversion processes die while it starts: one line, exit 1.

The processes are killed by the same hook as the service's test
(:func:`tests.listeners.test_service_s23b.run_with_dying_processes`); the broker is the
session's real RabbitMQ node.
"""

from __future__ import annotations

from pathlib import Path

from tests.listeners.amqp.support import Names
from tests.listeners.amqp.support import write_config as write_amqp_config
from tests.listeners.test_service_s23b import run_with_dying_processes
from tests.support.rabbitmq import RabbitMq


def test_worker_whose_conversion_processes_keep_dying_at_start_exits_1_with_one_line(
    tmp_path: Path, rabbitmq: RabbitMq
) -> None:
    """The worker caught OSError only: a pool broken at start was a traceback."""
    config = write_amqp_config(
        tmp_path,
        amqp_url=rabbitmq.url,
        names=Names("s23b-worker"),
        backend="amqp",
        fhir_url="http://127.0.0.1:9/fhir",
    )
    result = run_with_dying_processes("worker", config)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("passerelle: cannot start: a conversion process died"), last
