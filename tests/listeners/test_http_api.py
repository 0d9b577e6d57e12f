"""The HTTP API of a running service, over real HTTP: $convert-data, /convert, auth, limits."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from listeners.config import HttpConfig
from listeners.http.api import create_app
from listeners.metrics import Metrics
from tests.listeners.service.support import (
    REPO_ROOT,
    RunningService,
    adt,
    make_config,
    sample,
)

API_KEY = "k3y-for-tests"
TOKEN = "t0ken-for-tests"
AUTH = {"X-API-Key": API_KEY}
MAX_BODY = 20 * 1024 * 1024
FAMILY, BIRTH = "Wexcombe", "19620230"  # an impossible date: the conversion error's value


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """A service whose API requires an API key or a bearer token."""
    directory = tmp_path_factory.mktemp("http-api")
    config = make_config(directory, {"http": {"api_key": API_KEY, "bearer_token": TOKEN}})
    with RunningService(config) as service:
        yield service


@pytest.fixture(scope="module")
def client(api: RunningService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.http_url, headers=AUTH, timeout=60) as http:
        yield http


def parameters(data: str | None, **values: str) -> dict[str, Any]:
    params = [] if data is None else [{"name": "inputData", "valueString": data}]
    params += [{"name": name, "valueString": value} for name, value in values.items()]
    return {"resourceType": "Parameters", "parameter": params}


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def assert_outcome(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["code"] == code
    return outcome


# -- $convert-data ----------------------------------------------------------------------------
def test_convert_data_like_azure(client: httpx.Client) -> None:
    message = sample("ADT_A01_admission-full.hl7").decode("utf-8")
    body = parameters(
        message,
        inputDataType="Hl7v2",
        rootTemplate="ADT",
        templateCollectionReference="microsofthealth/fhirconverter:default",
    )
    response = client.post("/$convert-data", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    (patient,) = resources(bundle, "Patient")
    assert patient["name"][0]["family"] == "DUPONT"


def test_convert_data_accepts_azures_template_names_and_line_feeds(client: httpx.Client) -> None:
    message = adt("AZ-1", mrn="MRN-AZ").decode("utf-8")
    reference = client.post("/$convert-data", json=parameters(message, rootTemplate="ADT")).json()
    # Azure's clients name the template after the event (ADT_A01) and often send LF.
    for text, root in ((message, "ADT_A01"), (message.replace("\r", "\n"), "ADT_A01")):
        response = client.post(
            "/$convert-data", json=parameters(text, inputDataType="Hl7v2", rootTemplate=root)
        )
        assert response.status_code == 200, response.text
        assert response.json() == reference
    # Without rootTemplate, the message's route applies; the type defaults to HL7 v2.
    assert client.post("/$convert-data", json=parameters(message)).json() == reference


def test_convert_data_reads_its_text_in_the_charset_the_input_declares(
    client: httpx.Client,
) -> None:
    """inputData is text: encoded in UTF-8 whatever the message declared, a Latin-1
    message (MSH-18 8859/1) or CDA document (encoding="ISO-8859-1") had every accented
    name garbled in a 200 answer (Lefèvre as LefÃ¨vre)."""
    latin1 = sample("ADT_A01_latin1.hl7")
    expected = client.post("/convert", content=latin1)
    assert expected.status_code == 200, expected.text
    response = client.post("/$convert-data", json=parameters(latin1.decode("latin-1")))
    assert response.status_code == 200, response.text
    assert response.json() == expected.json()
    assert "Ã" not in response.text

    document = (REPO_ROOT / "samples" / "cda" / "CCD_lefevre-camille.xml").read_text("utf-8")
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    declared = document.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"', 1)
    # What the same document saved in ISO-8859-1 gives (its em dash a character reference).
    expected = client.post("/convert", content=declared.encode("iso-8859-1", "xmlcharrefreplace"))
    assert expected.status_code == 200, expected.text
    response = client.post(
        "/$convert-data", json=parameters(declared, inputDataType="Ccda"), timeout=120
    )
    assert response.status_code == 200, response.text
    (patient,) = resources(response.json(), "Patient")
    assert patient["name"][0]["family"] == "Lefèvre"
    assert response.json() == expected.json()


def test_convert_data_text_its_declared_charset_cannot_write_is_a_400(
    client: httpx.Client,
) -> None:
    message = sample("ADT_A01_latin1.hl7").decode("latin-1").replace("CARON", "CARŒN")
    response = client.post("/$convert-data", json=parameters(message))
    outcome = assert_outcome(response, 400, "structure")
    assert "cannot represent" in outcome["issue"][0]["diagnostics"]
    assert "Œ" not in response.text


def test_convert_data_text_without_msh18_is_encoded_in_the_default_routes_charset(
    tmp_path: Path,
) -> None:
    """An empty MSH-18 is read in converter.charset: the service hands that charset to
    the API, which encodes inputData in it (as UTF-8, `Lefèvre` came back `Lef?vre`)."""
    latin1 = sample("ADT_A01_latin1.hl7").replace(b"|8859/1|", b"||", 1)
    config = make_config(tmp_path, {"converter": {"charset": "8859/1"}})
    with (
        RunningService(config) as service,
        httpx.Client(base_url=service.http_url, timeout=60) as http,
    ):
        expected = http.post("/convert", content=latin1)
        assert expected.status_code == 200, expected.text
        response = http.post("/$convert-data", json=parameters(latin1.decode("latin-1")))
        assert response.status_code == 200, response.text
        assert response.json() == expected.json()
        assert "\ufffd" not in response.text and "\u00c3" not in response.text


def test_convert_data_unknown_root_template_is_a_400(client: httpx.Client) -> None:
    message = adt("AZ-2").decode("utf-8")
    # A name longer than a file name may be was once an OSError: a 500.
    for root in ("NOPE", "ORU_R01X", "../../etc/passwd", "/etc/passwd.j2", "A" * 5000):
        response = client.post("/$convert-data", json=parameters(message, rootTemplate=root))
        outcome = assert_outcome(response, 400, "not-supported")
        assert "not found" in outcome["issue"][0]["diagnostics"]
    raw = client.post("/convert?rootTemplate=" + "a/" * 3000, content=adt("AZ-3"))
    assert_outcome(raw, 400, "not-supported")


def test_convert_data_request_errors(client: httpx.Client) -> None:
    missing = client.post("/$convert-data", json=parameters(None, inputDataType="Hl7v2"))
    outcome = assert_outcome(missing, 400, "required")
    assert "inputData" in outcome["issue"][0]["diagnostics"]
    for kind in ("Json", "Fhir", "xml"):
        wrong = client.post("/$convert-data", json=parameters("MSH|^~\\&|", inputDataType=kind))
        assert_outcome(wrong, 400, "not-supported")
    assert_outcome(client.post("/$convert-data", content=b"{not json"), 400, "structure")
    assert_outcome(
        client.post("/$convert-data", json={"resourceType": "Patient"}), 400, "structure"
    )
    assert_outcome(client.post("/$convert-data", json=[1, 2]), 400, "structure")
    # Once 500s: a parameter element that is not a list, a lone surrogate escape.
    for listed in (5, "inputData", {"name": "inputData", "valueString": "MSH|"}):
        odd_list = {"resourceType": "Parameters", "parameter": listed}
        assert_outcome(client.post("/$convert-data", json=odd_list), 400, "structure")
    surrogate = (
        '{"resourceType": "Parameters", "parameter": '
        '[{"name": "inputData", "valueString": "MSH|^~\\\\&|\\ud800"}]}'
    )
    lone = client.post("/$convert-data", content=surrogate.encode())
    assert "Unicode" in assert_outcome(lone, 400, "structure")["issue"][0]["diagnostics"]
    # inputData as a number instead of valueString: missing.
    odd = {"resourceType": "Parameters", "parameter": [{"name": "inputData", "valueInteger": 1}]}
    assert_outcome(client.post("/$convert-data", json=odd), 400, "required")
    # Several messages: $convert-data converts one; nothing is silently dropped.
    two = (adt("TWO-1") + adt("TWO-2")).decode("utf-8")
    outcome = assert_outcome(
        client.post("/$convert-data", json=parameters(two)), 400, "not-supported"
    )
    assert "2 messages" in outcome["issue"][0]["diagnostics"]


def test_unconvertible_message_is_a_422_without_message_content(client: httpx.Client) -> None:
    bad = adt("BAD-HTTP-1", family=FAMILY, birth_date=BIRTH, mrn="MRN-SECRET-77")
    for response in (
        client.post("/$convert-data", json=parameters(bad.decode("utf-8"))),
        client.post("/convert", content=bad),
    ):
        outcome = assert_outcome(response, 422, "processing")
        issue = outcome["issue"][0]
        assert issue["expression"] == ["PID-7"]
        assert "MappingError" in issue["diagnostics"]
        assert "PID-7" in issue["diagnostics"]
        assert "hl7v2/resources/Patient.j2:" in issue["diagnostics"]
        for private in (FAMILY, BIRTH, "MRN-SECRET-77", "PID|"):
            assert private not in response.text
    unsupported = client.post("/convert", content=adt("UNS-HTTP-1", msh9="ZZZ^Z01^ZZZ_Z01"))
    outcome = assert_outcome(unsupported, 422, "processing")
    assert "UnsupportedMessageError" in outcome["issue"][0]["diagnostics"]
    garbage = client.post("/convert", content=b"hello, not HL7 at all")
    assert "ParseError" in assert_outcome(garbage, 422, "processing")["issue"][0]["diagnostics"]


# -- /convert ---------------------------------------------------------------------------------
def test_a_bundle_failing_validation_is_named_as_the_cli_and_the_ack_name_it(
    tmp_path: Path,
) -> None:
    """The conversion process reports the error class by name; the API answered every
    class it did not list as a plain MappingError. An override template writing what no
    FHIR validator accepts (the built-in ones now normalise or leave out every value they
    could not write: a code with two spaces in a row served here until codes went through
    fhir_code); the diagnostics never quote the value."""
    override = tmp_path / "templates" / "hl7v2" / "resources"
    override.mkdir(parents=True)
    (override / "Organization.j2").write_text(
        '{"resourceType": "Organization", "_identity": ["test"], "name": "CHU",'
        ' "active": "SECRET"}\n',
        encoding="utf-8",
    )
    config = make_config(tmp_path, {"converter": {"templates": [str(tmp_path / "templates")]}})
    oru = "\r".join(
        [
            "MSH|^~\\&|LAB|CHU|PASS|GHT|20240314083512+0100||ORU^R01^ORU_R01|VAL-HTTP-1|P|2.5.1",
            "PID|1||MRN-VAL-1^^^CHU&1.2.3&ISO^MR||Wexcombe^Ada||19850312|F",
            "OBR|1|PL-1^SIH|FL-1^LAB|24323-8^Panel^LN|||20240314073000+0100",
            "OBX|1|CWE|18748-4^Report^LN||CODE^Thing^L|||||||F",
        ]
    ).encode()
    with (
        RunningService(config) as service,
        httpx.Client(base_url=service.http_url, timeout=60) as http,
    ):
        outcome = assert_outcome(http.post("/convert", content=oru), 422, "processing")
    assert outcome["issue"][0]["diagnostics"].startswith("BundleValidationError: ")
    assert "SECRET" not in json.dumps(outcome)


def test_convert_raw_body(client: httpx.Client) -> None:
    response = client.post("/convert", content=adt("RAW-1", mrn="MRN-RAW"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    (patient,) = resources(response.json(), "Patient")
    assert patient["identifier"][0]["value"] == "MRN-RAW"
    forced = client.post(
        "/convert", params={"rootTemplate": "ADT", "inputType": "hl7v2"}, content=adt("RAW-2")
    )
    assert forced.status_code == 200
    assert_outcome(client.post("/convert", content=b""), 400, "required")
    assert_outcome(client.post("/convert", content=b" \r\n"), 400, "required")
    assert_outcome(
        client.post("/convert", params={"inputType": "json"}, content=b"{}"), 400, "not-supported"
    )


def test_convert_batch_gives_ndjson(client: httpx.Client) -> None:
    messages = [adt(f"ND-{i}", mrn=f"MRN-ND-{i}") for i in range(1, 4)]
    batch = b"FHS|^~\\&|APP-A|FAC-A\rBHS|^~\\&|APP-A|FAC-A\r" + b"".join(messages)
    batch += b"BTS|3\rFTS|1\r"
    response = client.post("/convert", content=batch)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.text.splitlines()
    assert len(lines) == 3 and response.text.endswith("\n")
    bundles = [json.loads(line) for line in lines]
    assert [resources(b, "Patient")[0]["identifier"][0]["value"] for b in bundles] == [
        "MRN-ND-1",
        "MRN-ND-2",
        "MRN-ND-3",
    ]
    # Messages simply following one another are a batch too.
    assert len(client.post("/convert", content=b"".join(messages[:2])).text.splitlines()) == 2


def test_a_failing_message_of_a_batch_is_named_by_its_control_id(client: httpx.Client) -> None:
    """A 422 for one message among many said where in *a* message (PID-7), not which one:
    the client had to bisect its batch."""
    messages = [adt(f"BATCH-OK-{i}", mrn=f"MRN-B-{i}") for i in range(1, 3)]
    bad = adt("BATCH-BAD-3", family=FAMILY, birth_date=BIRTH, mrn="MRN-SECRET-78")
    response = client.post("/convert", content=b"".join([*messages, bad]))
    outcome = assert_outcome(response, 422, "processing")
    diagnostics = outcome["issue"][0]["diagnostics"]
    assert diagnostics.startswith("MappingError: ")
    assert "at PID-7" in diagnostics and "message MSH-10 BATCH-BAD-3" in diagnostics
    assert outcome["issue"][0]["expression"] == ["PID-7"]
    for private in (FAMILY, BIRTH, "MRN-SECRET-78"):
        assert private not in response.text


# -- authentication ---------------------------------------------------------------------------
def test_api_key_and_bearer_token(api: RunningService) -> None:
    url = api.http_url
    message = adt("AUTH-1")
    denied = httpx.post(f"{url}/convert", content=message)
    outcome = assert_outcome(denied, 401, "login")
    assert denied.headers["www-authenticate"] == "Bearer"
    assert "credentials" in outcome["issue"][0]["diagnostics"]
    assert httpx.post(f"{url}/convert", content=message, headers=AUTH).status_code == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{url}/convert", content=message, headers=bearer).status_code == 200
    assert (
        httpx.post(
            f"{url}/$convert-data", json=parameters(message.decode()), headers=bearer
        ).status_code
        == 200
    )
    for headers in (
        {"X-API-Key": "wrong"},
        {"X-API-Key": TOKEN},  # the token is not a key
        {"Authorization": f"Bearer {API_KEY}"},  # nor the key a token
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"X-API-Key": ""},
        # Non-ASCII credentials are wrong credentials, not a server error.
        {"X-API-Key": "clé".encode("latin-1")},
        {"Authorization": "Bearer tökén".encode()},
    ):
        response = httpx.post(f"{url}/convert", content=message, headers=headers)  # type: ignore[arg-type]
        assert response.status_code == 401, (headers, response.status_code)
    # Probes stay open; the metrics are part of the protected API.
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/ready").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers=AUTH).status_code == 200


def test_without_credentials_configured_the_api_is_open(tmp_path: Path) -> None:
    with RunningService(make_config(tmp_path)) as service:
        response = httpx.post(f"{service.http_url}/convert", content=adt("OPEN-1"), timeout=30)
        assert response.status_code == 200
        assert httpx.get(f"{service.http_url}/metrics").status_code == 200


# -- limits -----------------------------------------------------------------------------------
def chunked_upload(port: int, head: bytes, block: bytes, blocks: int) -> tuple[bytes, int]:
    """Stream a chunked body from a thread while reading the answer; stop sending as soon as
    the answer's status line arrives. Returns the status line and the bytes sent by then."""
    sent = 0
    stop = threading.Event()

    def send(sock: socket.socket) -> None:
        nonlocal sent
        try:
            sock.sendall(head)
            for _ in range(blocks):
                if stop.is_set():
                    return
                sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sent += len(block)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # closed by the server or by us once answered

    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sender = threading.Thread(target=send, args=(sock,), daemon=True)
        sender.start()
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
        stop.set()
        at_answer = sent
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=30)
    return answer.split(b"\r\n", 1)[0], at_answer


