"""Reuse of a rendering within one conversion (templates/memo.py): the same bundle and the
same warnings as rendering every emit(), for the samples, part of the shared corpora and
small templates made to tell the two apart."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from converter import Converter, ConverterConfig
from converter.errors import ConversionError
from converter.hl7v2.er7 import parse_message
from converter.templates.render import RenderSession
from tests.conftest import SAMPLES_DIR, SHARED_DIR
from tests.support.compiled import pure_python_only
from tests.templates.test_render import CATALOG, ROOT, make_session, write_templates

CORPUS = SHARED_DIR / "corpus"


def _outcome(converter: Converter, data: bytes) -> object:
    try:
        return [(c.to_json(), c.warnings) for c in converter.convert(data)]
    except ConversionError as exc:
        return (type(exc).__name__, str(exc), exc.detail)


@pytest.fixture(scope="module", params=[True, False], ids=["strict", "lenient"])
def converters(request: pytest.FixtureRequest) -> tuple[Converter, Converter]:
    config = ConverterConfig(default_timezone="Europe/Paris", strict_values=request.param)
    # The second renders every emit() (ConverterConfig.reuse_renderings off).
    every_emit = Converter(dataclasses.replace(config, reuse_renderings=False))
    return Converter(config), every_emit


def _compare(converters: tuple[Converter, Converter], files: list[Path]) -> int:
    """How many files converted; fails on the first whose outcome differs."""
    reusing, rendering = converters
    converted = 0
    for path in files:
        data = path.read_bytes()
        expected = _outcome(rendering, data)
        assert _outcome(reusing, data) == expected, path.name
        converted += isinstance(expected, list)
    return converted


def _samples() -> list[Path]:
    return sorted((SAMPLES_DIR / "hl7v2").glob("*.hl7")) + sorted(
        (SAMPLES_DIR / "cda").glob("*.xml")
    )


def _corpus(family: str, every: int) -> Iterator[Path]:
    root = CORPUS / family
    files = sorted(p for p in root.rglob("*") if p.suffix in (".hl7", ".xml", ".ccda"))
    return iter(files[::every])


def test_samples_convert_the_same_with_and_without_reuse(
    converters: tuple[Converter, Converter],
) -> None:
    assert _compare(converters, _samples()) == len(_samples())


@pytest.mark.parametrize(("family", "every"), [("hl7v2", 3), ("ccda", 1)])
def test_corpus_converts_the_same_with_and_without_reuse(
    converters: tuple[Converter, Converter], family: str, every: int
) -> None:
    if not (CORPUS / family).is_dir():
        pytest.skip(f"{CORPUS / family} is absent: the shared corpus is not available here")
    # A third of the HL7 v2 corpus (~140 messages) keeps the test short; the whole of it
    # was compared when reuse was written.
    assert _compare(converters, list(_corpus(family, every))) > 0


# -- small templates ---------------------------------------------------------------------

_MESSAGE = (
    b"MSH|^~\\&|APP|FAC|RCV|RFAC|20240316101544+0100||ORU^R01^ORU_R01|MSG1|P|2.5.1\r"
    b"PID|1||12345^^^HOSP&1.2.3&ISO^MR||DOE^JOHN\r"
    b"OBX|1|ST|A^a||x||||||F|||||D1^SMITH^ANN\r"
    b"OBX|2|ST|B^b||y||||||F|||||D1^SMITH^ANN\r"
    b"OBX|3|ST|C^c||z||||||F|||||D2^JONES^BOB\r"
    b"OBX|4|ST|D^d||w||||||F|||||D1^SMITH^ANN\r"
)
# Each OBX emits the Observation, which emits its responsible observer.
_ROOT = '{% for obx in msg.all("OBX") %}{% do emit("Obs", obx=obx) %}{% endfor %}'
_OBSERVATION = (
    '{"resourceType": "Observation", "_identity": [{{ obx[3][1] }}],'
    ' "performer": [{{ emit("P", xcn=obx[16]) }}]}'
)


_ORGANIZATION = (
    '{"resourceType": "Organization", "_identity": [{{ name }}], "name": {{ name }},'
    ' "active": true}'
)


def _convert(
    tmp_path: Path, practitioner: str, *, memoize: bool, strict: bool = True, root: str = _ROOT
) -> Any:
    builtin = write_templates(
        tmp_path / "builtin",
        {
            ROOT: root,
            "hl7v2/resources/Obs.j2": _OBSERVATION,
            "hl7v2/resources/P.j2": practitioner,
            "hl7v2/resources/Org.j2": _ORGANIZATION,
        },
    )
    session = make_session(builtin, message=parse_message(_MESSAGE, CATALOG), strict=strict)
    session.memoize = memoize
    rendered = record_renderings(session)
    session.render(ROOT, {})
    entries = [(origin, resource) for origin, resource in session.entries()]
    return entries, list(session.warnings), rendered


def record_renderings(session: RenderSession) -> list[str]:
    """The list to which the session adds the name of each template it renders from
    now on (``P`` for ``hl7v2/resources/P.j2``); a reused rendering adds nothing."""
    rendered: list[str] = []
    build = session._build

    def recording(name: str, variables: dict[str, Any]) -> Any:
        rendered.append(name.rsplit("/", 1)[-1].removesuffix(".j2"))
        return build(name, variables)

    session._build = recording  # type: ignore[method-assign]
    return rendered


def _both(tmp_path: Path, practitioner: str, root: str = _ROOT) -> tuple[Any, list[str]]:
    """The session's entries and warnings (the same with and without reuse) and the
    templates rendered with reuse."""
    on = _convert(tmp_path / "on", practitioner, memoize=True, root=root)
    off = _convert(tmp_path / "off", practitioner, memoize=False, root=root)
    assert on[:2] == off[:2]
    assert [name for name in off[2] if name != "Org"] == ["Obs", "P"] * 4
    return on[:2], on[2]


_PRACTITIONER = (
    '{"resourceType": "Practitioner", "_identity": [{{ xcn[1] }}],'
    ' "name": [{"family": {{ xcn[2] }}, "given": [{{ xcn[3] }}]}]}'
)


@pure_python_only
def test_the_same_practitioner_at_another_position_is_not_rendered_again(
    tmp_path: Path,
) -> None:
    (entries, warnings), rendered = _both(tmp_path, _PRACTITIONER)
    # OBX-16 of OBX 2 and 4 equals OBX 1's: rendered once; OBX 3's is another doctor.
    assert rendered == ["Obs", "P", "Obs", "Obs", "P", "Obs"]
    names = [r["name"][0]["family"] for _, r in entries if r["resourceType"] == "Practitioner"]
    assert names == ["SMITH", "JONES"]
    assert warnings == []


@pure_python_only
def test_a_template_reading_the_position_renders_again(tmp_path: Path) -> None:
    reading = _PRACTITIONER.replace('"name"', '"text": {{ xcn.path }}, "name"')
    (_, warnings), rendered = _both(tmp_path, reading)
    assert rendered == ["Obs", "P"] * 4
    # One identity, several positions: the first kept, with a warning each time.
    assert len(warnings) == 2
    assert all("emitted twice with different values (text)" in w for w in warnings)


@pure_python_only
def test_a_template_that_warns_renders_again_and_warns_again(tmp_path: Path) -> None:
    warning = _PRACTITIONER.replace('"name"', '"x": {{ warn("seen") }}, "name"')
    (_, warnings), rendered = _both(tmp_path, warning)
    assert rendered == ["Obs", "P"] * 4
    assert warnings == ["seen"] * 4


@pure_python_only
def test_a_template_reading_what_was_emitted_renders_again(tmp_path: Path) -> None:
    counting = _PRACTITIONER.replace('"name"', '"x": {{ emitted() | length }}, "name"')
    (_, warnings), rendered = _both(tmp_path, counting)
    assert rendered == ["Obs", "P"] * 4
    assert warnings  # the counts differ: merged with a warning, as without reuse


@pure_python_only
def test_a_resource_without_identity_is_rendered_again(tmp_path: Path) -> None:
    anonymous = _PRACTITIONER.replace('"_identity": [{{ xcn[1] }}],', "")
    (entries, _), rendered = _both(tmp_path, anonymous)
    assert rendered == ["Obs", "P"] * 4
    assert sum(r["resourceType"] == "Practitioner" for _, r in entries) == 4


@pure_python_only
def test_what_a_reused_rendering_emitted_is_emitted_again_in_order(tmp_path: Path) -> None:
    # The practitioner emits its organization: replayed with it (its slot, its counter).
    nested = _PRACTITIONER.replace(
        '"name"', '"organization": {{ emit("Org", name=xcn[2] | string) }}, "name"'
    )
    # An Organization without identity after them: its id counts the emits of "Org".
    root = _ROOT + '{% do emit("Org", name="") %}'
    (entries, _), rendered = _both(tmp_path, nested, root=root)
    assert rendered == ["Obs", "P", "Org", "Obs", "Obs", "P", "Org", "Obs", "Org"]
    assert [r["resourceType"] for _, r in entries] == [
        *("Observation", "Practitioner", "Organization", "Observation", "Observation"),
        *("Practitioner", "Organization", "Observation", "Organization"),
    ]


@pytest.mark.parametrize(
    "bad_name",
    [b"D1^SM\x07ITH^ANN", b"D1^SM\\XFF\\ITH^ANN"],
    ids=["control character", "undecodable escape"],
)
def test_a_value_warning_is_said_at_each_position_as_without_reuse(
    tmp_path: Path, bad_name: bytes
) -> None:
    # Lenient mode. A control character is replaced and said once per field (the check
    # reads the warnings said so far); an escape not valid in the charset is replaced and
    # said once per value object, when it is decoded. The root reads OBX 1's OBX-16.2
    # first, so the first rendering of the practitioner says nothing; those of OBX 2 and
    # 4, rendered, each say theirs.
    message = _MESSAGE.replace(b"D1^SMITH^ANN", bad_name)
    root = '{{ msg.all("OBX")[0][16][2] }}' + _ROOT
    builtin = write_templates(
        tmp_path / "builtin",
        {
            ROOT: root,
            "hl7v2/resources/Obs.j2": _OBSERVATION,
            "hl7v2/resources/P.j2": _PRACTITIONER,
        },
    )
    outcomes = []
    for memoize in (True, False):
        session = make_session(builtin, message=parse_message(message, CATALOG), strict=False)
        session.memoize = memoize
        session.render(ROOT, {})
        outcomes.append((list(session.entries()), list(session.warnings)))
    assert outcomes[0] == outcomes[1]
    assert [w.split(" at ")[1] for w in outcomes[0][1]] == [
        "OBX-16.2; replaced by U+FFFD",
        "OBX[2]-16.2; replaced by U+FFFD",
        "OBX[4]-16.2; replaced by U+FFFD",
    ]


def test_the_configuration_switch_turns_reuse_off() -> None:
    """The comparisons above hold only if the second converter renders every emit()."""
    on = Converter(ConverterConfig())
    off = Converter(ConverterConfig(reuse_renderings=False))
    assert on._session("hl7v2", {}).memoize is True
    assert off._session("hl7v2", {}).memoize is False
