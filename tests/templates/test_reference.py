"""The ``reference()`` template global: the reference ``emit()`` would return, without
writing anything.

The template is rendered as emit() renders it (so the id is the one every other message
gives the resource); neither the resource nor what its template emits itself enters the
bundle; the rendering's warnings are dropped; the reference is ``Type/id`` (also in the
urn style of the conditional modes: nothing in the bundle has that resource's fullUrl),
the bundle's own reference when this conversion emitted the resource; no identity → a
MappingError; an empty resource → None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from converter.assembly.ids import stable_id
from converter.errors import MappingError
from converter.templates.render import RenderSession
from tests.templates.test_render import MESSAGE_KEY, ROOT, make_session, write_templates

# A room part of its unit, as Location.j2 builds a PL's hierarchy: the room emits its unit.
ROOM = (
    '{% do warn("room rendered") %}'
    '{"resourceType": "Location", "_identity": ["room", {{ name }}], "name": {{ name }},'
    ' "partOf": {{ emit("Unit") }}}'
)
UNIT = '{"resourceType": "Location", "_identity": ["unit"], "name": "unit"}'
BED = '{"resourceType": "Location", "_identity": ["bed"], "name": "bed", "partOf": {{ parent }}}'
NOTE = '{"resourceType": "Basic", "code": {"text": {{ text }}}}'
EMPTY = '{"resourceType": "Location", "_identity": ["x"], "name": null}'
# A ward whose template emits a resource without identity (a Note).
WARD = (
    '{"resourceType": "Location", "_identity": ["ward"], "name": "ward",'
    ' "extension": [{"url": "n", "valueReference": {{ emit("Note", text="n") }}}]}'
)


def session_for(tmp_path: Path, root: str, **options: Any) -> RenderSession:
    builtin = write_templates(
        tmp_path,
        {
            ROOT: root,
            "hl7v2/resources/Room.j2": ROOM,
            "hl7v2/resources/Unit.j2": UNIT,
            "hl7v2/resources/Bed.j2": BED,
            "hl7v2/resources/Note.j2": NOTE,
            "hl7v2/resources/Empty.j2": EMPTY,
            "hl7v2/resources/Ward.j2": WARD,
        },
    )
    return make_session(builtin, **options)


def rendered(session: RenderSession) -> list[dict[str, Any]]:
    session.render(ROOT, {})
    return [resource for _, resource in session.entries()]


def test_reference_gives_the_id_emit_gives_and_writes_nothing(tmp_path: Path) -> None:
    room_id = stable_id("", "Location", "room", "412")
    session = session_for(tmp_path, '{% do emit("Bed", parent=reference("Room", name="412")) %}')
    [bed] = rendered(session)
    # Only the bed: neither the room nor the unit the room's template emits.
    assert bed["name"] == "bed"
    assert bed["partOf"] == {"reference": f"Location/{room_id}"}
    assert [ref.id for ref in session.emitted()] == [bed["id"]]
    # The room's rendering warned; nothing of it is written, its warnings neither.
    assert session.warnings == []
    # The same id as emit() gives the room.
    emitting = session_for(tmp_path / "b", '{% do emit("Room", name="412") %}')
    assert rendered(emitting)[0]["id"] == room_id


def test_reference_is_literal_in_urn_style_unless_the_bundle_holds_the_resource(
    tmp_path: Path,
) -> None:
    room_id = stable_id("", "Location", "room", "412")
    alone = session_for(
        tmp_path / "a",
        '{% do emit("Bed", parent=reference("Room", name="412")) %}',
        reference_style="urn",
    )
    # The conditional modes' urn:uuid references name bundle entries only.
    assert rendered(alone)[0]["partOf"] == {"reference": f"Location/{room_id}"}
    written = session_for(
        tmp_path / "b",
        '{% do emit("Room", name="412") %}'
        '{% do emit("Bed", parent=reference("Room", name="412")) %}',
        reference_style="urn",
    )
    resources = rendered(written)
    assert [r["name"] for r in resources] == ["412", "unit", "bed"]
    assert resources[2]["partOf"] == {"reference": f"urn:uuid:{room_id}"}


def test_reference_leaves_the_ids_of_resources_without_identity_as_they_were(
    tmp_path: Path,
) -> None:
    # A Note's id derives from its rank among the message's Notes: the Note the ward's
    # template emits while reference() renders it is not written, so it is not counted.
    session = session_for(
        tmp_path, '{% do emit("Bed", parent=reference("Ward")) %}{% do emit("Note", text="a") %}'
    )
    bed, note = rendered(session)
    assert bed["partOf"] == {"reference": f"Location/{stable_id('', 'Location', 'ward')}"}
    assert note["code"] == {"text": "a"}
    assert note["id"] == stable_id("", "message", MESSAGE_KEY, "hl7v2/resources/Note.j2", "1")


def test_reference_to_a_resource_without_identity_is_a_mapping_error(tmp_path: Path) -> None:
    session = session_for(tmp_path, '{{ reference("Note", text="a") }}')
    with pytest.raises(MappingError) as caught:
        rendered(session)
    assert "no identity" in str(caught.value)
    assert caught.value.template == f"{ROOT}:1"


def test_reference_to_an_empty_resource_is_none(tmp_path: Path) -> None:
    session = session_for(tmp_path, '{% do emit("Bed", parent=reference("Empty")) %}')
    [bed] = rendered(session)
    assert "partOf" not in bed


def test_reference_if_identified_is_none_for_a_resource_without_identity(
    tmp_path: Path,
) -> None:
    """``reference_if_identified()``: what reference() gives for a resource with an
    identity, none (no MappingError) for one without: a template asks whether the
    resource has an id naming it across messages without repeating the rule of the
    resource's own template. Nothing is written either way, warnings neither."""
    room_id = stable_id("", "Location", "room", "412")
    session = session_for(
        tmp_path,
        '{% do emit("Bed", parent=reference_if_identified("Note", text="a")) %}'
        '{% do emit("Bed", parent=reference_if_identified("Room", name="412")) %}',
    )
    [bed] = rendered(session)  # the two beds are one resource, merged
    assert bed["partOf"] == {"reference": f"Location/{room_id}"}
    assert session.warnings == []
    assert [ref.id for ref in session.emitted()] == [bed["id"]]
    # The Note the first call rendered was not counted: the next one is the first.
    session = session_for(
        tmp_path / "b",
        '{% do emit("Bed", parent=reference_if_identified("Note", text="a")) %}'
        '{% do emit("Note", text="b") %}',
    )
    bed, note = rendered(session)
    assert "partOf" not in bed
    assert note["id"] == stable_id("", "message", MESSAGE_KEY, "hl7v2/resources/Note.j2", "1")
