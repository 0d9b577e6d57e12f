"""A bundle the server fails every time (a 500 on that payload only) while it takes every
other one: the service in front of the real test FHIR server, behind a small proxy that
answers 500 to the POSTs carrying one patient's name and forwards everything else.

Before, each failure paused the whole destination; the next probe (another message)
succeeded, the destination reopened, the failing message went again at once and paused it
again: retried about once per ``backoff_initial`` for ever, never backing off, with a
WARNING "unavailable" and a pause of every delivery each time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.listeners.delivery.proxies import FailingProxy, failing_proxy
from tests.listeners.service.support import adt, make_config, patients, running, wait_until
from tests.support.fhirserver import FhirServer
from tests.support.log_records import log_records

FAILING_NAME = b"FAILSALONE"
INITIAL = 0.2
RUN = 6.0


@pytest.fixture
def proxy(server: FhirServer) -> Iterator[FailingProxy]:
    with failing_proxy(server.base_url, FAILING_NAME) as proxy:
        yield proxy


def test_a_bundle_the_server_fails_alone_backs_off_without_pausing_the_others(
    tmp_path: Path, server: FhirServer, proxy: FailingProxy
) -> None:
    url = proxy.url
    settings = {"delivery": {"workers": 4, "backoff_initial": INITIAL, "backoff_max": 30.0}}
    config = make_config(tmp_path, settings, fhir_url=url)
    with log_records("passerelle") as records, running(config) as service:
        service.send([adt("BAD-1", mrn="MRN-BAD", family=FAILING_NAME.decode())])
        # The window opens at the first failure: on a busy machine the first conversion
        # (templates compiled) may take seconds.
        wait_until(lambda: proxy.failed_posts, timeout=60, what="the first failure")
        began = time.monotonic()
        sent = 0
        while time.monotonic() - began < RUN:
            service.send([adt(f"OK-{sent}", mrn=f"MRN-OK-{sent}", family=f"Ok{sent}")])
            sent += 1
            time.sleep(0.1)
        attempts = len(proxy.failed_posts)
        warnings = [
            r.getMessage()
            for r in records
            if r.levelno == logging.WARNING and "unavailable" in r.getMessage()
        ]
        assert service.service.queue.count_dead_letters() == 0
    # Its own backoff (0.2 s doubling, full jitter) allows about 7 attempts in 6 s; one
    # per reopening of the destination made 25 to 30.
    assert 2 <= attempts <= 14, attempts
    # The first failure paused the destination (it may have been an outage); the later
    # ones, once the destination had taken other bundles, did not.
    assert len(warnings) == 1, warnings
    # The other messages went through meanwhile.
    assert all(patients(server, f"MRN-OK-{n}") for n in range(sent - 5))
