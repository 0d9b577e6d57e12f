"""Route tables: event before structure, unsupported messages, override entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from converter.convert import Converter, ConverterConfig
from converter.errors import ConfigurationError, UnsupportedMessageError
from converter.templates.routes import Route, RouteTable

REPO = Path(__file__).resolve().parents[2]
SAMPLE = (REPO / "samples" / "hl7v2" / "ADT_A08_update-patient.hl7").read_bytes()


def routes_file(directory: Path, text: str) -> Path:
    path = directory / "hl7v2" / "routes.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def builtin(tmp_path: Path) -> Path:
    return routes_file(
        tmp_path / "builtin",
        '[events]\n"ADT^A01" = "ADT"\n"ADT^A08" = "ADT"\n"ORU^R01" = "ORU"\n\n'
        '[structures]\n"ADT_A01" = "ADT_STRUCT"\n"SIU_S12" = "SIU"\n',
    )


def test_event_beats_structure(builtin: Path) -> None:
    table = RouteTable.load("hl7v2", [builtin])
    route = table.resolve("ADT^A08", "ADT_A01")
    assert route == Route("ADT^A08", "ADT", "event", builtin / "hl7v2" / "routes.toml")


def test_structure_is_the_fallback(builtin: Path) -> None:
    table = RouteTable.load("hl7v2", [builtin])
    assert table.resolve("ADT^A04", "ADT_A01").template == "ADT_STRUCT"
    assert table.resolve("ADT^A04", "ADT_A01").kind == "structure"
    assert table.resolve("SIU^S14", "SIU_S12").template == "SIU"


@pytest.mark.parametrize(
    ("event", "structure"), [("ADT^A99", "ADT_A99"), ("ORU^R30", "ORU_R30"), ("SIU^S99", "")]
)
def test_unknown_event_of_a_known_code_is_201(builtin: Path, event: str, structure: str) -> None:
    table = RouteTable.load("hl7v2", [builtin])
    with pytest.raises(UnsupportedMessageError) as caught:
        table.resolve(event, structure)
    assert caught.value.hl7_error_code == "201"
    assert caught.value.location == "MSH-9.2"


def test_unknown_message_code_is_200(builtin: Path) -> None:
    table = RouteTable.load("hl7v2", [builtin])
    with pytest.raises(UnsupportedMessageError) as caught:
        table.resolve("ZZZ^Z01", "ZZZ_Z01")
    assert caught.value.hl7_error_code == "200"
    assert caught.value.location == "MSH-9.1"


def test_override_entries_add_and_replace_one_by_one(builtin: Path, tmp_path: Path) -> None:
    site = routes_file(
        tmp_path / "site",
        '[events]\n"ADT^A08" = "SiteADT"\n"ADT^A14" = "ADT"\n\n[structures]\n"ORM_O01" = "ORM"\n',
    )
    table = RouteTable.load("hl7v2", [site, builtin])
    site_file = site / "hl7v2" / "routes.toml"
    builtin_file = builtin / "hl7v2" / "routes.toml"
    assert table.resolve("ADT^A08", "ADT_A01") == Route("ADT^A08", "SiteADT", "event", site_file)
    assert table.resolve("ADT^A14", "ADT_A05") == Route("ADT^A14", "ADT", "event", site_file)
    assert table.resolve("ADT^A01", "ADT_A01") == Route("ADT^A01", "ADT", "event", builtin_file)
    assert table.resolve("ORM^O01", "ORM_O01").template == "ORM"
    assert table.resolve("SIU^S12", "SIU_S12").source == builtin_file
    assert {(r.key, r.template) for r in table.all()} == {
        ("ADT^A01", "ADT"),
        ("ADT^A08", "SiteADT"),
        ("ORU^R01", "ORU"),
        ("ADT^A14", "ADT"),
        ("ADT_A01", "ADT_STRUCT"),
        ("SIU_S12", "SIU"),
        ("ORM_O01", "ORM"),
    }


def test_directories_without_routes_are_skipped(builtin: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    table = RouteTable.load("hl7v2", [empty, builtin])
    assert table.resolve("ADT^A01", "").template == "ADT"
    assert RouteTable.load("cda", [builtin]).all() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[events\n"ADT^A01" = "ADT"\n', ""),
        ('events = "ADT"\n', "[events] must be a table"),
        ('[events]\n"ADT^A01" = 3\n', "route 'ADT^A01' needs a template name"),
        ('[event]\n"SIU^S12" = "ADT"\n', "unknown table(s) event"),
        ('[events]\n"SIU-S12" = "ADT"\n', "key 'SIU-S12' is not shaped like \"ADT^A01\""),
        ('[structures]\n"SIU^S12" = "ADT"\n', 'is not shaped like "ADT_A01"'),
    ],
    ids=["not TOML", "not a table", "not a string", "unknown table", "event key", "structure key"],
)
def test_a_malformed_routes_file_is_a_configuration_error_naming_it(
    builtin: Path, tmp_path: Path, text: str, message: str
) -> None:
    site = routes_file(tmp_path / "site", text)
    with pytest.raises(ConfigurationError) as caught:
        RouteTable.load("hl7v2", [site, builtin])
    assert str(caught.value).startswith(f"{site / 'hl7v2' / 'routes.toml'}: ")
    assert message in str(caught.value)


def test_an_empty_template_name_switches_a_builtin_route_off(builtin: Path, tmp_path: Path) -> None:
    site = routes_file(tmp_path / "site", '[events]\n"ADT^A08" = ""\n')
    table = RouteTable.load("hl7v2", [site, builtin])
    assert "ADT^A08" not in table.events
    assert table.resolve("ADT^A01", "ADT_A01").template == "ADT"
    # A08 falls back to its structure's route, as an event without a route does.
    assert table.resolve("ADT^A08", "ADT_A01").kind == "structure"


def test_a_routes_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "hl7v2" / "routes.toml"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'[events]\n"ADT^A01" = "\xff"\n')
    with pytest.raises(ConfigurationError) as caught:
        RouteTable.load("hl7v2", [tmp_path])
    assert str(path) in str(caught.value)


def test_the_table_cannot_be_changed() -> None:
    table = RouteTable.load("hl7v2", [REPO / "mappings"])
    with pytest.raises(TypeError):
        table.events["ADT^A01"] = table.events["ADT^A08"]  # type: ignore[index]


# --- through the converter, with the built-in routes ---------------------------------------


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig(validate=False))


def test_builtin_routes(converter: Converter) -> None:
    message = converter.parse(SAMPLE)
    assert converter.route_for(message) == "hl7v2/messages/ADT.j2"


def test_a_forced_root_template(converter: Converter) -> None:
    message = converter.parse(SAMPLE.replace(b"ADT^A08^ADT_A01", b"ADT^A99^ADT_A01"))
    with pytest.raises(UnsupportedMessageError):
        converter.route_for(message)
    assert converter.route_for(message, "ADT") == "hl7v2/messages/ADT.j2"
    assert converter.route_for(message, "hl7v2/messages/ADT.j2") == "hl7v2/messages/ADT.j2"
    conversion = converter.convert_message(
        SAMPLE.replace(b"ADT^A08^", b"ADT^A99^"), root_template="ADT"
    )
    assert conversion.root_template == "hl7v2/messages/ADT.j2"
    assert conversion.message_type == "ADT^A99"


def test_a_forced_root_that_does_not_exist(converter: Converter) -> None:
    message = converter.parse(SAMPLE)
    with pytest.raises(ConfigurationError) as caught:
        converter.route_for(message, "NoSuchRoot")
    assert "hl7v2/messages/NoSuchRoot.j2" in str(caught.value)


@pytest.mark.parametrize(
    ("msh9", "code", "location"),
    [(b"ADT^A99^ADT_A01", "201", "MSH-9.2"), (b"ZZZ^Z01", "200", "MSH-9.1")],
)
def test_unsupported_messages_through_the_converter(
    converter: Converter, msh9: bytes, code: str, location: str
) -> None:
    with pytest.raises(UnsupportedMessageError) as caught:
        converter.convert(SAMPLE.replace(b"ADT^A08^ADT_A01", msh9))
    assert caught.value.hl7_error_code == code
    assert caught.value.location == location
    assert caught.value.control_id == "CHU-ADT-20240316-000102"


def test_an_override_routes_file_reaches_the_converter(tmp_path: Path) -> None:
    site = routes_file(tmp_path, '[events]\n"ADT^A99" = "ADT"\n')
    converter = Converter(ConverterConfig(validate=False, template_dirs=(site,)))
    message = converter.parse(SAMPLE.replace(b"ADT^A08^ADT_A01", b"ADT^A99^ADT_A01"))
    assert converter.route_for(message) == "hl7v2/messages/ADT.j2"
    assert converter.routes.events["ADT^A01"].source == REPO / "mappings/hl7v2/routes.toml"


def test_a_malformed_override_routes_file_fails_the_converter(tmp_path: Path) -> None:
    site = routes_file(tmp_path, "[events]\nbroken")
    with pytest.raises(ConfigurationError) as caught:
        Converter(ConverterConfig(validate=False, template_dirs=(site,)))
    assert str(site / "hl7v2" / "routes.toml") in str(caught.value)
