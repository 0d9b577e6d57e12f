"""The element API templates use (``converter.cda.node``) and the parsed document
(``converter.cda.document``): navigation, attributes, paths, XPath, null flavors,
narrative references and XHTML, document types, control ids, the source bytes."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from converter import Converter, ConverterConfig
from converter.cda import AttrValue, CdaDocument, Node, PathCache
from converter.cda.document import DOCUMENT_TYPES
from converter.cda.node import compile_path
from tests.cda._support import US_REALM_HEADER, cda
from tests.cda.fhir_xhtml import XHTML, xhtml_problems

RESULTS = "2.16.840.1.113883.10.20.22.2.3.1"
RESULT_OBSERVATION = "2.16.840.1.113883.10.20.22.4.2"

NARRATIVE = """
<text>
  <paragraph ID="para1" styleCode="Bold"
    >Patient &lt;script&gt;alert(1)&lt;/script&gt; &amp; co</paragraph>
  <table border="1" width="100%">
    <caption>Results</caption>
    <thead><tr><th>Test</th><th colspan="2" onclick="steal()">Value</th></tr></thead>
    <tbody>
      <tr ID="row1"><td ID="test1">Potassium</td><td ID="value1">  5.1   mmol/L </td></tr>
    </tbody>
  </table>
  <list listType="ordered"><item>first</item><item><content ID="allergen1">Penicillin
      G</content></item></list>
  <list><item>bullet</item></list>
  <linkHtml href="javascript:alert(document.cookie)">js link</linkHtml>
  <linkHtml href="JavaScript:alert(2)">mixed-case js link</linkHtml>
  <linkHtml href="data:text/html;base64,PHNjcmlwdD4=">data link</linkHtml>
  <linkHtml href="https://example.org/leaflet">safe link</linkHtml>
  <linkHtml href="#para1">internal link</linkHtml>
  <renderMultiMedia referencedObject="MM1"/>
  <paragraph>x<sup>2</sup> and H<sub>2</sub>O<br/>next line<footnote
    ID="fn1">a note</footnote></paragraph>
  <x:script xmlns:x="http://www.w3.org/1999/xhtml">alert("foreign")</x:script>
  <unknownElement>kept as text</unknownElement>
</text>
"""

ENTRIES = f"""
<entry typeCode="DRIV">
  <organizer classCode="BATTERY" moodCode="EVN">
    <templateId root="2.16.840.1.113883.10.20.22.4.1" extension="2015-08-01"/>
    <id root="7d5a02b0-67a4-11db-bd13-0800200c9a66"/>
    <code nullFlavor="UNK"/>
    <statusCode code="completed"/>
    <component>
      <observation classCode="OBS" moodCode="EVN">
        <templateId root="{RESULT_OBSERVATION}" extension="2015-08-01"/>
        <id root="107c2dc0-67a5-11db-bd13-0800200c9a66"/>
        <code code="2823-3" codeSystem="2.16.840.1.113883.6.1" displayName="Potassium">
          <originalText><reference value="#test1"/></originalText>
        </code>
        <effectiveTime value="20240304081500+0100"/>
        <value xsi:type="PQ" value="5.1" unit="mmol/L"/>
        <interpretationCode nullFlavor="NI"/>
        <sdtc:category code="laboratory"/>
      </observation>
    </component>
    <component>
      <observation classCode="OBS" moodCode="EVN">
        <templateId root="{RESULT_OBSERVATION}" extension="2015-08-01"/>
        <id root="107c2dc0-67a5-11db-bd13-0800200c9a67"/>
        <code code="2951-2" codeSystem="2.16.840.1.113883.6.1" displayName="Sodium">
          <originalText><reference value="#missing-id"/></originalText>
        </code>
        <value xsi:type="CD" nullFlavor="OTH">
          <originalText>   hemolysed
             sample </originalText>
        </value>
        <referenceRange><observationRange>
          <value xsi:type="IVL_PQ" nullFlavor="NA"/>
        </observationRange></referenceRange>
      </observation>
    </component>
    <component>
      <observation classCode="OBS" moodCode="EVN">
        <templateId root="{RESULT_OBSERVATION}" extension="2015-08-01"/>
        <code code="2345-7" codeSystem="2.16.840.1.113883.6.1">
          <originalText>Glucose <reference value="not-a-fragment"/></originalText>
        </code>
        <value xsi:type="PQ" nullFlavor="NI"/>
        <methodCode nullFlavor="OTH">free text method</methodCode>
        <targetSiteCode nullFlavor="OTH" codeSystem="2.16.840.1.113883.6.96"/>
      </observation>
    </component>
  </organizer>
