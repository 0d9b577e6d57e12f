"""FolderSink: atomic, idempotent files when no FHIR server is configured."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from converter import json_dumps
from listeners.config import DestinationConfig
from listeners.delivery import FolderSink, build_sink
from listeners.errors import DeliveryError, TransientDeliveryError
from tests.listeners.delivery.helpers import make_envelope

pytestmark = pytest.mark.anyio

#: 2024-03-01T23:30:00Z — 2024-03-02 in Paris, but files are filed by UTC date.
RECEIVED_AT = datetime(2024, 3, 1, 23, 30, tzinfo=UTC).timestamp()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_writes_bundle_under_received_date(
    tmp_path: Path, adt_bundle: dict[str, Any]
) -> None:
    sink = FolderSink(tmp_path / "out", name="files")
    receipt = await sink.deliver(adt_bundle, make_envelope("MSG00001", received_at=RECEIVED_AT))
    expected = tmp_path / "out" / "2024-03-01" / f"MSG00001-{adt_bundle['id']}.json"
    assert receipt.location == str(expected)
    assert receipt.destination == "files"
    assert receipt.status is None
    assert json.loads(expected.read_bytes()) == adt_bundle
    assert _files(tmp_path / "out") == [f"2024-03-01/MSG00001-{adt_bundle['id']}.json"]
    await sink.close()


async def test_redelivery_overwrites_same_file(tmp_path: Path, adt_bundle: dict[str, Any]) -> None:
    sink = FolderSink(tmp_path)
    envelope = make_envelope("MSG00001", received_at=RECEIVED_AT)
    first = await sink.deliver(adt_bundle, envelope)
    second = await sink.deliver(json_dumps(adt_bundle).encode(), envelope)
    assert first.location == second.location
    assert len(_files(tmp_path)) == 1  # no temporary file left behind either


async def test_bytes_are_written_verbatim(tmp_path: Path) -> None:
    data = b'{"resourceType":"Bundle","id":"b-1","type":"transaction","entry":[]}'
    receipt = await FolderSink(tmp_path).deliver(data, make_envelope("C1", received_at=RECEIVED_AT))
    assert receipt.location is not None
    assert Path(receipt.location).read_bytes() == data
    assert Path(receipt.location).name == "C1-b-1.json"


async def test_names_without_control_or_bundle_id(tmp_path: Path) -> None:
    sink = FolderSink(tmp_path)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    envelope = make_envelope(None, payload=b"MSH|^~\\&|A", received_at=RECEIVED_AT)
    first = await sink.deliver(bundle, envelope)
    again = await sink.deliver(bundle, envelope)
    other = await sink.deliver(
        bundle, make_envelope(None, payload=b"MSH|^~\\&|B", received_at=RECEIVED_AT)
    )
    assert first.location == again.location != other.location
    assert first.location is not None
    name = Path(first.location).name
    assert name.startswith("msg-") and "-sha256-" in name


async def test_control_ids_cannot_escape_the_folder(tmp_path: Path) -> None:
    sink = FolderSink(tmp_path / "out")
    bundle = {"resourceType": "Bundle", "id": "../../x", "type": "transaction"}
    receipt = await sink.deliver(bundle, make_envelope("../../etc/passwd", received_at=0))
    assert receipt.location is not None
    written = Path(receipt.location)
    assert written.parent == tmp_path / "out" / "1970-01-01"
    assert written.name == "etc_passwd-x.json"


async def test_failed_write_leaves_previous_file_intact(
    tmp_path: Path, adt_bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FolderSink(tmp_path)
    envelope = make_envelope("MSG00001", received_at=RECEIVED_AT)
    receipt = await sink.deliver(adt_bundle, envelope)
    assert receipt.location is not None
    before = Path(receipt.location).read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    changed = {**adt_bundle, "meta": {"tag": [{"code": "changed"}]}}
    with pytest.raises(TransientDeliveryError, match="No space left"):
        await sink.deliver(changed, envelope)
    monkeypatch.undo()
    assert Path(receipt.location).read_bytes() == before
    assert len(_files(tmp_path)) == 1  # the temporary file was removed


async def test_check_creates_folder_or_fails(tmp_path: Path) -> None:
    await FolderSink(tmp_path / "a" / "b").check()
    assert (tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DeliveryError):
        await FolderSink(blocker / "out").check()


async def test_unwritable_folder_is_transient(tmp_path: Path, adt_bundle: dict[str, Any]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TransientDeliveryError):
        await FolderSink(blocker).deliver(adt_bundle, make_envelope())


async def test_build_sink_without_url_is_a_folder(tmp_path: Path) -> None:
    sink = build_sink(DestinationConfig(name="archive", folder=tmp_path / "archive"))
    assert isinstance(sink, FolderSink)
    assert sink.name == "archive"
    assert sink.folder == tmp_path / "archive"
