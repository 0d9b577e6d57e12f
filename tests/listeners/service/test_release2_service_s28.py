"""``passerelle serve`` with ``PASSERELLE_MLLP_RELEASE=2``, as a real process delivering
to the real FHIR server: a release 2 sender (Mirth Connect's MLLPv2 mode) gets the
commit block, then the HL7 ACK; ``passerelle send`` reads past the commit block; the
blocks sent are counted on ``/metrics``."""

from __future__ import annotations

from pathlib import Path

import httpx

from listeners.mllp import CommitAck, MllpClient, parse_ack
from tests.listeners.service.support import (
    MetricsSnapshot,
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

COMMITS = "passerelle_mllp_commit_blocks_sent_total"


def test_a_release_2_sender_gets_the_commit_then_the_ack_and_the_data_is_delivered(
    tmp_path: Path, fhir: FhirServer
) -> None:
    config = write_config(tmp_path, {"destinations.default": {"url": fhir.base_url}})
    with ServeProcess(config, env={"PASSERELLE_MLLP_RELEASE": "2"}) as serve:
        port = serve.mllp_ports["mllp"]

        async def mirth_v2() -> tuple[str, str, CommitAck | None]:
            async with MllpClient("127.0.0.1", port, timeout=20) as client:
                ack = parse_ack(await client.send(adt("V2-CTRL-1", mrn="MRN-V2-1")))
                return ack.code, ack.acknowledged_id, client.last_commit

        assert run(mirth_v2()) == ("AA", "V2-CTRL-1", CommitAck.ACK)

        message = tmp_path / "second.hl7"
        message.write_bytes(adt("V2-CTRL-2", mrn="MRN-V2-2"))
        sent = passerelle("send", str(message), "--port", str(port))
        assert sent.returncode == 0, sent.stderr
        assert "MSH-10 V2-CTRL-2: AA in " in sent.stdout

        wait_until(lambda: len(bundle_posts(fhir)) == 2, what="both deliveries")
        assert patients(fhir, "MRN-V2-1") and patients(fhir, "MRN-V2-2")

        def commits() -> float:
            text = httpx.get(f"http://127.0.0.1:{serve.http_port}/metrics", timeout=10).text
            return MetricsSnapshot.parse(text).value(COMMITS, listener="mllp", kind="ack")

        wait_until(lambda: commits() == 2, what="two commit blocks counted")
        assert serve.terminate() == 0
