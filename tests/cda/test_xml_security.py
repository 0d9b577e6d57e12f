"""Hostile XML: what a CDA document from outside must never make the converter do.

Each attack is refused with a clear :class:`ParseError`, through the three ways in:
``converter.cda.parse_xml``, ``Converter.convert(..., input_type="cda")`` and the CLI
(``passerelle convert``: exit 1, one FAILED line, no traceback). Nothing the attack
would have read (``/etc/passwd``) ever appears in an output or an error message, no
file or network resource is opened (a FIFO and a local HTTP server record any access),
no stylesheet is applied.

Every attack is first shown to be live: a permissive lxml parser (entities resolved,
DTDs loaded, a resolver that fetches URLs) does read the file, hit the server or expand
the entities. So each refusal test fails if the parser ever behaves like that one.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from converter import Converter, ConverterConfig, ParseError, json_dumps, json_loads
from converter.cda import CdaDocument, PathCache, parse_xml
from converter.cda import xml as cda_xml
from tests.cda._support import CCD_SAMPLE, cda, run_cli

PASSWD = Path("/etc/passwd")
#: A distinctive piece of the file an XXE would read (its first line).
SECRET = (
    PASSWD.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    if (PASSWD.is_file())
    else ""
)

#: A comment longer than the 4096 bytes parse_xml scans for a DOCTYPE before parsing:
#: what follows it is only caught by the checks made while and after parsing.
LONG_COMMENT = "<!--" + "padding " * 1024 + "-->\n"


def doctype(subset: str, root: str = "ClinicalDocument") -> str:
    return f"<!DOCTYPE {root} [\n{subset}\n]>\n"


def permissive_parser(*, fetch: bool = False) -> etree.XMLParser:
    """What a careless integration would use: entities resolved, DTDs loaded, network
    allowed (libxml2 2.14 has no HTTP client: ``fetch`` adds a resolver that has one)."""
    parser = etree.XMLParser(resolve_entities=True, load_dtd=True, no_network=False, huge_tree=True)
    if fetch:

        class Fetching(etree.Resolver):  # type: ignore[misc]
            def resolve(self, url: str, pubid: str, context: Any) -> Any:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return self.resolve_string(response.read(), context)

        parser.resolvers.add(Fetching())
    return parser


# -- the three ways in --------------------------------------------------------------------
@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig())


def refused_by_parse_xml(data: bytes, _: Path, __: Converter) -> tuple[ParseError, str]:
    with pytest.raises(ParseError) as caught:
        parse_xml(data)
    return caught.value, _error_text(caught.value)


def refused_by_converter(data: bytes, _: Path, converter: Converter) -> tuple[ParseError, str]:
    with pytest.raises(ParseError) as caught:
        converter.convert(data, input_type="cda")
    return caught.value, _error_text(caught.value)


def refused_by_cli(data: bytes, tmp_path: Path, _: Converter) -> tuple[ParseError, str]:
    source = tmp_path / "hostile.xml"
    source.write_bytes(data)
    outputs = []
    for extra in ((), ("--verbose",)):  # --verbose adds the offending value: still nothing
        result = run_cli("convert", source, "--input-type", "cda", *extra, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
        assert len(failed) == 1, result.stderr
        assert "ParseError: " in failed[0], failed[0]
        outputs.append(result.stdout + result.stderr)
    reason = failed[0].split("ParseError: ", 1)[1]
    return ParseError(reason), "\n".join(outputs)


def _error_text(error: ParseError) -> str:
    return "\n".join(
        str(part) for part in (error, repr(error), error.reason, error.detail, error.location)
    )


WAYS: dict[str, Callable[[bytes, Path, Converter], tuple[ParseError, str]]] = {
    "parse_xml": refused_by_parse_xml,
    "Converter.convert": refused_by_converter,
    "CLI": refused_by_cli,
}


def assert_no_leak(text: str) -> None:
    if SECRET:
        assert SECRET not in text
    assert "root:x:0:0" not in text
    assert "from-network" not in text


# -- entity attacks -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def attribute_dtd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An external DTD that puts /etc/passwd in an internal entity usable in attributes
    (an external entity cannot be referenced from an attribute directly)."""
    path = tmp_path_factory.mktemp("dtd") / "attr.dtd"
    path.write_text(
        '<!ENTITY % file SYSTEM "file:///etc/passwd">'
        "<!ENTITY % eval \"<!ENTITY attr '%file;'>\">%eval;",
        encoding="utf-8",
    )
    return path


