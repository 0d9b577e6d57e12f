"""``unmatched_senders``: a message no configured route matches.

With ``"reject"`` the real service refuses it over real MLLP sockets before storing it
(AR 103 at MSH-3, ERR-8 naming the sender's MSH-3/MSH-4): nothing in the queue file,
nothing delivered, while a known sender's message is delivered to its route's
destination. With ``"default"`` (and without the setting) it is delivered to the default
destination as before, with one WARNING per sender and the
``passerelle_messages_unmatched`` counter. The AMQP intake refuses the same messages
(real :func:`envelope_of`: real header peek, CDA parser, routes); the consumer
dead-letters them (against a real RabbitMQ node in
``tests/listeners/amqp/test_unmatched_senders_amqp_s26.py``). Configuration: the file,
the environment variable, errors, ``--print-config``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from converter import UnsupportedMessageError
from listeners.amqp.intake import envelope_of
from listeners.config import ConfigError, ServiceConfig, load_config
from listeners.ingest import SupportChecker
from listeners.ingest_support import UnmatchedSenderError, UnmatchedSenders
from listeners.metrics import Metrics
from tests.listeners.amqp.test_intake_ordering_keys import _Consumed
from tests.listeners.service.support import (
    PASSERELLE,
    adt,
    make_config,
    running,
    wait_until,
    write_config,
)

#: A laboratory's route, to its own destination: the one sender configured.
LAB_ROUTE = """
[destinations.lab]
folder = "lab-out"

