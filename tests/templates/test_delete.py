"""The ``delete()`` template global: an emitted resource's entry becomes a DELETE of its id.

The resource is rendered by its own template (so its id is the one every other message
gives it); it leaves ``emitted()``; nothing else in the bundle may refer to it; a resource
without identity (a message-scoped id) cannot be deleted; errors name the template line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.errors import MappingError
from converter.templates.render import RenderSession
from tests.templates.test_render import ROOT, make_session, write_templates

PERSON = (
    '{"resourceType": "Patient", "_identity": [{{ msg.PID[3][1] }}],'
    ' "identifier": [{"system": "urn:oid:1.2.3", "value": {{ msg.PID[3][1] }}}],'
    ' "gender": "male"}'
)
VISIT = (
    '{"resourceType": "Encounter", "_identity": ["V1"], "status": "finished",'
    ' "class": {"code": "IMP"}, "subject": {{ patient }}}'
)
NOTE = '{"resourceType": "Basic", "code": {"text": "note"}}'
PROVENANCE = (
    '{"resourceType": "Basic", "code": {"text": "prov"}, "extension": ['
    '{% for r in targets %}{"url": "t", "valueReference": {{ r }}},{% endfor %}]}'
)


def session_for(tmp_path: Path, root: str, **options: Any) -> RenderSession:
    builtin = write_templates(
        tmp_path / "builtin",
        {
            ROOT: root,
            "hl7v2/resources/Person.j2": PERSON,
            "hl7v2/resources/Visit.j2": VISIT,
            "hl7v2/resources/Note.j2": NOTE,
            "hl7v2/resources/Prov.j2": PROVENANCE,
        },
    )
    return make_session(builtin, **options)


def rendered(session: RenderSession) -> list[tuple[str, dict[str, Any]]]:
    session.render(ROOT, {})
    return list(session.entries())


def test_delete_after_emit_marks_the_entry_and_keeps_the_normal_id(tmp_path: Path) -> None:
    normal = session_for(tmp_path / "a", '{% do emit("Person") %}')
    [(_, written)] = rendered(normal)
    deleting = session_for(tmp_path / "b", '{% do delete(emit("Person")) %}')
    [(origin, resource)] = rendered(deleting)
    assert origin == "hl7v2/resources/Person.j2"
    # Same id as the message that wrote it: the DELETE names the stored resource.
    assert resource["id"] == written["id"]
    assert deleting.deleted.keys() == {("Patient", written["id"])}
    assert deleting.deleted[("Patient", written["id"])] == f"{ROOT}:1"
    assert normal.deleted == {}


def test_deleted_resources_leave_emitted(tmp_path: Path) -> None:
    session = session_for(
        tmp_path,
        '{% do emit("Note") %}{% do delete(emit("Person")) %}'
        '{% do emit("Prov", targets=emitted()) %}',
    )
    entries = rendered(session)
    prov = entries[-1][1]
    targets = [e["valueReference"]["reference"] for e in prov["extension"]]
    note_id = entries[0][1]["id"]
    assert targets == [f"Basic/{note_id}"]
    assert [r.type for r in session.emitted()] == ["Basic", "Basic"]


def test_delete_of_a_resource_referenced_elsewhere_is_a_mapping_error(tmp_path: Path) -> None:
    # Referenced by a resource emitted after the deletion…
    session = session_for(
        tmp_path / "after",
        '{% set p = emit("Person") %}{% do delete(p) %}\n{% do emit("Visit", patient=p) %}',
    )
    with pytest.raises(MappingError) as caught:
        rendered(session)
    error = caught.value
    assert error.reason.startswith("Encounter refers to the Patient")
    # The ids are patient data: in the detail, never in the message logs show.
    assert "/" not in error.reason.split("delete() in")[0]
    assert error.detail is not None and error.detail.startswith("Encounter/")
    assert f"delete() in {ROOT}:1" in error.reason
    # …named by the template of the resource holding the reference.
    assert error.template == "hl7v2/resources/Visit.j2"

    # …or before it: the bundle is checked as a whole.
    session = session_for(
        tmp_path / "before",
        '{% set p = emit("Person") %}{% do emit("Visit", patient=p) %}\n{% do delete(p) %}',
    )
    with pytest.raises(MappingError, match="refers to the Patient") as caught:
        rendered(session)
    assert f"delete() in {ROOT}:2" in caught.value.reason


def test_references_in_urn_style_are_checked_too(tmp_path: Path) -> None:
    session = session_for(
        tmp_path,
        '{% set p = emit("Person") %}{% do emit("Visit", patient=p) %}{% do delete(p) %}',
        reference_style="urn",
    )
    with pytest.raises(MappingError, match="refers to the Patient"):
        rendered(session)


def test_delete_of_something_emit_did_not_return_is_an_error_at_the_template_line(
    tmp_path: Path,
) -> None:
    session = session_for(tmp_path, '{% do emit("Person") %}\n{% do delete("Patient/x") %}')
    with pytest.raises(MappingError, match="takes a reference that emit") as caught:
        session.render(ROOT, {})
    assert caught.value.template == f"{ROOT}:2"


def test_a_resource_without_identity_cannot_be_deleted(tmp_path: Path) -> None:
    session = session_for(tmp_path, '{% do emit("Note") %}\n\n{% do delete(emit("Note")) %}')
    with pytest.raises(MappingError, match="has no identity") as caught:
        session.render(ROOT, {})
    assert caught.value.template == f"{ROOT}:3"
    assert "hl7v2/resources/Note.j2" in caught.value.reason


def test_deleting_nothing_warns_with_the_template_line(tmp_path: Path) -> None:
    builtin = write_templates(
        tmp_path / "builtin",
        {
            ROOT: '{% do emit("Person") %}\n{% do delete(emit("Empty")) %}',
            "hl7v2/resources/Person.j2": PERSON,
            "hl7v2/resources/Empty.j2": '{"resourceType": "Patient", "gender": null}',
        },
    )
    session = make_session(builtin)
    assert len(rendered(session)) == 1
    assert session.deleted == {}
    assert session.warnings == [f"nothing to delete in {ROOT}:2: the resource came out empty"]


def test_deleting_twice_is_one_deletion(tmp_path: Path) -> None:
    session = session_for(
        tmp_path, '{% set p = emit("Person") %}{% do delete(p) %}{% do delete(emit("Person")) %}'
    )
    assert len(rendered(session)) == 1
    assert len(session.deleted) == 1


# --- through the converter: bundle entries in each request mode -----------------------------

MESSAGE = (
    b"MSH|^~\\&|APP|FAC|RCV|RFAC|20240316101544+0100||ADT^A29^ADT_A21|MSG0001|P|2.5\r"
    b"PID|1||12345^^^HOSP&1.2.3&ISO^MR||DOE^JOHN||19850312|M\r"
)


def converter_for(tmp_path: Path, root: str, **config: Any) -> Converter:
    overrides = write_templates(
        tmp_path / "over",
        {
            "hl7v2/messages/Del.j2": root,
            "hl7v2/resources/Person.j2": PERSON,
            "hl7v2/resources/Note.j2": NOTE,
        },
    )
    return Converter(ConverterConfig(template_dirs=(overrides,), **config))


@pytest.mark.parametrize(
    ("mode", "url"),
    [
        ("put", None),
        ("conditional-create", "Patient?identifier=urn:oid:1.2.3|12345"),
        ("conditional-update", "Patient?identifier=urn:oid:1.2.3|12345"),
    ],
)
def test_the_bundle_entry_is_a_delete_without_resource(
    tmp_path: Path, mode: str, url: str | None
) -> None:
    converter = converter_for(
        tmp_path, '{% do emit("Note") %}{% do delete(emit("Person")) %}', request_mode=mode
    )
    [conversion] = converter.convert(MESSAGE, root_template="Del")
    note, deletion = conversion.bundle["entry"]
    assert "resource" in note
    assert set(deletion) == {"request"}
    assert deletion["request"]["method"] == "DELETE"
    if url is None:
        # PUT mode: by the stable id (the Note has no identifier: PUT by id in every mode).
        assert deletion["request"]["url"].startswith("Patient/")
        assert note["request"]["method"] == "PUT"
    else:
        assert deletion["request"]["url"] == url


def test_a_per_type_conditional_mode_deletes_by_identifier(tmp_path: Path) -> None:
    converter = converter_for(
        tmp_path,
        '{% do delete(emit("Person")) %}',
        request_modes=(("Patient", "conditional-update"),),
    )
    [conversion] = converter.convert(MESSAGE, root_template="Del")
    [deletion] = conversion.bundle["entry"]
    assert deletion == {
        "request": {"method": "DELETE", "url": "Patient?identifier=urn:oid:1.2.3|12345"}
    }