</entry>
"""

BODY = f"""
<component><section>
  <templateId root="2.16.840.1.113883.10.20.22.2.3"/>
  <templateId root="{RESULTS}" extension="2015-08-01"/>
  <code code="30954-2" codeSystem="2.16.840.1.113883.6.1" displayName="Results"/>
  <title>Results</title>
  {NARRATIVE}
  {ENTRIES}
</section></component>
<component><section>
  <code code="10164-2" codeSystem="2.16.840.1.113883.6.1"/>
  <title>HPI</title>
  <text>   </text>
</section></component>
"""


@pytest.fixture(scope="module")
def document() -> CdaDocument:
    return CdaDocument(cda(body=BODY).encode(), PathCache())


@pytest.fixture(scope="module")
def doc(document: CdaDocument) -> Node:
    return document.root


@pytest.fixture(scope="module")
def section(doc: Node) -> Node:
    return doc.first("component/structuredBody/component/section")


@pytest.fixture(scope="module")
def observations(section: Node) -> list[Node]:
    return section.all("entry/organizer/component/observation")


# -- navigation ------------------------------------------------------------------------------------
def test_child_access(doc: Node) -> None:
    patient = doc.recordTarget.patientRole.patient
    assert patient
    assert patient.tag == "patient"
    assert patient.name.family.string() == "Testeuse"
    assert str(patient.name.given) == "Alice"
    # the first child of that name
    assert doc.templateId["root"] == US_REALM_HEADER
    # ``text`` and ``value`` are element names like any other
    assert doc.first("component/structuredBody/component/section").text
    assert patient.parent.tag == "patientRole"
    assert [child.tag for child in patient.name] == ["given", "family"]


def test_absent_children_are_empty_nodes(doc: Node) -> None:
    missing = doc.componentOf.encompassingEncounter
    assert not missing
    assert missing.tag == ""
    assert missing.string() == "" and missing.resolved() == "" and missing.xhtml() is None
    assert missing.null_flavor == ""
    assert list(missing) == [] and missing.all("id") == [] and missing.xpath("h:id") == []
    assert not missing.first("id") and not missing.parent
    assert missing["root"] == "" and isinstance(missing["root"], AttrValue)
    assert missing.path == "(absent encompassingEncounter)"
    assert not missing.has_template("2.16.840.1.113883.10.20.22.1.2")
    assert missing.template_ids == []
    with pytest.raises(AttributeError):
        doc._private  # noqa: B018 - underscore names are never children


def test_nodes_compare_by_element(doc: Node) -> None:
    a, b = doc.recordTarget.patientRole, doc.first("recordTarget/patientRole")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != doc.recordTarget
    assert doc.id != doc.code


# -- attributes ------------------------------------------------------------------------------------
def test_attributes(doc: Node, observations: list[Node]) -> None:
    assert doc.id["root"] == "1.2.250.1.999.3.1"
    assert doc.id["extension"] == "QA-0001"
    assert doc.id["absent"] == ""
    value = observations[0].value
    assert value["xsi:type"] == "PQ" and value.xsi_type == "PQ"
    assert value["value"] == "5.1" and value["unit"] == "mmol/L"
    assert value["type"] == ""  # un-prefixed: the xsi attribute is not a plain one
    with pytest.raises(KeyError):
        value["foo:bar"]  # unknown prefix
    with pytest.raises(KeyError):
        value[0]  # type: ignore[index]


def test_xsi_type_drops_the_prefix() -> None:
    data = cda(
        header="<participant typeCode='IND'><associatedEntity classCode='PRS'>"
        "<code xmlns:v3='urn:hl7-org:v3' xsi:type='v3:CE' code='FAMMEMB'/>"
        "</associatedEntity></participant>"
    ).encode()
    node = CdaDocument(data, PathCache()).root.participant.associatedEntity.code
    assert node["xsi:type"] == "v3:CE" and node.xsi_type == "CE"


def test_attribute_values_know_their_path_lazily(
    doc: Node, observations: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = Node.path

    def counting(self: Node) -> str:
        calls.append(self)
        return str(original.fget(self))  # type: ignore[attr-defined]

    monkeypatch.setattr(Node, "path", property(counting))
    values = [obs.value["value"] for obs in observations] + [doc.id["root"]]
    assert calls == [], "attribute reads computed their location eagerly"
    assert values[0].path == (
        "/ClinicalDocument/component/structuredBody/component[1]/section/entry/organizer/"
        "component[1]/observation/value/@value"
    )
    assert values[2].path == (
        "/ClinicalDocument/component/structuredBody/component[1]/section/entry/organizer/"
        "component[3]/observation/value/@value"
    )
    assert values[3].path == "/ClinicalDocument/id/@root"
    assert len(calls) == 3


def test_node_paths(doc: Node, section: Node, observations: list[Node]) -> None:
    assert doc.path == "/ClinicalDocument"
    assert doc.templateId.path == "/ClinicalDocument/templateId[1]"
    assert doc.all("templateId")[1].path == "/ClinicalDocument/templateId[2]"
    assert section.path == "/ClinicalDocument/component/structuredBody/component[1]/section"
    assert observations[1].code.path.endswith("/organizer/component[2]/observation/code")
    assert repr(doc.recordTarget) == "<Node /ClinicalDocument/recordTarget>"


# -- paths and XPath -------------------------------------------------------------------------------
def test_first_and_all(doc: Node, section: Node) -> None:
    sections = doc.all("component/structuredBody/component/section")
    assert [s.title.string() for s in sections] == ["Results", "HPI"]
    assert doc.first("/component/structuredBody/component/section/") == sections[0]
    assert [o.code["code"] for o in section.all("entry/organizer/component/observation")] == [
        "2823-3",
        "2951-2",
        "2345-7",
    ]
    assert not section.first("entry/act")
    assert section.first("entry/act").path == "(absent entry/act)"
    assert section.first("entry/*/statusCode")["code"] == "completed"
    assert section.first("entry/organizer/..").tag == "entry"
    assert section.first("entry/organizer/component/observation/sdtc:category")["code"] == (
        "laboratory"
    )


def test_paths_are_names_only() -> None:
    assert compile_path("entry/observation") == "h:entry/h:observation"
    assert compile_path("sdtc:raceCode") == "sdtc:raceCode"
    assert compile_path("./*/..") == "./*/.."
    assert compile_path("//entry/") == "h:entry"  # outer slashes are ignored
    for bad in ("entry[1]", "entry/@code", "entry//observation", "entry | act", "text()"):
        with pytest.raises(ValueError, match="unsupported path step"):
            compile_path(bad)


def test_xpath_with_prefixes(section: Node, observations: list[Node]) -> None:
    found = section.xpath("h:entry/h:organizer/h:component/h:observation[h:value/@xsi:type='PQ']")
    assert [n.code["code"] for n in found] == ["2823-3", "2345-7"]
    assert all(isinstance(n, Node) for n in found)
    assert section.xpath("h:entry//h:code/@code") == ["2823-3", "2951-2", "2345-7"]
    assert all(type(v) is str for v in section.xpath("h:entry//h:code/@code"))
    assert section.xpath("count(h:entry/h:organizer/h:component)") == [3.0]
    assert section.xpath("boolean(h:entry//sdtc:category)") == [True]
    assert section.xpath("string(h:title)") == ["Results"]
    assert observations[0].xpath("../../h:code/@nullFlavor") == ["UNK"]


# -- null flavors ----------------------------------------------------------------------------------
def test_a_null_flavor_alone_is_empty(section: Node, observations: list[Node]) -> None:
    code = section.first("entry/organizer/code")
    assert code.null_flavor == "UNK"
    assert not code and code.string() == ""
    assert not observations[0].interpretationCode
    assert observations[0].interpretationCode.null_flavor == "NI"
    assert observations[0].value.null_flavor == ""


def test_a_null_flavor_with_an_xsi_type_only_is_empty(observations: list[Node]) -> None:
    """``<value xsi:type="PQ" nullFlavor="NI"/>`` is how C-CDA writes an unknown value
    (xsi:type is required on value): it carries nothing but its null flavor."""
    assert not observations[2].value
    assert not observations[1].first("referenceRange/observationRange/value")


def test_a_null_flavor_with_content_is_truthy(observations: list[Node]) -> None:
    value = observations[1].value
    assert value.null_flavor == "OTH"
    assert value  # an originalText
    assert value.originalText.string() == "hemolysed sample"
    assert observations[2].methodCode  # text content
    assert observations[2].targetSiteCode  # another attribute (codeSystem)


# -- narrative references --------------------------------------------------------------------------
def test_resolved_follows_narrative_references(observations: list[Node]) -> None:
    assert observations[0].code.originalText.resolved() == "Potassium"
    # a reference to an ID that does not exist: the element's own text (none here)
    assert observations[1].code.originalText.resolved() == ""
    # not a fragment reference: the element's own text, whitespace collapsed
    assert observations[2].code.originalText.resolved() == "Glucose"


def test_narrative_lookup_collapses_whitespace(document: CdaDocument) -> None:
    assert document.narrative("#value1") == "5.1 mmol/L"
    assert document.narrative("allergen1") == "Penicillin G"
    assert document.narrative("#nope") == ""


# -- narrative XHTML -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xhtml(section: Node) -> str:
    div = section.text.xhtml()
    assert div is not None
    return div


def test_xhtml_is_a_fhir_div(xhtml: str) -> None:
    root = etree.fromstring(xhtml)
    assert root.tag == f"{{{XHTML}}}div"
    assert root.nsmap == {None: XHTML}
    assert xhtml.startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert xhtml_problems(xhtml) == []


def test_xhtml_keeps_structure_and_ids(xhtml: str) -> None:
    root = etree.fromstring(xhtml)
    ns = {"x": XHTML}
    assert root.xpath("x:p[@id='para1']", namespaces=ns)
    assert root.xpath("x:table/x:tbody/x:tr[@id='row1']/x:td[@id='test1']", namespaces=ns)
    assert root.xpath("x:table/x:thead/x:tr/x:th[@colspan='2']", namespaces=ns)
    assert len(root.xpath("x:ol/x:li", namespaces=ns)) == 2
    assert root.xpath("x:ul/x:li", namespaces=ns)[0].text == "bullet"
    assert root.xpath("x:ol/x:li/x:span[@id='allergen1']", namespaces=ns)
    assert root.xpath("x:p/x:sup", namespaces=ns) and root.xpath("x:p/x:br", namespaces=ns)
    assert "kept as text" in xhtml


def test_xhtml_drops_unsafe_links_and_attributes(xhtml: str) -> None:
    root = etree.fromstring(xhtml)
    hrefs = [a.get("href") for a in root.iter(f"{{{XHTML}}}a")]
    assert hrefs == [None, None, None, "https://example.org/leaflet", "#para1"]
    lowered = xhtml.lower()
    for unsafe in (
        "javascript:",
        "data:text",
        "onclick",
        "steal()",
        "stylecode",
        "border=",
        "width=",
        "referencedobject",
        "<script",
        "foreign",
    ):
        assert unsafe not in lowered, unsafe
    attributes = {name for element in root.iter() for name in element.attrib}
    assert attributes <= {"id", "colspan", "rowspan", "href"}


def test_xhtml_escapes_text(xhtml: str) -> None:
    assert "Patient &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in xhtml
    paragraph = etree.fromstring(xhtml).find(f"{{{XHTML}}}p")
    assert paragraph is not None
    assert paragraph.text == "Patient <script>alert(1)</script> & co"
    assert len(paragraph) == 0


def test_xhtml_of_an_empty_narrative_is_none(doc: Node) -> None:
    sections = doc.all("component/structuredBody/component/section")
    assert sections[1].text.xhtml() is None  # whitespace only
    assert sections[1].title.xhtml() is not None  # any element with text works


# -- the document ----------------------------------------------------------------------------------
@pytest.mark.parametrize("template, name", sorted(DOCUMENT_TYPES.items()))
def test_document_types(template: str, name: str) -> None:
    for order in ((US_REALM_HEADER, template), (template, US_REALM_HEADER)):
        document = CdaDocument(cda(templates=order).encode(), PathCache())
        assert document.document_type == name
        assert document.template_ids == list(order)


def test_every_document_type_is_routed_and_reported(converter: Converter) -> None:
    for template in DOCUMENT_TYPES:
        route = converter.cda_routes.resolve_document([US_REALM_HEADER, template])
        assert route.template == "ClinicalDocument"
    conversion = converter.convert(
        cda(templates=(US_REALM_HEADER, "2.16.840.1.113883.10.20.22.1.8")).encode(),
        input_type="cda",
    )[0]
    assert conversion.message_type == "Discharge Summary"
    assert conversion.control_id == "1.2.250.1.999.3.1^QA-0001"


def test_other_cda_documents_are_generic() -> None:
    for templates in ((), (US_REALM_HEADER,), ("1.2.250.1.213.1.1.1.4",)):
        document = CdaDocument(cda(templates=templates).encode(), PathCache())
        assert document.document_type == "CDA"


@pytest.mark.parametrize(
    "doc_id, control_id",
    [
        ('<id root="1.2.250.1.999.3.1" extension="QA-0001"/>', "1.2.250.1.999.3.1^QA-0001"),
        (
            '<id root="c266ad2e-6a56-4b4b-9b6f-2f27ad6e2d3b"/>',
            "c266ad2e-6a56-4b4b-9b6f-2f27ad6e2d3b",
        ),
        ('<id nullFlavor="NI"/>', ""),
        ("", ""),
    ],
)
def test_control_id(doc_id: str, control_id: str) -> None:
    assert CdaDocument(cda(doc_id=doc_id).encode(), PathCache()).control_id == control_id


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(ConverterConfig())


def test_a_document_without_id_fails_with_its_location(converter: Converter) -> None:
    from converter import MappingError

    with pytest.raises(MappingError) as caught:
        converter.convert(cda(doc_id="").encode(), input_type="cda")
    assert "ClinicalDocument/id" in str(caught.value)


def test_source_bytes(tmp_path: Path, converter: Converter) -> None:
    data = cda(title="Synthèse — été").encode()
    document = CdaDocument(data, PathCache())
    assert base64.b64decode(document.source_base64()) == data
    assert document.source_sha1() == base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert document.source_size == len(data)
    bundle = converter.convert(data, input_type="cda")[0].bundle
    source = _source_attachment(bundle)
    assert source["data"] == document.source_base64()
    assert source["hash"] == document.source_sha1()
    assert source["size"] == len(data)


def _source_attachment(bundle: dict[str, Any]) -> dict[str, Any]:
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] != "DocumentReference":
            continue
        for content in resource.get("content", []):
            if content["attachment"].get("contentType") == "text/xml":
                return dict(content["attachment"])
    raise AssertionError("no DocumentReference to the source document")