[[routes]]
name = "lab"
sending_application = "LAB"
destination = "lab"
"""

CDA_SAMPLE = Path(__file__).parents[2] / "samples" / "cda" / "CCD_lefevre-camille.xml"


def _config(tmp_path: Path, policy: str | None, env: dict[str, str] | None = None) -> ServiceConfig:
    top = {} if policy is None else {"unmatched_senders": policy}
    return make_config(tmp_path, {"": top}, extra=LAB_ROUTE, env=env)


def _bundles(folder: Path) -> list[Path]:
    return sorted(folder.glob("**/*.json")) if folder.exists() else []


def _queue_rows(path: Path) -> str:
    """Every row of every table of the queue file, as text (to look for a message)."""
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"')
        )


def _unmatched_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "unmatched_sender"]


# -- MLLP, the real service ----------------------------------------------------------------------
def test_reject_refuses_an_unknown_sender_unstored_and_delivers_a_known_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="passerelle.ingest")
    config = _config(tmp_path, "reject")
    unknown = [
        adt("UNK-1", application="LAB-TYPO", mrn="MRN-SECRET-1", family="Secretname"),
        adt("UNK-2", application="LAB-TYPO", mrn="MRN-SECRET-2", family="Secretname"),
    ]
    with running(config) as service:
        acks = service.send([*unknown, adt("KNOWN-1", application="LAB", mrn="MRN-K1")])
        service.drained()
        wait_until(lambda: len(_bundles(tmp_path / "lab-out")) == 1, what="the lab's bundle")
        metrics = service.metrics()
    refused, known = acks[:2], acks[2]
    for ack, control_id in zip(refused, ("UNK-1", "UNK-2"), strict=True):
        assert (ack.code, ack.acknowledged_id, ack.error_codes) == ("AR", control_id, ("103",))
        assert "LAB-TYPO" in ack.texts[0] and "FAC-A" in ack.texts[0], ack.texts
        assert "unmatched_senders" in ack.texts[0]
        # ERR-2 points at MSH-3 (the routes match on the application); ERR-3 from table 0357.
        err = next(s for s in ack.segments if s.startswith("ERR|"))
        assert err.split("|")[2] == "MSH^1^3", err
        assert "103^Table value not found^HL70357" in err
        assert "SECRET" not in "".join(ack.segments).upper()
    assert known.code == "AA"
    # Nothing of the refused messages stored, nor delivered to the default destination.
    rows = _queue_rows(config.queue.path)
    assert "UNK-" not in rows and "KNOWN-1" in rows
    assert _bundles(tmp_path / "data" / "out") == []
    assert "MRN-K1" in _bundles(tmp_path / "lab-out")[0].read_text(encoding="utf-8")
    assert metrics.value("passerelle_messages_unmatched_total", listener="mllp") == 2
    assert metrics.value("passerelle_messages_unmatched_total", outcome="refused") == 2
    assert metrics.value("passerelle_messages_acknowledged_total", code="AR") == 2
    # One WARNING for the sender, the second refusal at DEBUG; no patient data.
    records = _unmatched_records(caplog)
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]
    assert records[0].__dict__["sender"] == "LAB-TYPO^FAC-A"
    assert records[0].__dict__["listener"] == "mllp"
    assert "refused" in records[0].getMessage()
    assert "SECRET" not in caplog.text.upper()


@pytest.mark.parametrize("policy", [None, "default"])
def test_default_delivers_an_unknown_sender_as_before_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str | None
) -> None:
    caplog.set_level(logging.DEBUG, logger="passerelle.ingest")
    config = _config(tmp_path, policy)
    assert config.unmatched_senders == "default"
    messages = [
        adt("UNK-1", application="LAB-TYPO", mrn="MRN-U1"),
        adt("UNK-2", application="LAB-TYPO", mrn="MRN-U2"),
        adt("KNOWN-1", application="LAB", mrn="MRN-K1"),
    ]
    with running(config) as service:
        acks = service.send(messages)
        service.drained()
        wait_until(lambda: len(_bundles(tmp_path / "data" / "out")) == 2, what="2 bundles")
        wait_until(lambda: len(_bundles(tmp_path / "lab-out")) == 1, what="the lab's bundle")
        metrics = service.metrics()
    assert [a.code for a in acks] == ["AA", "AA", "AA"]
    assert metrics.value("passerelle_messages_unmatched_total", outcome="default") == 2
    assert metrics.value("passerelle_messages_unmatched_total", outcome="refused") == 0
    records = _unmatched_records(caplog)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(records) == 2
    assert warnings[0].__dict__["sender"] == "LAB-TYPO^FAC-A"
    assert warnings[0].__dict__["listener"] == "mllp"
    assert "default destination" in warnings[0].getMessage()
    assert "MRN-U" not in caplog.text and "Testpatient" not in caplog.text


def test_without_routes_every_sender_is_the_default_routes_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="passerelle.ingest")
    config = make_config(tmp_path)
    with running(config) as service:
        assert [a.code for a in service.send([adt("ANY-1", application="WHOEVER")])] == ["AA"]
        service.drained()
        exposed = httpx.get(f"{service.http_url}/metrics", timeout=10).text
    assert _unmatched_records(caplog) == []
    # The counter is exposed, and counts nothing: the default route is every sender's.
    assert "# TYPE passerelle_messages_unmatched_total counter" in exposed
    assert "passerelle_messages_unmatched_total{" not in exposed


# -- the AMQP intake's envelope --------------------------------------------------------------------
def _support(config: ServiceConfig, metrics: Metrics | None = None) -> SupportChecker:
    routes = {"default": config.default_route(), **{r.name: r for r in config.routes}}
    return SupportChecker(routes, metrics=metrics)


def test_the_amqp_intake_refuses_an_unknown_sender_with_the_mllp_code(tmp_path: Path) -> None:
    config = _config(tmp_path, "reject")
    metrics = Metrics()
    support = _support(config, metrics)
    consumed: Any = _Consumed(body=adt("UNK-1", application="LAB-TYPO"))
    with pytest.raises(UnmatchedSenderError) as refused:
        envelope_of(consumed, listener="amqp", config=config, support=support)
    # An UnsupportedMessageError: the consumer dead-letters it as it does the others.
    assert isinstance(refused.value, UnsupportedMessageError)
    assert (refused.value.hl7_error_code, refused.value.location) == ("103", "MSH-3")
    assert refused.value.control_id == "UNK-1"
    assert "LAB-TYPO" in refused.value.reason
    # A CDA document's sender is its custodian: no route names it, refused too.
    document: Any = _Consumed(body=CDA_SAMPLE.read_bytes(), content_type="application/xml")
    with pytest.raises(UnmatchedSenderError, match="custodian"):
        envelope_of(document, listener="amqp", config=config, support=support)
    known: Any = _Consumed(body=adt("K-1", application="LAB"))
    assert envelope_of(known, listener="amqp", config=config, support=support).route == "lab"
    text = metrics.render().decode()
    assert 'passerelle_messages_unmatched_total{listener="amqp",outcome="refused"} 2.0' in text


def test_the_amqp_intake_takes_an_unknown_sender_by_default_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="passerelle.ingest")
    config = _config(tmp_path, None)
    support = _support(config)
    for n in (1, 2):
        consumed: Any = _Consumed(body=adt(f"UNK-{n}", application="LAB-TYPO"))
        envelope = envelope_of(consumed, listener="amqp", config=config, support=support)
        assert envelope.route == "default"
    levels = [r.levelno for r in _unmatched_records(caplog)]
    assert levels == [logging.WARNING, logging.DEBUG]


def test_warnings_of_new_senders_are_limited_per_minute() -> None:
    """A peer inventing a sender per message gets 10 WARNINGs a minute, the rest DEBUG,
    counted in the next WARNING."""
    now = [0.0]
    unmatched = UnmatchedSenders(clock=lambda: now[0])
    config = _lab_config()
    handler = _Records()
    logger = logging.getLogger("passerelle.ingest")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        for n in range(12):
            _unmatched(unmatched, config, f"A{n}")
        now[0] = 61.0
        _unmatched(unmatched, config, "Z")
        # A sender not warned about in the flood is warned about afterwards.
        _unmatched(unmatched, config, "A11")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    levels = [r.levelno for r in handler.records]
    assert levels == [logging.WARNING] * 10 + [logging.DEBUG] * 2 + [logging.WARNING] * 2
    assert "2 message(s) of other new senders were logged at DEBUG" in (
        handler.records[12].getMessage()
    )


def _unmatched(unmatched: UnmatchedSenders, config: ServiceConfig, application: str) -> None:
    route = config.route_for(application=application, facility="", listener="l")
    unmatched.check(config, route, listener="l", application=application, facility="")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _lab_config() -> ServiceConfig:
    from listeners.config import RouteConfig

    return ServiceConfig(routes=(RouteConfig(name="lab", sending_application="LAB"),))


# -- configuration -------------------------------------------------------------------------------
def test_the_setting_from_the_environment_and_in_the_printed_configuration(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, None, env={"PASSERELLE_UNMATCHED_SENDERS": "reject"})
    assert config.unmatched_senders == "reject"
    assert config.redacted()["unmatched_senders"] == "reject"
    path = write_config(tmp_path / "printed", {"": {"unmatched_senders": "reject"}}, LAB_ROUTE)
    printed = subprocess.run(
        [PASSERELLE, "serve", "--config", str(path), "--print-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["unmatched_senders"] == "reject"
    assert load_config(None, env={}).redacted()["unmatched_senders"] == "default"


@pytest.mark.parametrize(
    ("top", "env", "expected"),
    [
        (
            {"unmatched_senders": "refuse"},
            {},
            r"unmatched_senders must be one of default, reject, got 'refuse'",
        ),
        (
            {"unmatched_senders": True},
            {},
            r"unmatched_senders must be one of default, reject, got True",
        ),
        (
            {},
            {"PASSERELLE_UNMATCHED_SENDERS": "REJECTED"},
            r"unmatched_senders must be one of .* \(from PASSERELLE_UNMATCHED_SENDERS\)",
        ),
    ],
)
def test_an_invalid_value_is_a_clear_error(
    tmp_path: Path, top: dict[str, Any], env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        make_config(tmp_path, {"": top}, extra=LAB_ROUTE, env=env)


def test_reject_without_any_route_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unmatched_senders = \"reject\" .* no route"):
        make_config(tmp_path, {"": {"unmatched_senders": "reject"}})
