"""Session 23, the template engine's configuration: old template-cache entries are
deleted without touching those a running process uses (templates/bytecode.py), one
implementation of private directories (converter/private_dirs.py), and every broken
override reported at once (templates/environment.py, failures.py)."""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from converter import ConfigurationError, Converter, ConverterConfig
from converter.templates.bytecode import TemplateBytecodeCache, code_version
from tests.conftest import REPO_ROOT, SAMPLES_DIR
from tests.templates.test_engine_s22 import _code, _probe_templates, convert_in_fresh_process

ADT = SAMPLES_DIR / "hl7v2" / "ADT_A01_crlf.hl7"
DAY = 86400.0


def _age(cache: Path, prefix: str, seconds: float) -> None:
    """Make the configuration ``prefix``'s lock and entries ``seconds`` old: as if its
    last start was then."""
    then = time.time() - seconds
    for path in cache.iterdir():
        if path.name.startswith(prefix):
            os.utime(path, (then, then))


def _prefixes(cache: Path) -> set[str]:
    """The configurations that have entries in ``cache``."""
    return {p.name[:49] for p in cache.iterdir() if p.name.endswith(".jinja")}


def _open(cache: Path, conditions: str) -> TemplateBytecodeCache:
    return TemplateBytecodeCache(cache, conditions)


def _entry(cache: Path, prefix: str, key: str = "0" * 64, suffix: str = "") -> Path:
    path = cache / f"{prefix}-{key}.jinja{suffix}"
    path.write_bytes(b"bytecode")
    path.chmod(0o600)
    return path


def _used(cache: Path, conditions: str) -> str:
    """Open the configuration ``conditions`` with one entry, then close it (its lock
    released) as a process that ends would; returns its prefix."""
    opened = _open(cache, conditions)
    prefix = opened.prefix
    _entry(cache, prefix)
    del opened
    gc.collect()
    assert not _locked(cache / f"{prefix}.lock")
    return prefix


def _locked(path: Path) -> bool:
    with path.open("rb") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


# -- old entries are deleted ------------------------------------------------------------------


def test_the_entries_of_a_replaced_code_map_are_deleted_at_a_later_start(tmp_path: Path) -> None:
    # Before: every code-map change (and every upgrade) left its entries for good.
    cache = tmp_path / "cache"
    site = _probe_templates(tmp_path / "site", "same", "female")
    first = convert_in_fresh_process(ADT, cache, template_dirs=(site,), root="ProbeRoot")
    assert _code(first)["coding"] == [{"code": "female"}]
    [old] = _prefixes(cache)
    _age(cache, old, 2 * DAY)  # the start with the first map, two days ago

    _probe_templates(site, "same", "unknown")  # the map changed; the service restarted
    second = convert_in_fresh_process(ADT, cache, template_dirs=(site,), root="ProbeRoot")
    assert _code(second)["coding"] == [{"code": "unknown"}]
    # That start cannot tell the old configuration from another route's it has yet to
    # build: both were last used by the previous start.
    assert old in _prefixes(cache) and len(_prefixes(cache)) == 2
    [new] = _prefixes(cache) - {old}
    _age(cache, new, DAY)

    third = convert_in_fresh_process(ADT, cache, template_dirs=(site,), root="ProbeRoot")
    assert _code(third)["coding"] == [{"code": "unknown"}]
    assert third["compile"] == 0  # its own entries kept and used
    assert _prefixes(cache) == {new}
    assert not (cache / f"{old}.lock").exists()


def test_another_code_version_s_entries_are_deleted_at_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    older = f"{'0' * 16}-{'1' * 32}"
    assert not code_version().startswith("0" * 16)
    entry = _entry(cache, older)
    (cache / f"{older}.lock").write_bytes(b"")
    kept = _open(cache, "route one")
    assert not entry.exists() and not (cache / f"{older}.lock").exists()
    assert (cache / f"{kept.prefix}.lock").exists()