def xxe_payloads(attribute_dtd: Path) -> dict[str, bytes]:
    xxe = doctype('<!ENTITY xxe SYSTEM "file:///etc/passwd">')
    via_dtd = doctype(f'<!ENTITY % p SYSTEM "{attribute_dtd.as_uri()}"> %p;')
    utf16 = cda(prolog=LONG_COMMENT + xxe, title="&xxe;").replace(
        'encoding="UTF-8"', 'encoding="UTF-16"'
    )
    return {
        "general entity": cda(prolog=xxe, title="&xxe;").encode(),
        "general entity after a long comment": cda(
            prolog=LONG_COMMENT + xxe, title="&xxe;"
        ).encode(),
        "entity in an attribute": cda(
            prolog=xxe, doc_id='<id root="1.2.250.1.999.3.1" extension="&xxe;"/>'
        ).encode(),
        "entity in an attribute via an external DTD": cda(
            prolog=via_dtd, doc_id='<id root="1.2.250.1.999.3.1" extension="&attr;"/>'
        ).encode(),
        "entity in an attribute via an external DTD, after a long comment": cda(
            prolog=LONG_COMMENT + via_dtd,
            doc_id='<id root="1.2.250.1.999.3.1" extension="&attr;"/>',
        ).encode(),
        "general entity in UTF-16": utf16.encode("utf-16"),
    }


def _expanded_text(data: bytes) -> str:
    root = etree.fromstring(data, permissive_parser())
    return str(etree.tostring(root, encoding="unicode"))


@pytest.mark.skipif(not SECRET, reason="/etc/passwd is not readable here")
def test_the_xxe_payloads_are_live(attribute_dtd: Path) -> None:
    payloads = xxe_payloads(attribute_dtd)
    for name, data in payloads.items():
        if name.startswith("entity in an attribute") and "external DTD" not in name:
            # XML forbids external entities in attributes: even a permissive parser
            # refuses this one (the external-DTD variant below is the working attack).
            with pytest.raises(etree.XMLSyntaxError):
                _expanded_text(data)
            continue
        assert SECRET in _expanded_text(data), name


@pytest.mark.skipif(not SECRET, reason="/etc/passwd is not readable here")
@pytest.mark.parametrize("way", WAYS)
def test_xxe_is_refused_and_nothing_leaks(
    way: str, attribute_dtd: Path, tmp_path: Path, converter: Converter
) -> None:
    for name, data in xxe_payloads(attribute_dtd).items():
        error, text = WAYS[way](data, tmp_path, converter)
        assert "DTD or entities are not accepted" in error.reason, (name, error.reason)
        assert_no_leak(text)


# -- files and network ----------------------------------------------------------------------
class FifoCanary:
    """A named pipe that records whether anyone opened it for reading (and then serves
    ``content`` to them): proof that a parser did, or did not, open a file."""

    def __init__(self, path: Path, content: bytes) -> None:
        os.mkfifo(path)
        self.path = path
        self.content = content
        self.opened = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens the pipe
            if self._closing:
                os.close(fd)
                return
            self.opened.set()
            with contextlib.suppress(OSError):
                os.write(fd, self.content)
            os.close(fd)

    def close(self) -> None:
        self._closing = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # releases the writer
        self._thread.join(5)
        os.close(fd)


@pytest.fixture
def fifo_dtd(tmp_path: Path) -> Iterator[FifoCanary]:
    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes are not available on this platform")
    canary = FifoCanary(tmp_path / "evil.dtd", b'<!ENTITY leak "from-file">')
    yield canary
    canary.close()


def dtd_payloads(entity_url: str, subset_url: str) -> dict[str, bytes]:
    """Documents whose ``&leak;`` is defined by an external DTD: through a parameter
    entity at ``entity_url``, or as the external subset at ``subset_url``."""
    pe = doctype(f'<!ENTITY % p SYSTEM "{entity_url}"> %p;')
    external = f'<!DOCTYPE ClinicalDocument SYSTEM "{subset_url}">\n'
    return {
        "parameter entity": cda(prolog=pe, title="&leak;").encode(),
        "parameter entity after a long comment": cda(
            prolog=LONG_COMMENT + pe, title="&leak;"
        ).encode(),
        "external DTD subset after a long comment": cda(
            prolog=LONG_COMMENT + external, title="&leak;"
        ).encode(),
    }