def test_oversized_bodies_are_a_413(api: RunningService) -> None:
    port = int(api.http_url.rsplit(":", 1)[1])
    # Announced by Content-Length: refused before reading it.
    big = httpx.post(
        f"{api.http_url}/convert", content=b"A" * (MAX_BODY + 1), headers=AUTH, timeout=60
    )
    assert_outcome(big, 413, "too-costly")
    # Chunked, no Content-Length: refused once the limit is passed, not read to the end
    # (up to 200 MiB offered; the answer must come while the upload is still going).
    head = (
        b"POST /convert HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"X-API-Key: {API_KEY}\r\n\r\n".encode()
    )
    status, sent = chunked_upload(port, head, b"A" * (1024 * 1024), 200)
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < 100 * 1024 * 1024
    # Exactly at the limit is fine (and is then a conversion problem, not a size one).
    at_limit = httpx.post(
        f"{api.http_url}/convert", content=b"A" * MAX_BODY, headers=AUTH, timeout=60
    )
    assert at_limit.status_code == 422


def test_decimals_keep_their_trailing_zeros(client: httpx.Client) -> None:
    """OBX reference range 4.50-5.90 comes back as 4.50 and 5.90, not 4.5 and 5.9."""
    response = client.post("/convert", content=sample("ORU_R01_20-obx.hl7"))
    assert response.status_code == 200, response.text
    assert '"low":{"value":4.50' in response.text
    assert '"high":{"value":5.90' in response.text


class _FailingBackend:
    """A backend whose conversion fails unexpectedly, quoting what it was given."""

    def __init__(self) -> None:
        self.metrics = Metrics()

    async def readiness(self) -> dict[str, str | None]:
        return {}

    async def convert(
        self, data: bytes, *, input_type: str, root_template: str | None
    ) -> list[bytes]:
        raise RuntimeError(f"choked on {data.decode()}")


def test_an_unexpected_failure_is_an_operation_outcome_and_logs_no_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No real service raises here any more (the cases found were fixed above): this
    # backend stands in for the next unknown one.
    app = create_app(_FailingBackend(), HttpConfig())

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.post("/convert", content=adt("BOOM-1", family=FAMILY))

    with caplog.at_level(logging.ERROR, logger="passerelle.http"):
        response = asyncio.run(scenario())
    outcome = assert_outcome(response, 500, "exception")
    assert FAMILY not in response.text
    assert "internal error" in outcome["issue"][0]["diagnostics"]
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "RuntimeError at" in record.getMessage()
    assert FAMILY not in record.getMessage()
