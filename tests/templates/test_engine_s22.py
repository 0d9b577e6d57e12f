"""Session 22, the conversion engine's speed: compiled templates kept on disk between
processes (templates/bytecode.py), without ever loading code compiled from another
source or under another configuration; and the engine's call savings."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from converter import ConfigurationError, Converter, ConverterConfig
from listeners.conversion import ConversionPool
from tests.conftest import REPO_ROOT, SAMPLES_DIR

ADT = SAMPLES_DIR / "hl7v2" / "ADT_A01_crlf.hl7"

#: Converts one file in a fresh interpreter and prints the bundle with how many times
#: Jinja parsed and compiled template source (what the bytecode cache spares).
_CONVERT_ONCE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import jinja2
    from converter import Converter, ConverterConfig

    counts = {"compile": 0, "parse": 0}

    def counting(name, method):
        def counted(*args, **kwargs):
            counts[name] += 1
            return method(*args, **kwargs)
        return counted

    jinja2.Environment.compile = counting("compile", jinja2.Environment.compile)
    jinja2.Environment._parse = counting("parse", jinja2.Environment._parse)
    request = json.loads(sys.argv[1])
    converter = Converter(
        ConverterConfig(
            template_dirs=tuple(Path(d) for d in request["template_dirs"]),
            template_cache_dir=Path(request["cache"]) if request["cache"] else None,
        )
    )
    data = Path(request["input"]).read_bytes()
    bundles = [c.to_json() for c in converter.convert(data, root_template=request["root"])]
    print(json.dumps({"bundles": bundles, **counts}))
    """
)


