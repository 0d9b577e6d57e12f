"""MSH-11 processing id: a route takes only the processing ids it is configured for.

A training (T) or debugging (D) message reaching a production route would land in the
production FHIR server as real patient data; HL7's answer is AR with error 202
(unsupported processing id). Real service, real MLLP client, real files.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.listeners.service.support import adt, make_config, running

LAB_ROUTE = """
[destinations.training]
folder = "training-out"

[[routes]]
name = "training-lab"
sending_facility = "FAC-TRAIN"
processing_ids = ["T"]
destination = "training"
"""


def stored_control_ids(folder: Path) -> set[str]:
    ids = set()
    for path in folder.rglob("*.json"):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        ids.add(bundle["identifier"]["value"])
    return ids


def test_a_production_only_service_rejects_training_messages_with_ar_202(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, env={"PASSERELLE_PROCESSING_IDS": "P"})
    assert config.processing_ids == ("P",)
    with running(config) as service:
        training, debugging, production = service.send(
            [
                adt("PID-T", processing_id="T"),
                adt("PID-D", processing_id="D"),
                adt("PID-P", processing_id="P"),
            ]
        )
        for ack, control_id in ((training, "PID-T"), (debugging, "PID-D")):
            assert (ack.code, ack.acknowledged_id, ack.error_codes) == ("AR", control_id, ("202",))
            err = next(s for s in ack.segments if s.startswith("ERR|"))
            assert "MSH^1^11" in err  # ERR-2 names the field
        assert production.code == "AA"
        service.drained()
        assert service.service.queue.count_dead_letters() == 0
    assert stored_control_ids(config.destinations["default"].folder) == {"PID-P"}


def test_a_route_takes_its_own_processing_ids_and_the_others_keep_the_default(
    tmp_path: Path,
) -> None:
    # The service-wide setting from the file this time (the test above used the environment).
    config = make_config(tmp_path, {"": {"processing_ids": ["P"]}}, extra=LAB_ROUTE)
    with running(config) as service:
        acks = service.send(
            [
                adt("LAB-T", facility="FAC-TRAIN", processing_id="T"),
                adt("LAB-P", facility="FAC-TRAIN", processing_id="P"),
                adt("WARD-T", facility="FAC-A", processing_id="T"),
                adt("WARD-P", facility="FAC-A", processing_id="P"),
            ]
        )
        assert [(a.acknowledged_id, a.code) for a in acks] == [
            ("LAB-T", "AA"),
            ("LAB-P", "AR"),
            ("WARD-T", "AR"),
            ("WARD-P", "AA"),
        ]
        service.drained()
    assert stored_control_ids(tmp_path / "training-out") == {"LAB-T"}
    assert stored_control_ids(config.destinations["default"].folder) == {"WARD-P"}


def test_without_a_setting_every_processing_id_is_taken(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.processing_ids == ()
    with running(config) as service:
        acks = service.send([adt(f"ANY-{p}", processing_id=p) for p in ("P", "T", "D")])
        assert [a.code for a in acks] == ["AA", "AA", "AA"]


def test_with_on_unsupported_dead_letter_a_training_message_is_kept_for_inspection(
    tmp_path: Path,
) -> None:
    config = make_config(
        tmp_path,
        {"mllp": {"on_unsupported": "dead-letter"}},
        env={"PASSERELLE_PROCESSING_IDS": "P"},
    )
    with running(config) as service:
        [ack] = service.send([adt("DL-T", processing_id="T")])
        assert ack.code == "AA"
        [letter] = service.service.queue.list_dead_letters()
        assert letter.envelope.control_id == "DL-T"
        assert letter.error["hl7_error_code"] == "202"
        assert letter.error["location"] == "MSH-11"
        assert "'T'" in letter.error["reason"]
