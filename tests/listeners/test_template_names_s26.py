"""A template not found may be named after a patient: a site template that builds an
include's name from a field (``{% include "site/" ~ pid[5] %}``). The error's reason
named it (``template 'site/ZZSECRETNAME.j2' not found``), and so did the service's logs
and dead-letter listings; the reason now says ``template not found`` and the name is the
error's ``detail``, which only ``dead-letters show --payload`` (which shows the message
itself) and ``--verbose`` print. Dead letters stored with the old wording are shown
without the name too.

Real parts throughout: the conversion pool converting with the override, the SQLite queue
holding the dead letter, the ``dead-letters`` command reading it, the log formatters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from converter import Converter, ConverterConfig, TemplateError
from listeners.config import load_config
from listeners.conversion import ConversionFailure, ConversionPool
from listeners.dead_letters_cli import run_dead_letters
from listeners.logs import JsonFormatter, TextFormatter, describe_exception
from listeners.queue.base import Envelope
from listeners.queue.sqlite import SqliteQueue

PATIENT = "ZZSECRETNAME"
MESSAGE = (
    "MSH|^~\\&|APP|FAC|PASS|GHT|20240314083512+0100||ADT^A01^ADT_A01|CID-S26|P|2.5.1\r"
    f"PID|1||ID-S26^^^FAC&1.2.250.1.999&ISO^MR||{PATIENT}^ZZGIVEN||19850312|F\r"
    "PV1|1|I\r"
).encode()


def _override(folder: Path) -> Path:
    template = folder / "hl7v2" / "resources" / "Patient.j2"
    template.parent.mkdir(parents=True)
    template.write_text('{% include "site/" ~ (pid[5] | string) ~ ".j2" %}\n')
    return folder


def _dead_letter(tmp_path: Path, *, reason: str | None = None) -> Path:
    """The service's configuration, its queue holding the message dead-lettered with the
    error the conversion pool gave it (with ``reason`` instead, when given: a record
    stored by an earlier version)."""
    maps = _override(tmp_path / "maps")
    (tmp_path / "passerelle.toml").write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()

    async def run() -> None:
        pool = ConversionPool(
            {"default": ConverterConfig(template_dirs=(maps,))},
            processes=1,
            use_threads=True,
            template_cache_dir=tmp_path / "cache",
        )
        try:
            failure = await pool.convert("default", MESSAGE)
        finally:
            pool.close()
        assert isinstance(failure, ConversionFailure)
        assert failure.kind == "TemplateError"
        assert PATIENT not in failure.reason
        assert failure.detail == f"template 'site/{PATIENT}.j2'"
        record = failure.as_record() | {"stage": "conversion"}
        if reason is not None:
            record["reason"] = reason
        queue = SqliteQueue(tmp_path / "data" / "queue.db")
        await queue.start()
        try:
            envelope = Envelope(
                payload=MESSAGE,
                sender="mllp/APP^FAC",
                listener="mllp",
                received_at=time.time(),
                ordering_key="k",
                control_id="CID-S26",
                message_type="ADT^A01^ADT_A01",
                route="default",
            )
            await queue.put_dead_letter(envelope, record)
        finally:
            await queue.close()

    asyncio.run(run())
    return tmp_path / "passerelle.toml"


def _command(config: Path, capsys: pytest.CaptureFixture[str], **args: object) -> str:
    namespace = argparse.Namespace(amqp=False, limit=50, offset=0, id=None, payload=False)
    for key, value in args.items():
        setattr(namespace, key, value)
    assert run_dead_letters(namespace, load_config(config, env={})) == 0
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_list_and_show_withhold_the_template_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _dead_letter(tmp_path)
    listing = _command(config, capsys, dl_command="list")
    assert "TemplateError: template not found" in listing
    assert PATIENT not in listing
    shown = _command(config, capsys, dl_command="show", id="1")
    assert PATIENT not in shown
    error = json.loads(shown)["error"]
    assert error["reason"] == "template not found"
    # Where it failed is still said: the override's line that asked for it.
    assert error["template"].endswith("hl7v2/resources/Patient.j2:1")


def test_show_payload_gives_the_name_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _dead_letter(tmp_path)
    shown = _command(config, capsys, dl_command="show", id="1", payload=True)
    head = shown.split("--- message ---")[0]
    assert json.loads(head)["error"]["detail"] == f"template 'site/{PATIENT}.j2'"


def test_a_dead_letter_stored_with_the_old_wording_is_listed_without_the_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _dead_letter(tmp_path, reason=f"template 'site/{PATIENT}.j2' not found")
    listing = _command(config, capsys, dl_command="list")
    assert "TemplateError: template not found" in listing
    assert PATIENT not in listing
    assert PATIENT not in _command(config, capsys, dl_command="show", id="1")
    shown = _command(config, capsys, dl_command="show", id="1", payload=True)
    assert f"template 'site/{PATIENT}.j2' not found" in shown.split("--- message ---")[0]


def _template_error(tmp_path: Path) -> TemplateError:
    converter = Converter(ConverterConfig(template_dirs=(_override(tmp_path / "maps"),)))
    with pytest.raises(TemplateError) as caught:
        converter.convert(MESSAGE)
    assert PATIENT not in str(caught.value)
    assert caught.value.detail == f"template 'site/{PATIENT}.j2'"
    return caught.value


def _record(error: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "passerelle.test",
        logging.ERROR,
        __file__,
        1,
        "conversion failed",
        None,
        (type(error), error, error.__traceback__),
    )


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_a_logged_template_error_keeps_the_name_out(
    tmp_path: Path, formatter: logging.Formatter
) -> None:
    error = _template_error(tmp_path)
    line = formatter.format(_record(error))
    assert PATIENT not in line
    assert "template not found" in line
    assert "(MSH-10 CID-S26)" in line  # the rest of our text is still there


def test_describe_exception_keeps_the_name_out(tmp_path: Path) -> None:
    text = describe_exception(_template_error(tmp_path))
    assert text.startswith("TemplateError at ")
    assert PATIENT not in text and "template not found" in text