def file_dtd_payloads(dtd: Path) -> dict[str, bytes]:
    return dtd_payloads(dtd.as_uri(), dtd.as_uri())


def test_the_local_dtd_payloads_are_live(fifo_dtd: FifoCanary) -> None:
    for name, data in file_dtd_payloads(fifo_dtd.path).items():
        fifo_dtd.opened.clear()
        assert "from-file" in _expanded_text(data), name
        assert fifo_dtd.opened.is_set(), name


@pytest.mark.parametrize("way", WAYS)
def test_local_dtds_are_never_opened(
    way: str, fifo_dtd: FifoCanary, tmp_path: Path, converter: Converter
) -> None:
    for name, data in file_dtd_payloads(fifo_dtd.path).items():
        error, text = WAYS[way](data, tmp_path, converter)
        assert "DTD or entities are not accepted" in error.reason, (name, error.reason)
        assert "from-file" not in text
    time.sleep(0.05)  # a late open would still be seen
    assert not fifo_dtd.opened.is_set(), "the parser opened the external DTD file"


class RecordingServer:
    """An HTTP server on 127.0.0.1 that records every request and serves a DTD."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = b'<!ENTITY leak "from-network">'
                self.send_response(200)
                self.send_header("Content-Type", "application/xml-dtd")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    yield recording
    recording.close()


def network_payloads(url: str) -> dict[str, bytes]:
    return dtd_payloads(f"{url}/pe.dtd", f"{url}/external.dtd")


def test_the_network_payloads_are_live(server: RecordingServer) -> None:
    for name, data in network_payloads(server.url).items():
        root = etree.fromstring(data, permissive_parser(fetch=True))
        assert "from-network" in etree.tostring(root, encoding="unicode"), name
    assert len(server.hits) == 3, server.hits


@pytest.mark.parametrize("way", WAYS)
def test_no_network_access_is_attempted(
    way: str, server: RecordingServer, tmp_path: Path, converter: Converter
) -> None:
    for name, data in network_payloads(server.url).items():
        error, text = WAYS[way](data, tmp_path, converter)
        assert "DTD or entities are not accepted" in error.reason, (name, error.reason)
        assert_no_leak(text)
    time.sleep(0.05)
    assert server.hits == [], f"the converter fetched {server.hits}"


def test_schema_locations_and_xincludes_are_not_fetched(
    server: RecordingServer, converter: Converter, tmp_path: Path
) -> None:
    """A well-formed document pointing at remote resources converts, and fetches none."""
    data = cda(
        root_attributes=f' xsi:schemaLocation="urn:hl7-org:v3 {server.url}/CDA.xsd"'
        ' xmlns:xi="http://www.w3.org/2001/XInclude"',
        body=(
            "<component><section>"
            '<code code="10164-2" codeSystem="2.16.840.1.113883.6.1"/>'
            "<title>HPI</title>"
            f'<text><paragraph>Seen.</paragraph><xi:include href="{server.url}/inc.xml"'
            ' parse="text"/></text>'
            "</section></component>"
        ),
    ).encode()
    bundle = converter.convert(data, input_type="cda")[0].bundle
    assert "from-network" not in json_dumps(bundle)
    source = tmp_path / "remote-refs.xml"
    source.write_bytes(data)
    assert run_cli("convert", source, cwd=tmp_path).returncode == 0
    assert server.hits == []


# -- entity expansion bombs ------------------------------------------------------------------
def billion_laughs(levels: int = 9, fan_out: int = 10) -> str:
    entities = ['<!ENTITY lol0 "lol">']
    for level in range(1, levels + 1):
        entities.append(f'<!ENTITY lol{level} "{f"&lol{level - 1};" * fan_out}">')
    return doctype("\n".join(entities))


def quadratic(size: int = 100_000) -> str:
    return doctype(f'<!ENTITY a "{"A" * size}">')


def bomb_payloads() -> dict[str, bytes]:
    laughs, quad = billion_laughs(), quadratic()
    repeated = "&a;" * 20_000  # 2 GB of text once expanded
    return {
        "billion laughs": cda(prolog=laughs, title="&lol9;").encode(),
        "billion laughs after a long comment": cda(
            prolog=LONG_COMMENT + laughs, title="&lol9;"
        ).encode(),
        "quadratic blow-up": cda(prolog=quad, title=repeated).encode(),
        "quadratic blow-up after a long comment": cda(
            prolog=LONG_COMMENT + quad, title=repeated
        ).encode(),
    }


def test_the_expansion_payloads_are_live() -> None:
    """Small instances of the same constructs do expand in a resolving parser."""
    small_laughs = cda(prolog=billion_laughs(levels=3), title="&lol3;").encode()
    assert _expanded_text(small_laughs).count("lol") >= 1000
    small_quad = cda(prolog=quadratic(1000), title="&a;" * 10).encode()
    assert _expanded_text(small_quad).count("A" * 1000) >= 10


@pytest.mark.parametrize("way", WAYS)
def test_entity_expansion_bombs_are_refused_quickly(
    way: str, tmp_path: Path, converter: Converter
) -> None:
    for name, data in bomb_payloads().items():
        start = time.perf_counter()
        error, text = WAYS[way](data, tmp_path, converter)
        elapsed = time.perf_counter() - start
        assert "DTD or entities are not accepted" in error.reason, (name, error.reason)
        assert elapsed < 15, f"{name}: {elapsed:.1f}s"
        assert "lollol" not in text and "AAAA" not in text


# -- size and depth ---------------------------------------------------------------------------
def test_the_size_limit_is_configurable_and_checked_before_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = cda().encode()
    assert parse_xml(data, max_bytes=len(data)) is not None  # the limit itself is allowed
    with pytest.raises(ParseError) as caught:
        parse_xml(data, max_bytes=len(data) - 1)
    assert f"exceeds the limit of {len(data) - 1}" in caught.value.reason

    def parser_called(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an oversized document reached the XML parser")

    monkeypatch.setattr(etree, "fromstring", parser_called)  # the module xml.py uses
    garbage = (b"\x00not xml at all" * (len(data) // 10))[: len(data) + 1]
    for oversized in (data + b" ", garbage):
        assert len(oversized) == len(data) + 1
        with pytest.raises(ParseError) as caught:
            parse_xml(oversized, max_bytes=len(data))
        assert "exceeds the limit" in caught.value.reason


def oversized_document() -> bytes:
    """A valid document padded with trailing blanks (legal after the root element) to one
    byte over the default limit."""
    data = cda().encode()
    return data + b" " * (cda_xml.DEFAULT_MAX_BYTES + 1 - len(data))


@pytest.mark.parametrize("way", WAYS)
def test_an_oversized_document_is_refused(way: str, tmp_path: Path, converter: Converter) -> None:
    data = oversized_document()
    assert len(data) == cda_xml.DEFAULT_MAX_BYTES + 1
    error, _ = WAYS[way](data, tmp_path, converter)
    assert f"exceeds the limit of {cda_xml.DEFAULT_MAX_BYTES}" in error.reason


def nested(depth: int) -> bytes:
    """A document whose section narrative nests ``depth`` content elements."""
    text = "<content>" * depth + "deep" + "</content>" * depth
    return cda(
        body=(
            "<component><section>"
            '<code code="10164-2" codeSystem="2.16.840.1.113883.6.1"/><title>HPI</title>'
            f"<text>{text}</text></section></component>"
        )
    ).encode()


def test_reasonable_nesting_converts(converter: Converter) -> None:
    """Narrative nested 200 levels (the document root is 8 levels above) converts."""
    bundle = converter.convert(nested(200), input_type="cda")[0].bundle
    composition = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Composition"
    )
    div = composition["section"][0]["text"]["div"]
    assert div.count("<span>") == 200 and "deep" in div


@pytest.mark.parametrize("way", WAYS)
def test_deeply_nested_documents_are_refused(
    way: str, tmp_path: Path, converter: Converter
) -> None:
    for depth in (cda_xml.MAX_DEPTH, 100_000):
        start = time.perf_counter()
        error, _ = WAYS[way](nested(depth), tmp_path, converter)
        assert "nested too deeply" in error.reason, error.reason
        assert time.perf_counter() - start < 15


# -- stylesheets ------------------------------------------------------------------------------
XSLT = """<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl">
  <xsl:template match="/">
    <exsl:document href="{target}" method="text">written by the stylesheet</exsl:document>
    <transformed/>
  </xsl:template>
