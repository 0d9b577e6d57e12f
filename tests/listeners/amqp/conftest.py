"""Fixtures of the AMQP tests: one real RabbitMQ node per session, one FHIR server per
module, unique exchange/queue names per test (tests share the node, never its objects)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from listeners.config import load_config
from tests.listeners.amqp.support import ConfigFile, Configure, Names, write_config
from tests.support.fhirserver import FhirServer, require_fhirserver
from tests.support.rabbitmq import RabbitMq, rabbitmq_required, rabbitmq_unavailable_reason


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMq]:
    """A RabbitMQ node for the session (about 10 s to start)."""
    reason = rabbitmq_unavailable_reason()
    if reason is not None:
        if rabbitmq_required():
            pytest.fail(f"RabbitMQ required but unavailable: {reason}")
        pytest.skip(f"RabbitMQ unavailable: {reason}")
    with RabbitMq.start() as broker:
        yield broker


@pytest.fixture
def broker(rabbitmq: RabbitMq) -> RabbitMq:
    """The session's node, running (a test that stopped it left it stopped: boot it)."""
    if not rabbitmq.running:
        rabbitmq.restart()
    return rabbitmq


@pytest.fixture(scope="module")
def fhir_module() -> Iterator[FhirServer]:
    require_fhirserver()
    with FhirServer.start() as server:
        yield server


@pytest.fixture
def fhir(fhir_module: FhirServer) -> FhirServer:
    """The module's FHIR server, running and emptied (data, faults, request log)."""
    if not fhir_module.running:
        fhir_module.restart()
    fhir_module.reset()
    return fhir_module


@pytest.fixture
def names() -> Names:
    return Names.unique()


@pytest.fixture
def config_file(tmp_path: Path, broker: RabbitMq, fhir: FhirServer, names: Names) -> ConfigFile:
    """``write_config`` for this test's broker, FHIR server and names; the settings that
    differ from test to test are given as keywords. For tests that need the file."""
    return functools.partial(
        write_config, tmp_path, amqp_url=broker.url, names=names, fhir_url=fhir.base_url
    )


@pytest.fixture
def configure(config_file: ConfigFile) -> Configure:
    """:func:`config_file`, read back as ``passerelle serve`` reads it."""
    return lambda **settings: load_config(config_file(**settings), env={})


@pytest.fixture
def configure_worker(configure: Configure) -> Configure:
    """:func:`configure` for ``passerelle worker`` (``queue.backend = "amqp"``) with
    ``partitions`` partitions; the ``[delivery]`` settings as keywords."""
    return lambda partitions, **delivery: configure(
        backend="amqp", amqp={"partitions": partitions}, delivery=delivery
    )