def test_entries_of_the_version_before_locks_are_deleted(tmp_path: Path) -> None:
    """Entries named by their key alone (the layout before configurations had their own
    names): no process of this version loads them. A temporary file is deleted only when
    its writer must be dead."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    old = cache / f"{'a' * 64}.jinja"
    old.write_bytes(b"x")
    writing = cache / f"{'b' * 64}.jinja5f3kq.tmp"
    writing.write_bytes(b"x")
    abandoned = cache / f"{'c' * 64}.jinjaq1w2e.tmp"
    abandoned.write_bytes(b"x")
    os.utime(abandoned, (time.time() - 2 * 3600,) * 2)
    other = cache / "README"  # not the cache's: left alone
    other.write_text("notes")
    _open(cache, "route one")
    assert not old.exists() and not abandoned.exists()
    assert writing.exists() and other.exists()


def test_a_start_keeps_the_entries_of_routes_it_has_not_built_yet(tmp_path: Path) -> None:
    """A service builds its routes' converters one after the other: the first must not
    delete the second's entries, last used by the previous start weeks ago."""
    cache = tmp_path / "cache"
    one, two = _used(cache, "route one"), _used(cache, "route two")
    _age(cache, one, 30 * DAY)
    _age(cache, two, 30 * DAY + 600)  # built ten minutes before, in that start
    _open(cache, "route one")
    assert _prefixes(cache) == {one, two}


def test_another_process_of_the_same_start_keeps_the_routes_not_built_yet(
    tmp_path: Path,
) -> None:
    """The conversion processes start together: the second to open route one must not
    take the first's use of it (just now) for the previous start's, and delete route
    two's entries, which the first has yet to open."""
    cache = tmp_path / "cache"
    one, two = _used(cache, "route one"), _used(cache, "route two")
    _age(cache, one, 30 * DAY)
    _age(cache, two, 30 * DAY + 600)
    first_process = _open(cache, "route one")
    _open(cache, "route one")  # the second process
    assert _prefixes(cache) == {one, two}
    del first_process


def test_a_later_stopped_service_does_not_make_this_one_s_routes_old(tmp_path: Path) -> None:
    """Another service on the same data_dir, started after this one's last start and
    stopped since: its use is no measure of this service's routes."""
    cache = tmp_path / "cache"
    one, two = _used(cache, "route one"), _used(cache, "route two")
    other = _used(cache, "the other service")
    _age(cache, one, 30 * DAY)
    _age(cache, two, 30 * DAY + 600)
    _age(cache, other, 2 * DAY)
    _open(cache, "route one")
    assert _prefixes(cache) == {one, two, other}


def test_a_configuration_being_opened_does_not_make_the_others_old(tmp_path: Path) -> None:
    """Another process of the same start has just made the lock file of a new
    configuration (and not yet locked it): that is no earlier start's use."""
    cache = tmp_path / "cache"
    one, two = _used(cache, "route one"), _used(cache, "route two")
    _age(cache, one, 30 * DAY)
    _age(cache, two, 30 * DAY + 600)
    (cache / f"{code_version()[:16]}-{'e' * 32}.lock").write_bytes(b"")  # made just now
    _open(cache, "route one")
    assert _prefixes(cache) == {one, two}


