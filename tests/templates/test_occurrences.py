"""``occurrences()``: the rank of an OBX among those of its group repeating its code."""

from __future__ import annotations

from typing import Any

from converter.hl7v2.encoding import Encoding
from converter.hl7v2.message import Segment
from converter.templates.occurrences import Occurrences
from tests.templates.test_filters import codemaps, env  # noqa: F401 (fixtures)


def obx(code: str, sub_id: str = "", n: int = 1) -> Segment:
    fields = ["OBX", str(n), "NM", code, sub_id, "1"]
    return Segment("OBX", fields, Encoding(), "utf-8", f"OBX[{n}]")


def test_each_obx_gets_the_number_of_earlier_ones_with_its_code_system_and_sub_id() -> None:
    seen = Occurrences()
    ranks = [
        seen.of(obx("8867-4^Pulse^LN")),
        seen.of(obx("8867-4^Pulse^LN")),
        seen.of(obx("8867-4^Pouls^99LOC")),  # another code system
        seen.of(obx("8867-4^Pulse^LN", "2")),  # another sub-id
        seen.of(obx("8867-4^Pulse^LN"), "ORDER-2"),  # another key part from the root
        seen.of(obx("8867-4^Pulse^LN")),
    ]
    assert ranks == [0, 1, 0, 0, 0, 2]
    assert Occurrences().of(obx("8867-4^Pulse^LN")) == 0  # one counter per group


def test_templates_count_in_the_sandbox(env: Any) -> None:  # noqa: F811 (fixture)
    segments = [obx("A^^LN"), obx("B^^LN"), obx("A^^LN")]
    template = env.from_string(
        "{% set seen = occurrences() %}[{% for s in segments %}{{ seen.of(s) }},{% endfor %}0]"
    )
    assert template.render(segments=segments) == "[0,0,1,0]"