</xsl:stylesheet>
"""


def with_stylesheet(data: bytes, xsl: Path) -> bytes:
    declaration, rest = data.split(b"?>", 1)
    instructions = (
        b'\n<?xml-stylesheet type="text/xsl" href="' + xsl.name.encode() + b'"?>'
        b'\n<?xml-stylesheet type="text/xsl" href="' + xsl.as_uri().encode() + b'"?>'
    )
    return declaration + b"?>" + instructions + rest


def _without_source(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle without what depends on the source bytes (the source attachment)."""
    copy = json_loads(json_dumps(bundle))
    for entry in copy["entry"]:
        for content in entry["resource"].get("content", []):
            if content["attachment"].get("contentType") == "text/xml":
                for key in ("data", "hash", "size"):
                    content["attachment"].pop(key, None)
    return dict(copy)


def test_xml_stylesheet_instructions_are_never_applied(
    tmp_path: Path, converter: Converter
) -> None:
    target = tmp_path / "written-by-xslt.txt"
    xsl = tmp_path / "evil.xsl"
    xsl.write_text(XSLT.format(target=target), encoding="utf-8")
    original = CCD_SAMPLE.read_bytes()
    data = with_stylesheet(original, xsl)

    # Live: applying that stylesheet writes the file.
    etree.XSLT(etree.parse(str(xsl)))(etree.fromstring(data))
    assert target.is_file()
    target.unlink()

    root = parse_xml(data)
    assert root.getprevious() is None, "processing instructions are kept"
    bundle = converter.convert(data, input_type="cda")[0].bundle
    expected = converter.convert(original, input_type="cda")[0].bundle
    assert _without_source(bundle) == _without_source(expected)
    source = tmp_path / "styled.xml"
    source.write_bytes(data)
    result = run_cli("convert", source, cwd=tmp_path)  # the relative href resolves here
    assert result.returncode == 0, result.stderr
    assert _without_source(json.loads(result.stdout)) == _without_source(bundle)
    assert not target.exists(), "a stylesheet was applied"
    assert "<transformed" not in result.stdout


