"""The configuration example in the README is a valid configuration."""

from __future__ import annotations

from pathlib import Path

from listeners.config import Secret, load_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_example_loads(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    example = text.split("### Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    for name in ("server.pem", "server.key", "senders-ca.pem"):
        (tmp_path / name).write_text("placeholder")
    (tmp_path / "api_key").write_text("k3y\n")
    (tmp_path / "fhir").write_text("s3cret\n")
    example = example.replace("/run/secrets/api_key", str(tmp_path / "api_key"))
    example = example.replace("/run/secrets/fhir", str(tmp_path / "fhir"))
    (tmp_path / "passerelle.toml").write_text(example, encoding="utf-8")
    config = load_config(tmp_path / "passerelle.toml", env={})
    assert config.mllp.listeners[0].name == "chu"
    assert config.mllp.listeners[0].tls is not None
    assert config.http.api_key == Secret("k3y")
    default = config.destinations["default"]
    assert default.auth.kind == "oauth2" and default.auth.client_secret == Secret("s3cret")
    route = config.route_for(application="ANY", facility="CHU-LYON", listener="chu")
    assert route.destination == "lyon"
    assert route.converter.id_namespace == "chu-lyon"
    assert config.route_for(application="X", facility="OTHER", listener="chu").name == "default"
    lab = config.route_for(application="SIL-GLYCINE", facility="CHU-LYON", listener="chu")
    assert lab.name == "lab" and lab.converter.request_modes[0] == ("Patient", "conditional-create")
    training = config.route_for(application="X", facility="CHU-LYON-FORMATION", listener="chu")
    assert training.processing_ids == ("T",) and training.destination == "recette"
    assert config.delivery.conversion_timeout == 60
