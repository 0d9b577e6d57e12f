"""Session 34: ``passerelle convert --jobs N`` converts in N processes, and nothing else
changes: the same bundle files, the same lines in the same order, the same summary and
exit status as one process. Stopped (SIGTERM, Ctrl-C to the process group), it ends as
one process does and leaves no conversion process behind; a conversion process killed
from outside (the kernel's OOM killer) loses nothing: what it and the others were
converting is converted again. Real processes of the installed console script."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from converter import ConversionError, ConverterConfig
from converter.cli_jobs import PROCESS_DIED, JobPool, convert_in_worker
from converter.cli_work import Converted, ConvertOptions, Work
from converter.heap import YOUNG_THRESHOLD
from tests.listeners.service.support import adt
from tests.support.stop_signals import ENV, PASSERELLE, REPO, big_oru, left_over

SAMPLES = REPO / "samples"
#: What the run passes its conversion processes, for the tests that drive a JobPool.
OPTIONS = ConvertOptions("auto", None, 50_000_000, frozenset({"hl7v2", "cda"}))
CCD = SAMPLES / "cda" / "CCD_lefevre-camille.xml"
LINUX_ONLY = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="finds the conversion processes in /proc"
)


def convert(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PASSERELLE), "convert", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=timeout,
        check=False,
    )


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every kind of input a run meets: messages, a batch file, CDA documents, a damaged
    message, a README, an editor backup."""
    folder = tmp_path_factory.mktemp("mixed")
    for name in (
        "ADT_A01_admission-full.hl7",
        "ORU_R01_20-obx.hl7",
        "batch_ADT.hl7",
        "VXU_V04_immunization.hl7",
        "MDM_T02_discharge-summary.hl7",
    ):
        (folder / name).write_bytes((SAMPLES / "hl7v2" / name).read_bytes())
    for name in ("CCD_lefevre-camille.xml", "Unstructured_nguyen-lea_pdf.xml"):
        (folder / name).write_bytes((SAMPLES / "cda" / name).read_bytes())
    (folder / "damaged.hl7").write_bytes(b"MSH|^~\\&|LAB\rPID|1\r")
    (folder / "README").write_text("not a message\n")
    (folder / "ADT_A01.hl7~").write_bytes(
        (SAMPLES / "hl7v2" / "ADT_A08_update-patient.hl7").read_bytes()
    )
    return folder


@pytest.mark.parametrize("layout", [(), ("--pretty",)], ids=["compact", "pretty"])
def test_jobs_write_the_same_bundles_and_lines_as_one_process(
    mixed: Path, tmp_path: Path, layout: tuple[str, ...]
) -> None:
    """The processes send the bundles back as text, in the run's layout."""
    alone = convert(mixed, "--out", tmp_path / "alone", *layout)
    jobs = convert(mixed, "--out", tmp_path / "jobs", "--jobs", "3", *layout)
    assert alone.returncode == 1, alone.stderr  # the damaged message
    assert (jobs.returncode, jobs.stderr) == (alone.returncode, alone.stderr)
    assert "FAILED" in jobs.stderr and "SKIPPED" in jobs.stderr
    assert files(tmp_path / "jobs") == files(tmp_path / "alone")
    assert any(name.startswith("batch_ADT.2") for name in files(tmp_path / "jobs"))


def test_jobs_print_a_batch_file_on_stdout_in_order(tmp_path: Path) -> None:
    batch = SAMPLES / "hl7v2" / "batch_ADT.hl7"
    copy = tmp_path / "again.hl7"
    copy.write_bytes(batch.read_bytes())
    alone = convert(batch, copy)
    jobs = convert(batch, copy, "--jobs", "2")
    assert alone.returncode == 0, alone.stderr
    assert (jobs.returncode, jobs.stdout, jobs.stderr) == (0, alone.stdout, alone.stderr)


def test_one_batch_file_converts_its_messages_in_the_processes(tmp_path: Path) -> None:
    """A backfill often is one file: its messages are what the processes share."""
    batch = tmp_path / "backfill.hl7"
    batch.write_bytes(b"".join(adt(f"BATCH-{n}") for n in range(12)))
    alone = convert(batch, "--out", tmp_path / "alone")
    jobs = convert(batch, "--out", tmp_path / "jobs", "--jobs", "2")
    assert alone.returncode == 0, alone.stderr
    assert (jobs.returncode, jobs.stderr) == (0, alone.stderr)
    written = files(tmp_path / "jobs")
    assert written == files(tmp_path / "alone")
    assert sorted(written)[:2] == ["backfill.1.json", "backfill.10.json"]
    assert len(written) == 12


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_jobs_must_be_a_positive_count(value: str) -> None:
    result = convert(CCD, "--jobs", value)
    assert result.returncode == 2
    assert "--jobs" in result.stderr


