"""Helpers of the delivery tests: server start-up, destinations, envelopes.

Imported as ``tests.listeners.delivery.helpers`` (the test folders have no ``__init__.py``: a
``tests/listeners`` package would shadow the real ``listeners`` package under pytest's default
import mode).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from listeners.config import AuthConfig, DestinationConfig
from listeners.queue.base import Envelope
from tests.support.fhirserver import FhirServer, require_fhirserver

REPO_ROOT = Path(__file__).resolve().parents[3]
ADT_SAMPLE = REPO_ROOT / "samples" / "hl7v2" / "ADT_A01_admission-full.hl7"
#: The Patient identifier of the sample (PID-3).
PATIENT_SYSTEM = "urn:oid:1.2.250.1.999.1.1"
PATIENT_VALUE = "0012345678"


def start_server(**options: Any) -> FhirServer:
    require_fhirserver()
    return FhirServer.start(**options)


def fresh(server: FhirServer) -> FhirServer:
    """``server`` running (restarted if a test stopped it) and emptied."""
    if not server.running:
        server.restart()
    server.reset()
    return server


def make_envelope(
    control_id: str | None = "MSG00001",
    *,
    payload: bytes = b"MSH|^~\\&|...",
    received_at: float | None = None,
) -> Envelope:
    return Envelope(
        payload=payload,
        sender="SIH-ORCHIDEE^HOPITAL",
        listener="mllp",
        received_at=time.time() if received_at is None else received_at,
        ordering_key="SIH-ORCHIDEE^HOPITAL|0012345678",
        control_id=control_id,
        message_type="ADT^A01",
    )


def destination(
    server: FhirServer, *, timeout: float = 10.0, auth: AuthConfig | None = None, **options: Any
) -> DestinationConfig:
    return DestinationConfig(
        name="test", url=server.base_url, timeout=timeout, auth=auth or AuthConfig(), **options
    )