def convert_in_fresh_process(
    source: Path,
    cache: Path | None,
    *,
    template_dirs: tuple[Path, ...] = (),
    root: str | None = None,
) -> dict[str, Any]:
    request = {
        "input": str(source),
        "cache": str(cache) if cache else None,
        "template_dirs": [str(d) for d in template_dirs],
        "root": root,
    }
    done = subprocess.run(
        [sys.executable, "-c", _CONVERT_ONCE, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_fresh_process_with_a_warm_cache_compiles_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    without = convert_in_fresh_process(ADT, None)
    first = convert_in_fresh_process(ADT, cache)
    second = convert_in_fresh_process(ADT, cache)
    assert without["compile"] > 0 and first["compile"] == without["compile"]
    # Neither compiled nor parsed again (the reuse of renderings reads what it needs of
    # a template from its compiled code).
    assert second["compile"] == 0 and second["parse"] == 0
    assert second["bundles"] == first["bundles"] == without["bundles"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    entries = list(cache.iterdir())
    assert entries and all(stat.S_IMODE(e.stat().st_mode) == 0o600 for e in entries)


def _probe_templates(root: Path, text: str, mapped: str) -> Path:
    """An override directory: a root template emitting a Basic whose code.text is
    ``text`` and whose coding is code ``F`` of a site code map (mapped to ``mapped``),
    computed by Jinja when it compiles the template."""
    (root / "hl7v2" / "messages").mkdir(parents=True, exist_ok=True)
    (root / "hl7v2" / "probe").mkdir(parents=True, exist_ok=True)
    (root / "codemaps").mkdir(parents=True, exist_ok=True)
    (root / "hl7v2" / "messages" / "ProbeRoot.j2").write_text(
        '{% do emit("probe/Probe", pid=msg.PID) %}\n', encoding="utf-8"
    )
    (root / "hl7v2" / "probe" / "Probe.j2").write_text(
        '{"resourceType": "Basic", "_identity": {{ pid[3][1] }}, "code": {"text": '
        + json.dumps(text)
        + ', "coding": [{"code": {{ "F" | map_code("ProbeMap") }}}]}}\n',
        encoding="utf-8",
    )
    (root / "codemaps" / "ProbeMap.csv").write_text(
        f"source_code,target_code\nF,{mapped}\n", encoding="utf-8"
    )
    return root


def _code(result: dict[str, Any]) -> dict[str, Any]:
    bundle = json.loads(result["bundles"][0])
    code: dict[str, Any] = bundle["entry"][0]["resource"]["code"]
    return code


def test_a_changed_template_is_compiled_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    site = _probe_templates(tmp_path / "site", "version one", "female")
    first = convert_in_fresh_process(ADT, cache, template_dirs=(site,), root="ProbeRoot")
    assert _code(first)["text"] == "version one"
    _probe_templates(site, "version two", "female")
    second = convert_in_fresh_process(ADT, cache, template_dirs=(site,), root="ProbeRoot")
    assert _code(second)["text"] == "version two"
    assert second["compile"] == 1  # the changed template only


def test_a_changed_code_map_is_not_answered_by_old_bytecode(tmp_path: Path) -> None:
    """Jinja computes ``"F" | map_code(...)`` when it compiles the template: its answer
    is in the bytecode, which must not outlive the code map it came from."""
    cache = tmp_path / "cache"
    site = _probe_templates(tmp_path / "site", "same", "female")
    first = convert_in_fresh_process(ADT, cache, template_dirs=(site,), root="ProbeRoot")
    assert _code(first)["coding"] == [{"code": "female"}]
    _probe_templates(site, "same", "unknown")  # the template itself unchanged
    second = convert_in_fresh_process(ADT, cache, template_dirs=(site,), root="ProbeRoot")
    assert _code(second)["coding"] == [{"code": "unknown"}]


def test_two_configurations_share_a_cache_without_mixing(tmp_path: Path) -> None:
    """Two routes (one process) with different code maps: each its own entries."""
    cache = tmp_path / "cache"
    one = _probe_templates(tmp_path / "one", "same", "female")
    other = tmp_path / "other"
    (other / "codemaps").mkdir(parents=True)
    (other / "codemaps" / "ProbeMap.csv").write_text("source_code,target_code\nF,other\n")
    data = ADT.read_bytes()

    def coding(*dirs: Path) -> Any:
        config = ConverterConfig(template_dirs=dirs, template_cache_dir=cache)
        bundle = Converter(config).convert(data, root_template="ProbeRoot")[0].bundle
        return bundle["entry"][0]["resource"]["code"]["coding"]

    assert coding(one) == [{"code": "female"}]
    # The same template files, the map overridden by a directory searched first.
    assert coding(other, one) == [{"code": "other"}]
    assert coding(one) == [{"code": "female"}]


def test_the_cache_directory_is_created_private(tmp_path: Path) -> None:
    cache = tmp_path / "state" / "template-cache"
    previous = os.umask(0o022)  # mkdir's default would then be 0755
    try:
        Converter(ConverterConfig(template_cache_dir=cache, validate=False))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701])
def test_a_cache_directory_other_users_may_use_is_refused(tmp_path: Path, mode: int) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    with pytest.raises(ConfigurationError, match="open to other users"):
        Converter(ConverterConfig(template_cache_dir=cache, validate=False))


def test_a_file_in_place_of_the_cache_directory_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        Converter(ConverterConfig(template_cache_dir=cache, validate=False))


def test_the_conversion_processes_use_the_pool_s_cache(tmp_path: Path) -> None:
    """The service's pool gives its directory to the routes' converters, in the real
    conversion processes."""
    cache = tmp_path / "template-cache"
    pool = ConversionPool(
        {"default": ConverterConfig(validate=False)}, processes=1, template_cache_dir=cache
    )
    try:
        result = asyncio.run(pool.convert("default", ADT.read_bytes()))
    finally:
        pool.close()
    assert isinstance(result, list) and result[0].entries > 0
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert any(cache.iterdir())


def test_a_route_s_own_cache_directory_is_kept(tmp_path: Path) -> None:
    own = tmp_path / "own"
    pool = ConversionPool(
        {
            "own": ConverterConfig(template_cache_dir=own),
            "default": ConverterConfig(),
        },
        use_threads=True,
        template_cache_dir=tmp_path / "service",
    )
    try:
        configs = pool._configs
        assert configs["own"].template_cache_dir == own
        assert configs["default"].template_cache_dir == tmp_path / "service"
    finally:
        pool.close()


# -- positions read by the compiled template itself -------------------------------------------


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig(validate=False))