# -- DOCTYPE placement and non-CDA XML --------------------------------------------------------
def late_doctype_payloads() -> dict[str, bytes]:
    harmless = doctype('<!ENTITY company "Centre QA">')
    straddling = "<!--" + "x" * (4096 - len('<?xml version="1.0" encoding="UTF-8"?>\n') - 11)
    straddling += "-->\n"
    return {
        "internal subset after a long comment": cda(prolog=LONG_COMMENT + harmless).encode(),
        "bare DOCTYPE after a long comment": cda(
            prolog=LONG_COMMENT + "<!DOCTYPE ClinicalDocument>\n"
        ).encode(),
        "DOCTYPE straddling the pre-check window": cda(prolog=straddling + harmless).encode(),
        "DOCTYPE after a long processing instruction": cda(
            prolog='<?xml-stylesheet href="' + "a" * 5000 + '.xsl"?>\n' + harmless
        ).encode(),
    }


def test_the_late_doctypes_are_past_the_pre_check() -> None:
    for name, data in late_doctype_payloads().items():
        assert b"<!doctype" not in data[:4096].lower(), name
        assert b"<!DOCTYPE" in data, name


@pytest.mark.parametrize("way", WAYS)
def test_a_doctype_after_a_long_prologue_is_refused(
    way: str, tmp_path: Path, converter: Converter
) -> None:
    for name, data in late_doctype_payloads().items():
        error, _ = WAYS[way](data, tmp_path, converter)
        assert "DTD or entities are not accepted" in error.reason, (name, error.reason)


def non_cda_payloads() -> dict[str, bytes]:
    document = cda()
    return {
        "FHIR resource": b'<Patient xmlns="http://hl7.org/fhir"><id value="p1"/></Patient>',
        "ClinicalDocument without namespace": document.replace(
            'xmlns="urn:hl7-org:v3" ', ""
        ).encode(),
        "ClinicalDocument in another namespace": document.replace(
            'xmlns="urn:hl7-org:v3"', 'xmlns="urn:hl7-org:v2xml"'
        ).encode(),
        "another root in the CDA namespace": b'<Observation xmlns="urn:hl7-org:v3"/>',
        "XHTML": b'<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>',
    }


@pytest.mark.parametrize("way", ["Converter.convert", "CLI"])
def test_non_cda_xml_is_refused(way: str, tmp_path: Path, converter: Converter) -> None:
    for name, data in non_cda_payloads().items():
        parse_xml(data)  # well-formed: parse_xml itself is not CDA-specific
        with pytest.raises(ParseError, match="not a CDA document"):
            CdaDocument(data, PathCache())
        error, text = WAYS[way](data, tmp_path, converter)
        assert "not a CDA document" in error.reason, (name, error.reason)
        assert "Testeuse" not in text  # the patient's name
    # The root's name is the sender's text: in detail, never in the error's text.
    with pytest.raises(ParseError) as caught:
        CdaDocument(b"<DUPONT_Marie/>", PathCache())
    assert "DUPONT" not in str(caught.value) and "DUPONT" in (caught.value.detail or "")


