"""CPU-bound intake work kept off the event loop (session 21): ``POST /$convert-data``'s
Parameters body, ``POST /convert``'s message count and the AMQP consumer's compressed
bodies. While such work runs on the loop, every MLLP ACK, ``/ready`` answer and delivery
waits; each test measures the loop's longest stall against the time the same work takes
on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import random
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from listeners import json_steps
from listeners.amqp.body import decode_content
from listeners.http import api, bodies
from listeners.http.bodies import ParametersRefused, count_messages, read_parameters
from tests.listeners.service.support import adt, latin_name_adt, make_config, running
from tests.support.loop_stall import longest_stall
from tests.support.stop_signals import big_oru

#: The HTTP API's body limit, less room for the Parameters around ``inputData``.
_HTTP_BODY_CAP = 20 * 1024 * 1024 - 64 * 1024

_CLIENT = (
    "import sys, httpx\n"
    "data = open(sys.argv[2], 'rb').read()\n"
    "response = httpx.post(sys.argv[1], content=data, timeout=600,"
    " headers={'content-type': 'application/fhir+json'})\n"
    "open(sys.argv[3], 'wb').write(response.content)\n"
    "print(response.status_code)\n"
)


def _parameters(notes: int) -> bytes:
    """A $convert-data body whose inputData holds an ADT with ``notes`` NTE segments of
    accented text (escaped as \\u00e9… in the JSON, as Python's json writes it) and a
    second MSH at its end: refused (400, two messages) once all of it is read."""
    note = "NTE|{}||Évolution favorable, Mme Zoé Lefèvre reçue à 10h; contrôle à J+8.\r"
    text = adt("OFF-1").decode() + "".join(note.format(n) for n in range(notes))
    text += adt("OFF-2").decode()
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputData", "valueString": text},
            {"name": "inputDataType", "valueString": "Hl7v2"},
        ],
    }
    return json.dumps(parameters).encode()


def _reading_time(body: bytes) -> float:
    """The fastest of two inline readings of ``body``: what the loop would stand still."""
    took = []
    for _ in range(2):
        began = time.perf_counter()
        # The two messages: refused (ParametersRefused) after the whole reading.
        with contextlib.suppress(ParametersRefused):
            read_parameters(body, default_charset="utf-8", max_messages=100)
        took.append(time.perf_counter() - began)
    return min(took)


def _parameters_sized_for_this_machine(seconds: float) -> tuple[bytes, float]:
    """A body that takes ``seconds`` to read here, or the largest the API takes (a fast
    machine reads 20 MB in less: the stall is measured against what it does take)."""
    per_note = (len(_parameters(2000)) - len(_parameters(1000))) / 1000
    largest = int((_HTTP_BODY_CAP - len(_parameters(0))) / per_note)
    while len(_parameters(largest)) > _HTTP_BODY_CAP:  # longer note numbers
        largest = int(largest * 0.98)
    notes = min(20_000, largest)
    while True:
        body = _parameters(notes)
        took = _reading_time(body)
        if took >= seconds or notes >= largest:
            return body, took
        notes = min(math.ceil(notes * 1.5 * seconds / took), largest)


def test_a_large_convert_data_body_is_read_without_stalling_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # json.loads, the inputData's encoding and the message count (a regular expression
    # tried at every offset: 1.3 s for 20 MB) ran on the service's event loop. The client
    # runs in its own process, so that its writing does not take the GIL from the service.
    body, reading = _parameters_sized_for_this_machine(0.4)
    source = tmp_path / "parameters.json"
    source.write_bytes(body)
    answer = tmp_path / "answer.json"
    # Read in steps, 20 MB now take ~0.1 s here, not far above the stall of receiving
    # them: where the reading runs is checked directly, the stall only against a bound.
    threads: list[int] = []

    def reading_thread(*args: Any, **named: Any) -> Any:
        threads.append(threading.get_ident())
        return read_parameters(*args, **named)

    monkeypatch.setattr(api, "read_parameters", reading_thread)
    with running(make_config(tmp_path / "service")) as service:
        loop = service._loop
        loop_thread = asyncio.run_coroutine_threadsafe(_thread_ident(), loop).result(10)

        async def future() -> asyncio.Future[None]:
            return loop.create_future()

        work = service.call(future())
        stall = asyncio.run_coroutine_threadsafe(longest_stall(work), loop)
        client = subprocess.run(
            [sys.executable, "-c", _CLIENT, f"{service.http_url}/$convert-data", source, answer],
            capture_output=True,
            text=True,
            timeout=300,
        )
        loop.call_soon_threadsafe(work.set_result, None)
        longest = stall.result(60)
    assert client.stdout.strip() == "400", client.stderr
    outcome = json.loads(answer.read_bytes())
    # Refused for what only the end of inputData tells: all of it was read.
    assert "holds 2 messages" in outcome["issue"][0]["diagnostics"]
    assert threads and loop_thread not in threads, (threads, loop_thread)
    assert longest < max(reading / 3, 0.25), (longest, reading, len(body))


async def _thread_ident() -> int:
    return threading.get_ident()


def _best_of_three(work: Callable[[], object]) -> float:
    took = []
    for _ in range(3):
        began = time.perf_counter()
        work()
        took.append(time.perf_counter() - began)
    return min(took)


def test_counting_the_messages_of_a_large_body_costs_about_a_search_for_msh() -> None:
    # POST /convert counts a body's messages before converting any (http.max_messages).
    # The regular expression that did had no literal start, was tried at every offset and
    # took 1.3 s for one 20 MB message, on the event loop; a search for "MSH" takes 30 ms.
    message = big_oru(1000)
    data = message * (20 * 1024 * 1024 // len(message))
    data = data.replace(b"\rMSH", b"\rMSX")  # one message of 20 MB
    assert count_messages(data, "hl7v2", 100) == 1
    assert count_messages(data + message, "hl7v2", 100) == 2
    counting = _best_of_three(lambda: count_messages(data, "hl7v2", 100))
    searching = _best_of_three(lambda: data.count(b"MSH"))
    assert counting < 5 * searching, (counting, searching)


# -- compressed AMQP bodies: time linear in the members -------------------------------------
@pytest.mark.parametrize(("member", "count"), [(b"", 40_000), (b"MSH|" + b"a" * 1020, 4_000)])
def test_a_body_of_many_gzip_members_decodes_in_time_linear_in_its_size(
    member: bytes, count: int
) -> None:
    # RFC 1952 allows any number of members. Each member's output was added to the whole
    # (copied again: 4,000 members of 1 KB took 3.4 s) and zlib was handed the rest of the
    # body for each member, copying it (40,000 empty members, 800 KB: 2.2 s; 10 MB,
    # under amqp.max_message_bytes: minutes), on the event loop.
    compressed = gzip.compress(member)
    body = compressed * count
    limit = 10 * 1024 * 1024
    assert decode_content(body, "gzip", limit) == member * count

    def each_member_alone() -> None:
        for _ in range(count):
            inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
            inflater.decompress(compressed, limit)

    decoding = _best_of_three(lambda: decode_content(body, "gzip", limit))
    floor = _best_of_three(each_member_alone)
    # The same zlib work, member by member, without copying the rest: linear. (Quadratic:
    # 27 and 180 times it.)
    assert decoding < 8 * floor, (decoding, floor)


# -- POST /convert: the content type's charset ----------------------------------------------
def _families(answer: str) -> list[str]:
    bundles = [json.loads(line) for line in answer.splitlines() if line.strip()]
    return [
        entry["resource"]["name"][0]["family"]
        for bundle in bundles
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Patient"
    ]


def test_convert_reads_hl7_without_msh18_in_its_content_types_charset(tmp_path: Path) -> None:
    # The body's Content-Type charset was ignored: a Latin-1 message without MSH-18 was a
    # 422 (CharsetError: not UTF-8), though the AMQP consumer reads it (session 20).
    latin1 = "text/plain; charset=iso-8859-1"
    single = latin_name_adt("CT-1", "MRN-CT-1", encoding="latin-1")
    # A batch: MSH-18 still decides for the message declaring it.
    batch = single + latin_name_adt("CT-2", "MRN-CT-2", charset="UNICODE UTF-8", encoding="utf-8")
    with running(make_config(tmp_path / "service")) as service:
        url = f"{service.http_url}/convert"
        answers = [
            httpx.post(url, content=body, headers={"content-type": content_type}, timeout=30)
            for body, content_type in (
                (single, latin1),
                (batch, 'x-application/hl7-v2+er7; charset="ISO-8859-1"'),
                (single, "text/plain; charset=klingon-8"),
                (single, "text/plain"),
            )
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 422, 422]
    assert _families(answers[0].text) == ["Lefèvre"]
    assert _families(answers[1].text) == ["Lefèvre", "Lefèvre"]
    [issue] = answers[2].json()["issue"]
    assert issue["diagnostics"] == (
        "CharsetError: content type charset: unknown character set (at content_type)"
    )
    assert "Lef" not in answers[2].text + answers[3].text


# -- reading in steps gives what json.loads gives --------------------------------------------
_PIECES = ["a", "\\", '"', "\r", "\n", "é", "中", "\U0001f600", "\ud800", "\udc00", "/", "u"]


@pytest.mark.parametrize("step", [7, 8, 13, 64])
def test_a_body_read_in_steps_is_what_json_loads_reads(
    step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long strings are decoded in pieces, cut neither inside an escape (\u00e9, \\) nor
    # between the halves of an escaped surrogate pair (\ud83d\ude00: one character).
    monkeypatch.setattr(json_steps, "_STRING_STEP", step)
    monkeypatch.setattr(json_steps, "_FIRST_PIECE", 3)
    chooser = random.Random(21)
    for _ in range(600):
        text = "".join(chooser.choice(_PIECES) for _ in range(chooser.randint(0, 60)))
        text += "\\" * chooser.randint(0, 3 * step)
        for ascii_only in (True, False):
            document = json.dumps(
                {"resourceType": "Parameters", text: [{"name": "x", "valueString": text}]},
                ensure_ascii=ascii_only,
            ).encode("utf-8", "surrogatepass")
            assert bodies.loads_in_steps(document) == json.loads(document), text
    for broken in ('{"a": "x\\', '{"a": "\\q"}', '{"a": "\\u12"}', '{"a": 1} x', '{"a": "\x01"}'):
        with pytest.raises(ValueError):
            bodies.loads_in_steps(broken.encode())


def test_a_parameters_resource_with_more_than_a_hundred_items_is_refused() -> None:
    # Its outer levels are read one item at a time (a Python step each): a 20 MB array of
    # numbers there would cost seconds of CPU; $convert-data takes a handful of parameters.
    listed = [{"name": "inputData", "valueString": adt("P-1").decode()}]
    body = {"resourceType": "Parameters", "parameter": listed * 100}
    assert read_parameters(json.dumps(body).encode(), default_charset="utf-8", max_messages=1)
    body["parameter"] = listed * 101
    with pytest.raises(ParametersRefused, match="at most 100"):
        read_parameters(json.dumps(body).encode(), default_charset="utf-8", max_messages=1)


@pytest.mark.parametrize("content", ['"', "\\", "é\\u"])
def test_a_string_of_escapes_reads_in_about_the_time_json_loads_takes(content: str) -> None:
    # The string's end was found by a Python loop over its quotes and its backslashes: a
    # 20 MB string of escaped quotes cost 11 s of CPU (json.loads: 0.25 s).
    document = json.dumps({"resourceType": "Parameters", "x": content * 1_000_000}).encode()
    assert bodies.loads_in_steps(document) == json.loads(document)
    stepped = _best_of_three(lambda: bodies.loads_in_steps(document))
    plain = _best_of_three(lambda: json.loads(document))
    assert stepped < 10 * plain, (stepped, plain)