def test_entries_another_running_process_uses_are_kept(tmp_path: Path) -> None:
    """Two services on one data_dir with different configurations: the one that starts
    must not delete the running one's entries, however old their last start."""
    cache = tmp_path / "cache"
    running = _used(cache, "the other service")
    _entry(cache, running, "1" * 64, "x7kq2.tmp")  # being written
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from pathlib import Path
                from converter.templates.bytecode import TemplateBytecodeCache
                held = TemplateBytecodeCache(Path({str(cache)!r}), "the other service")
                print("ready", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        _age(cache, running, 30 * DAY)
        _used(cache, "this service")
        _open(cache, "this service")  # its second start: the other is much older
        assert running in _prefixes(cache)
        assert len(list(cache.glob(f"{running}-*.tmp"))) == 1
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    # Stopped, its entries are no longer live: the next start deletes them.
    _open(cache, "this service")
    assert running not in _prefixes(cache)
    assert not list(cache.glob(f"{running}*"))


def test_a_failure_to_delete_old_entries_is_a_warning_not_a_failed_start(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    # What no process can lock: the pruning fails on it.
    (cache / f"{'0' * 16}-{'1' * 32}.lock").mkdir()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("passerelle.template_cache")
    logger.addHandler(handler)  # whatever an earlier test made of "passerelle"
    try:
        converter = Converter(ConverterConfig(template_cache_dir=cache, validate=False))
    finally:
        logger.removeHandler(handler)
    assert converter.convert(ADT.read_bytes())[0].bundle["entry"]
    assert _prefixes(cache)  # the cache works all the same
    [warning] = records
    assert warning.levelno == logging.WARNING
    assert warning.__dict__.get("event") == "template_cache_not_pruned"


def test_the_lock_files_are_private(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    previous = os.umask(0o022)
    try:
        opened = _open(cache, "route one")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((cache / f"{opened.prefix}.lock").stat().st_mode) == 0o600


# -- one implementation of private directories ----------------------------------------------


def test_the_service_and_the_converter_share_one_private_mkdir() -> None:
    import converter.private_dirs
    import converter.templates.bytecode
    import listeners.file_modes

    assert listeners.file_modes.make_private_dirs is converter.private_dirs.make_private_dirs
    assert (
        converter.templates.bytecode.make_private_dirs is converter.private_dirs.make_private_dirs
    )
    assert listeners.file_modes.PRIVATE_DIR == converter.private_dirs.PRIVATE_DIR == 0o700


def test_private_dirs_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    from converter.private_dirs import make_private_dirs

    target = tmp_path / "a" / "b" / "c"
    (tmp_path / "a").mkdir(mode=0o755)
    previous = os.umask(0o022)
    try:
        made = make_private_dirs(target)
    finally:
        os.umask(previous)
    assert made == [tmp_path / "a" / "b", target]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in made)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755  # existing: left alone


# -- every broken override at once ------------------------------------------------------------


def _write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_every_broken_override_is_reported_in_one_error(tmp_path: Path) -> None:
    # Before: only the first one, and the next start stopped on the second.
    site, region = tmp_path / "site", tmp_path / "region"
    cx = _write(site, "hl7v2/datatypes/CX.j2", "ok\n{% if %}\n")
    patient = _write(site, "hl7v2/resources/Patient.j2", '{"a": {{ x | no_such_filter }}}\n')
    _write(site, "hl7v2/resources/Encounter.j2", '{"resourceType": "Encounter"}\n')  # sound
    unreadable = _write(site, "hl7v2/resources/Flag.j2", "")
    unreadable.write_bytes(b'{"text": "\xe9"}')
    hidden = _write(region, "hl7v2/resources/Patient.j2", "{\n\n{{ 1 + }}}\n")
    with pytest.raises(ConfigurationError) as failed:
        Converter(ConverterConfig(template_dirs=(site, region), validate=False))
    lines = str(failed.value).splitlines()
    assert lines[0] == "4 override templates are broken:"
    assert lines[1].startswith(f"  {cx}:2: template syntax error: Expected an expression")
    assert lines[2].startswith(f"  {unreadable}: cannot read template: ")
    assert lines[3] == f"  {patient}:1: template syntax error: No filter named 'no_such_filter'."
    assert lines[4].startswith(f"  {hidden}:3: template syntax error: ")
    assert len(lines) == 5


def test_the_cli_shows_every_broken_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from listeners.cli import main

    site = tmp_path / "site"
    one = _write(site, "hl7v2/datatypes/CX.j2", "{% if %}\n")
    two = _write(site, "hl7v2/resources/Patient.j2", "{{ 1 + }}\n")
    argv = ["convert", str(ADT), "--templates", str(site), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "passerelle: 2 override templates are broken:"
    assert lines[1].startswith(f"  {one}:1: template syntax error: ")
    assert lines[2].startswith(f"  {two}:1: template syntax error: ")


def test_the_service_s_conversion_processes_report_every_broken_override(
    tmp_path: Path,
) -> None:
    """What the service's start shows (``passerelle: …``, exit 2): the error of its
    conversion processes' warm-up, crossing the process boundary whole."""
    from listeners.conversion import ConversionPool

    site = tmp_path / "site"
    one = _write(site, "hl7v2/datatypes/CX.j2", "{% if %}\n")
    two = _write(site, "hl7v2/resources/Patient.j2", "{{ 1 + }}\n")
    pool = ConversionPool(
        {"default": ConverterConfig(template_dirs=(site,), validate=False)}, processes=1
    )
    try:
        with pytest.raises(ConfigurationError) as failed:
            pool.warm_up()
    finally:
        pool.close()
    lines = str(failed.value).splitlines()
    assert lines[0] == "2 override templates are broken:"
    assert lines[1].startswith(f"  {one}:1: template syntax error: ")
    assert lines[2].startswith(f"  {two}:1: template syntax error: ")