@pytest.mark.parametrize("way", WAYS)
def test_input_that_is_not_xml_is_refused(way: str, tmp_path: Path, converter: Converter) -> None:
    for data in (b"", b"just some text", b"<ClinicalDocument", b"MSH|^~\\&|A|B"):
        error, _ = WAYS[way](data, tmp_path, converter)
        assert error.reason.startswith("not well-formed XML"), error.reason


# -- parse errors quote no document text --------------------------------------------------
#: A patient-like name placed where libxml2's message would quote it.
QUOTED = "DUPONTMARIE"


def quoting_payloads() -> dict[str, tuple[bytes, str]]:
    """Malformed documents whose libxml2 message names document text, and the kind of
    problem ``str(error)`` must still give."""
    document = CCD_SAMPLE.read_text(encoding="utf-8")
    return {
        "undefined entity": (
            document.replace("<given>", f"<given>&{QUOTED};", 1).encode(),
            "undeclared entity",
        ),
        "mismatched end tag": (
            document.replace("</given>", f"</{QUOTED}>", 1).encode(),
            "tag mismatch",
        ),
        "attribute without value": (
            document.replace("<given>", f"<given {QUOTED}>", 1).encode(),
            "attribute without value",
        ),
        "undeclared prefix": (
            document.replace("<given>", f"<{QUOTED}:given>", 1)
            .replace("</given>", f"</{QUOTED}:given>", 1)
            .encode(),
            "undefined namespace",
        ),
        "oversized attribute": (
            document.replace("<given>", f'<given {QUOTED}="{"x" * 11_000_000}">', 1).encode(),
            "size limit",
        ),
    }


@pytest.mark.parametrize("case", quoting_payloads())
def test_parse_errors_name_the_problem_not_the_document_text(case: str) -> None:
    data, kind = quoting_payloads()[case]
    with pytest.raises(ParseError) as caught:
        parse_xml(data)
    error = caught.value
    public = "\n".join((str(error), repr(error), error.reason, error.location or ""))
    assert QUOTED not in public, public
    assert "XML_PARSE_HUGE" not in public, public  # nor libxml2 internals
    assert error.reason.startswith("not well-formed XML: "), error.reason
    assert kind in error.reason, error.reason
    assert error.location and re.fullmatch(r"line \d+, column \d+", error.location), error
    # The libxml2 text is kept for someone allowed to read the document.
    assert error.detail
    if case != "oversized attribute":  # libxml2 gives no name for that one
        assert QUOTED in error.detail, error.detail


def test_quoting_parse_errors_quote_nothing_through_converter_and_cli(
    tmp_path: Path, converter: Converter
) -> None:
    data, kind = quoting_payloads()["undefined entity"]
    error, _ = refused_by_converter(data, tmp_path, converter)
    assert QUOTED not in str(error), str(error)
    assert kind in str(error), str(error)
    assert error.detail and QUOTED in error.detail
    source = tmp_path / "quoting.xml"
    source.write_bytes(data)
    plain = run_cli("convert", source, "--input-type", "cda", cwd=tmp_path)
    assert plain.returncode == 1, plain.stderr
    assert kind in plain.stderr, plain.stderr
    assert QUOTED not in plain.stdout + plain.stderr, plain.stderr
    # --verbose is the documented way to see the offending text.
    verbose = run_cli("convert", source, "--input-type", "cda", "--verbose", cwd=tmp_path)
    assert QUOTED in verbose.stderr, verbose.stderr


def test_a_standard_namespace_prefix_is_named() -> None:
    """A closed set of standard prefixes (never patient text) is named: a missing
    ``xmlns:xsi`` is the usual cause of this error."""
    document = CCD_SAMPLE.read_text(encoding="utf-8").replace("<given>", '<given xsi:type="ST">', 1)
    document = document.replace('xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"', "")
    with pytest.raises(ParseError) as caught:
        parse_xml(document.encode())
    assert caught.value.reason == "not well-formed XML: undefined namespace prefix 'xsi'"