def test_positions_of_hl7_values_are_read_without_the_sandbox(
    converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pid[5][1]`` reads the segment and the value directly: the sandbox's
    ``getitem`` frame was a third of the calls a template made."""
    message = converter.parse(converter.split(ADT.read_bytes())[0].source)
    environment = converter.templates.environment
    asked: list[Any] = []
    original = type(environment).getitem

    def counting(self: Any, obj: Any, argument: Any) -> Any:
        asked.append(argument)
        return original(self, obj, argument)

    monkeypatch.setattr(type(environment), "getitem", counting)
    template = environment.from_string("[{{ pid[5][1] }}, {{ pid[3][1][1] }}, {{ (pid or x)[7] }}]")
    written = json.loads(template.render(pid=message.PID, x=None))
    assert written == [str(message.PID[5][1]), str(message.PID[3][1][1]), str(message.PID[7])]
    assert asked == []


def test_other_subscripts_keep_the_sandbox_s_answers(converter: Converter) -> None:
    message = converter.parse(converter.split(ADT.read_bytes())[0].source)
    template = converter.templates.environment.from_string(
        '[{{ pid[0] is defined }}, {{ pid["nosuch"] is defined }}, {{ items[1] }}, '
        "{{ mapping[1] }}, {{ items[-1] }}, {{ items[5] is defined }}]"
    )
    written = json.loads(template.render(pid=message.PID, items=[5, 6], mapping={1: "one"}))
    # HL7 positions start at 1: pid[0] is undefined, as the sandbox answers it.
    assert written == [False, False, 6, "one", 6, False]


def test_the_samples_convert_the_same_as_with_jinja_s_own_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every sample's bundle (or failure) is the same as with Jinja's own code for
    ``[position]``, for a CDA node's children, for the names a template reads and for
    the calls of trusted functions."""
    from jinja2.compiler import CodeGenerator

    from converter.templates import codegen

    for hook in ("visit_Getitem", "visit_Getattr", "enter_frame", "visit_Call"):
        monkeypatch.setattr(codegen.JsonCodeGenerator, hook, getattr(CodeGenerator, hook))
    jinja_s_own = Converter(ConverterConfig(validate=False))
    samples = sorted((SAMPLES_DIR / "hl7v2").glob("*.hl7"))
    samples += sorted((SAMPLES_DIR / "cda").glob("*.xml"))
    assert len(samples) > 40
    # Templates compile at their first use: all of Jinja's while patched, ours after.
    expected = {sample.name: _outcome(jinja_s_own, sample.read_bytes()) for sample in samples}
    monkeypatch.undo()
    ours = Converter(ConverterConfig(validate=False))
    for sample in samples:
        assert _outcome(ours, sample.read_bytes()) == expected[sample.name], sample.name


def test_names_are_read_in_one_call(converter: Converter) -> None:
    """A template reading several names from its context makes one call for them,
    whether the context holds variables of its own yet (a macro called after a
    top-level ``set``) or not; the values are those Jinja's ``resolve`` gives."""
    environment = converter.templates.environment
    source = (
        "{% macro m() %}[{{ a }}, {{ b }}, {{ c is defined }}, {{ d }}]{% endmacro %}"
        "{% set d = 4 %}[{{ a }}, {{ b }}, {{ c is defined }}, {{ m() }}]"
    )
    code = environment.compile(source, raw=True)
    assert "resolve_names(('a', 'b', 'c'" in code and "resolve('a')" not in code
    written = json.loads(environment.from_string(source).render(a=1, b=None))
    assert written == [1, None, False, [1, None, False, 4]]


def _outcome(converter: Converter, data: bytes) -> Any:
    try:
        return [(c.to_json(), c.warnings) for c in converter.convert(data)]
    except Exception as exc:  # compared, not handled
        return (type(exc).__name__, str(exc))


def test_children_of_cda_nodes_are_read_without_the_sandbox(
    converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from converter.cda import CdaDocument, PathCache

    document = CdaDocument(
        (SAMPLES_DIR / "cda" / "CCD_lefevre-camille.xml").read_bytes(), PathCache()
    )
    environment = converter.templates.environment
    asked: list[str] = []
    original = type(environment).getattr

    def counting(self: Any, obj: Any, attribute: str) -> Any:
        asked.append(attribute)
        return original(self, obj, attribute)

    monkeypatch.setattr(type(environment), "getattr", counting)
    template = environment.from_string(
        "[{{ doc.code['code'] }}, {{ doc.recordTarget.patientRole.id['extension'] }}, "
        "{{ doc.nosuchchild | string }}, {{ doc.nosuchchild is defined }}, {{ ns.a }}, "
        "{{ mapping.b }}]"
    )
    root = document.root
    written = json.loads(
        template.render(
            doc=root, ns=converter.templates.environment.globals["namespace"](a=1), mapping={"b": 2}
        )
    )
    assert written == [
        str(root.code["code"]),
        str(root.recordTarget.patientRole.id["extension"]),
        None,
        True,
        1,
        2,
    ]
    # Only what is not a node went through the sandbox.
    assert asked == ["a", "b"]


def test_a_cache_that_cannot_be_written_does_not_fail_the_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import tempfile

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", disk_full)
    config = ConverterConfig(template_cache_dir=tmp_path / "cache", validate=False)
    conversion = Converter(config).convert(ADT.read_bytes())[0]
    assert conversion.bundle["entry"]
    assert not list((tmp_path / "cache").glob("*.jinja*"))  # no entry (its lock file only)


def test_a_damaged_cache_entry_is_compiled_again(tmp_path: Path) -> None:
    from jinja2.bccache import bc_magic

    cache = tmp_path / "cache"
    config = ConverterConfig(template_cache_dir=cache, validate=False)
    expected = Converter(config).convert(ADT.read_bytes())[0].to_json()
    for entry in cache.iterdir():
        entry.write_bytes(bc_magic + b"\x80\x02garbage")  # a checksum that is no pickle
    assert Converter(config).convert(ADT.read_bytes())[0].to_json() == expected


# -- the templates a message emits many times stay reusable ----------------------------------
_SHARED_TEMPLATES = [
    "hl7v2/resources/Practitioner.j2",
    "hl7v2/resources/Organization.j2",
    "hl7v2/resources/Location.j2",
    "hl7v2/resources/PractitionerRoleRequester.j2",
    "cda/resources/Practitioner.j2",
    "cda/resources/Organization.j2",
    "cda/resources/Location.j2",
    "cda/resources/Device.j2",
]


@pytest.mark.parametrize("name", _SHARED_TEMPLATES)
def test_the_templates_emitted_many_times_per_message_are_reused(name: str) -> None:
    # contact.j2 read NK1-31/40/41 through a loop variable (nk1[field]): every template
    # importing it (Practitioner.j2 once it took ORC-24's address, Organization.j2) was
    # rendered again at each OBX-16 of a message, 9,000 more calls for an ORU of 20 results.
    import jinja2

    from converter.templates.memo import position_facts

    mappings = Path(__file__).resolve().parents[2] / "mappings"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(mappings),
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
    )

    def blind(template: str, seen: set[str], imported: bool) -> bool:
        if template in seen:
            return True
        seen.add(template)
        source = env.loader.get_source(env, template)[0]  # type: ignore[union-attr]
        as_root, as_imported, imports = position_facts(env.parse(source))
        if not (as_imported if imported else as_root):
            return False
        return all(blind(other, seen, True) for other in imports)

    assert blind(name, set(), imported=False), name
