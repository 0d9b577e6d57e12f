"""The tolerant header reader's required-field check (``listeners.mllp.header``).

MSH-10 is required (R): a message without it once got AA with an empty MSA-2, was
delivered, and escaped duplicate detection. It gets AR with ERR-3 101 at MSH-10.
"""

from __future__ import annotations

import pytest

from listeners.mllp.ack import AckCode, build_ack, parse_ack, read_header

from ._support import message


@pytest.mark.parametrize("control_id", ["", "   ", '""'])
def test_a_message_without_msh10_is_rejected_with_101_at_msh10(control_id: str) -> None:
    payload = message(control_id)
    header = read_header(payload)
    assert (header.problem_code, header.problem_location) == ("101", "MSH-10")
    assert not header.readable
    outcome = header.rejection()
    assert outcome is not None and outcome.code is AckCode.AR
    ack = parse_ack(build_ack(payload, outcome))
    assert ack.code == "AR" and ack.error_codes == ("101",)
    err = next(s for s in ack.segments if s.startswith("ERR|")).split("|")
    assert err[2] == "MSH^1^10"  # ERR-2, the location
    assert err[4] == "E"


def test_an_msh_that_stops_before_msh10_lacks_it_too() -> None:
    header = read_header(b"MSH|^~\\&|APP|FAC|RCV|RFAC|2024||ADT^A01\rPID|1\r")
    assert (header.problem_code, header.problem_location) == ("101", "MSH-10")


def test_enhanced_mode_rejects_with_cr() -> None:
    payload = message("", accept_ack="AL", application_ack="NE")
    ack = parse_ack(build_ack(payload, read_header(payload).rejection()))
    assert ack.code == "CR" and ack.error_codes == ("101",)


def test_a_valued_msh10_is_no_problem() -> None:
    assert read_header(message("0")).readable
    assert read_header(message(" C-1 ")).control_id == " C-1 "


def test_an_earlier_problem_is_reported_first() -> None:
    # One ERR per AR: the delimiters or the charset, which decide how the rest reads.
    assert read_header(message("", charset="KLINGON")).problem_code == "103"
    assert read_header(message("", msh2="^^\\&")).problem_code == "102"