# -- stopped and killed --------------------------------------------------------------------------
@pytest.fixture
def many_ccds(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    document = CCD.read_bytes()
    for number in range(150):
        (folder / f"ccd{number:03d}.xml").write_bytes(document)
    return folder


def conversion_processes(pid: int) -> list[int]:
    """The processes the run spawned to convert (not its resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in command:
                found.append(int(child))
    return found


def start(folder: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(PASSERELLE), "convert", str(folder), "--out", str(out), "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=ENV,
        start_new_session=True,  # its own process group: what a terminal's Ctrl-C reaches
    )


def wait_for_bundles(out: Path, process: subprocess.Popen[str], count: int = 1) -> None:
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.json"))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no bundle written"
        time.sleep(0.02)


def assert_group_gone(group: int) -> None:
    """No process of the run's group is left (its conversion processes included)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "processes of the run are still running"
        time.sleep(0.05)


@pytest.fixture
def long_conversions(tmp_path: Path) -> Path:
    """Three documents, then two ORUs of 30,000 results: a conversion process is busy
    with each for ~20 s."""
    folder = tmp_path / "long"
    folder.mkdir()
    for number in range(3):
        (folder / f"a{number}.xml").write_bytes(CCD.read_bytes())
    for number in range(2):
        (folder / f"b{number}.hl7").write_bytes(big_oru(30_000))
    return folder


@LINUX_ONLY
@pytest.mark.parametrize(
    ("send", "status", "verb"),
    [
        (lambda p: os.kill(p.pid, signal.SIGTERM), 143, "terminated"),
        (lambda p: os.killpg(p.pid, signal.SIGINT), 130, "interrupted"),
    ],
    ids=["sigterm", "ctrl-c"],
)
def test_a_stopped_run_ends_at_once_and_leaves_no_process(
    long_conversions: Path, tmp_path: Path, send: object, status: int, verb: str
) -> None:
    """Stopped while its processes convert the long ORUs: it ends within seconds (they
    are stopped, not waited for: ``docker stop`` kills after 10 s), says how far it
    went, and leaves no process and no hidden file behind."""
    out = tmp_path / "out"
    process = start(long_conversions, out)
    wait_for_bundles(out, process, count=3)
    time.sleep(0.5)
    assert len(conversion_processes(process.pid)) == 2
    sent = time.monotonic()
    send(process)  # type: ignore[operator]
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - sent < 8, "the run waited for its conversions"
    assert process.returncode == status, stderr
    assert f"{verb} after 3 of 5 inputs" in stderr
    assert "Traceback" not in stderr
    assert left_over(out) == []
    assert sorted(files(out)) == ["a0.json", "a1.json", "a2.json"]
    assert_group_gone(process.pid)


@LINUX_ONLY
def test_ctrl_c_while_the_processes_start_prints_no_traceback(
    many_ccds: Path, tmp_path: Path
) -> None:
    """A terminal's Ctrl-C reaches every process of the group, the conversion processes
    still importing included: none may print a KeyboardInterrupt traceback. (They are
    stopped at once, which may hide one: the signals are also blocked while they start,
    a race this test may not hit.)"""
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        process = start(many_ccds, out)
        deadline = time.monotonic() + 60
        while not conversion_processes(process.pid):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no conversion process started"
            time.sleep(0.005)
        time.sleep(0.1 * attempt)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert "interrupted after 0 of 150 inputs" in stderr
        assert_group_gone(process.pid)


@LINUX_ONLY
def test_a_killed_conversion_process_loses_nothing(many_ccds: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = start(many_ccds, out)
    wait_for_bundles(out, process)
    victims = conversion_processes(process.pid)
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "converted 150, failed 0" in stderr
    written = files(out)
    assert len(written) == 150
    assert len(set(written.values())) == 1  # the same document: the same bundle
    assert_group_gone(process.pid)


# -- an input that kills its conversion process ------------------------------------------------
#: Marks the message the task below dies on, as an input that crashes a library would.
DEADLY = b"ZZZ|KILLS-ITS-PROCESS"


def dies_on_deadly(work: Work) -> Converted | ConversionError:
    """Run in the conversion processes (pickled by name): dies on the marked message."""
    if DEADLY in work.data:
        os._exit(9)
    return convert_in_worker(work)


def test_only_the_input_that_kills_its_process_fails() -> None:
    """Every Work in flight when a process died is converted again alone: the one that
    kills its process again fails with that reason, the others convert."""
    works = [Work("hl7v2", adt(f"DIE-{n}")) for n in range(8)]
    works[3] = Work("hl7v2", works[3].data + DEADLY)
    pool = JobPool(ConverterConfig(), OPTIONS, 2, task=dies_on_deadly)
    try:
        pending = [pool.submit(work) for work in works]
        results = [pool.result(one) for one in pending]
        # The pool goes on converting after it.
        after = pool.result(pool.submit(works[0]))
    finally:
        pool.close()
    failed = [n for n, result in enumerate(results) if isinstance(result, ConversionError)]
    assert failed == [3]
    assert str(results[3]) == PROCESS_DIED
    assert all(isinstance(result, Converted) for n, result in enumerate(results) if n != 3)
    assert isinstance(after, Converted)
    assert after.control_id == results[0].control_id  # type: ignore[union-attr]


def heap_in_worker(work: Work) -> tuple[int, int]:
    """Run in a conversion process: its collector's settings."""
    return gc.get_freeze_count(), gc.get_threshold()[0]


def test_conversion_processes_settle_their_heap() -> None:
    """Each conversion process freezes the converter it built, as the service's do."""
    pool = JobPool(ConverterConfig(), OPTIONS, 1, task=heap_in_worker)  # type: ignore[arg-type]
    try:
        frozen, young = pool.result(pool.submit(Work("hl7v2", b"")))  # type: ignore[misc]
    finally:
        pool.close()
    assert frozen > 20_000
    assert young == YOUNG_THRESHOLD


def test_a_bug_while_reading_an_input_fails_that_input_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop reads ahead of what it writes: a bug in reading one input is that input's
    failure line, in its place, and the others still convert."""
    from converter import cli, cli_convert

    real = cli_convert.read_input

    def planted(item: Any, **kwargs: Any) -> bytes | None:
        if item.label.endswith("b.hl7"):
            raise KeyError("DUPONT Marie")
        return real(item, **kwargs)

    monkeypatch.setattr(cli_convert, "read_input", planted)
    sample = (SAMPLES / "hl7v2" / "ADT_A08_update-patient.hl7").read_bytes()
    for name in ("a.hl7", "b.hl7", "c.hl7"):
        (tmp_path / name).write_bytes(sample)
    assert cli.main(["convert", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert lines == [
        f"FAILED {tmp_path / 'b.hl7'} ConversionError: internal error KeyError at "
        + lines[0].rsplit(" at ", 1)[1]
    ]
    assert "DUPONT" not in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "c.json"]


MISSING_OVERRIDES = """
import shutil, sys
from pathlib import Path
from converter import ConfigurationError, ConverterConfig
from converter.cli_jobs import JobPool
from converter.cli_work import ConvertOptions, Work

if __name__ == "__main__":
    overrides = Path(sys.argv[1])
    options = ConvertOptions("auto", None, 50_000_000, frozenset({"hl7v2", "cda"}))
    pool = JobPool(ConverterConfig(template_dirs=(overrides,)), options, 2)
    shutil.rmtree(overrides)  # gone before any conversion process starts
    message = Path(sys.argv[2]).read_bytes()
    try:
        pool.result(pool.submit(Work("hl7v2", message)))
    except ConfigurationError as exc:
        print("ConfigurationError", "does not exist" in str(exc) or str(exc))
    finally:
        pool.stop()
"""


def test_an_override_folder_gone_before_the_processes_start_is_a_usage_error(
    tmp_path: Path,
) -> None:
    """What the run's process would say loading it (exit 2), not every input failing as
    if its process had died."""
    overrides = tmp_path / "maps"
    (overrides / "hl7v2").mkdir(parents=True)
    sample = SAMPLES / "hl7v2" / "ADT_A08_update-patient.hl7"
    result = subprocess.run(
        [sys.executable, "-c", MISSING_OVERRIDES, str(overrides), str(sample)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ConfigurationError", "True"], result.stdout + result.stderr


def test_inputs_that_all_kill_their_process_all_fail_and_the_pool_ends() -> None:
    """Every Work kills its process: each fails after being tried alone, and the pool
    ends. (A run once hung replacing a broken executor that had started a process as it
    broke; that race is not reproduced here: JobPool now ends every process itself
    instead of waiting for the executor.)"""
    works = [Work("hl7v2", adt(f"DIE-{n}") + DEADLY) for n in range(5)]
    pool = JobPool(ConverterConfig(), OPTIONS, 2, task=dies_on_deadly)
    try:
        results = [pool.result(one) for one in [pool.submit(work) for work in works]]
    finally:
        pool.close()
    assert [str(result) for result in results] == [PROCESS_DIED] * 5


def test_one_process_reads_each_input_after_the_line_of_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --jobs the loop reads one input ahead at most, skipped ones included: a
    folder of files that are no messages was read whole before its first line."""
    from converter import cli, cli_convert

    events: list[str] = []
    real_read = cli_convert.read_input

    def read(item: Any, **kwargs: Any) -> bytes | None:
        events.append("read")
        return real_read(item, **kwargs)

    monkeypatch.setattr(cli_convert, "read_input", read)
    monkeypatch.setattr(cli_convert, "_say", lambda line: events.append("say"))
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text("not a message\n")
    assert cli.main(["convert", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert events == ["read", "say"] * 3
