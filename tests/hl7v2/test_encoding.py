"""Escape sequences and delimiters (HL7 v2 chapter 2.7): ``converter.hl7v2.encoding``."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from converter.hl7v2.encoding import DEFAULT_ENCODING, Encoding, UndecodableEscape

ENC = Encoding()
# MSH-1 "#", MSH-2 "$%*@": component $, repetition %, escape *, sub-component @.
ODD = Encoding.from_msh("#", "$%*@")


# -- delimiters ------------------------------------------------------------------------
def test_default_delimiters() -> None:
    assert (ENC.field, ENC.component, ENC.repetition, ENC.escape, ENC.subcomponent) == (
        "|",
        "^",
        "~",
        "\\",
        "&",
    )
    assert ENC.truncation == ""
    assert ENC.msh2 == "^~\\&"
    assert DEFAULT_ENCODING == ENC


def test_from_msh_non_default_delimiters() -> None:
    assert Encoding.from_msh("#", "$%*@") == Encoding(
        field="#", component="$", repetition="%", escape="*", subcomponent="@", truncation=""
    )
    assert ODD.msh2 == "$%*@"


def test_from_msh_v27_truncation_character() -> None:
    enc = Encoding.from_msh("|", "^~\\&#")
    assert enc.truncation == "#"
    assert enc.msh2 == "^~\\&#"


def test_from_msh_short_msh2_has_no_escape_character() -> None:
    enc = Encoding.from_msh("|", "^~")
    assert enc.component == "^"
    assert enc.repetition == "~"
    assert enc.escape == ""
    assert enc.subcomponent == ""  # not invented: "&" is text in this message
    assert enc.msh2 == "^~"


def test_from_msh_three_characters_declare_no_subcomponent_separator() -> None:
    """MSH-2 is four characters (HL7 v2.5 §2.16.9.2; five from v2.7 with the truncation
    character). With three, the escape character is honoured and no sub-component
    separator is invented: "Smith & Jones" is text, and an ACK echoes "^~\\" alone."""
    enc = Encoding.from_msh("|", "^~\\")
    assert (enc.component, enc.repetition, enc.escape) == ("^", "~", "\\")
    assert enc.subcomponent == ""
    assert enc.msh2 == "^~\\"
    assert enc.escape_text("Smith & Jones|x") == "Smith & Jones\\F\\x"
    assert enc.unescape("Smith & Jones\\F\\x") == "Smith & Jones|x"
    # \T\ stands for a separator the message does not have: kept as written.
    assert enc.unescape("a\\T\\b") == "a\\T\\b"


# -- delimiter escapes -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("escaped", "expected"),
    [
        ("\\F\\", "|"),
        ("\\S\\", "^"),
        ("\\T\\", "&"),
        ("\\R\\", "~"),
        ("\\E\\", "\\"),
        ("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", "a|b^c&d~e\\f"),
        ("\\F\\\\F\\", "||"),
        ("no escapes at all", "no escapes at all"),
        ("", ""),
    ],
)
def test_unescape_delimiters(escaped: str, expected: str) -> None:
    assert ENC.unescape(escaped) == expected


@pytest.mark.parametrize(
    ("escaped", "expected"),
    [
        ("*F*", "#"),
        ("*S*", "$"),
        ("*T*", "@"),
        ("*R*", "%"),
        ("*E*", "*"),
        ("1*S*2*F*3", "1$2#3"),
        # The default escape character means nothing under MSH-2 "$%*@".
        ("\\F\\", "\\F\\"),
    ],
)
def test_unescape_with_non_default_delimiters(escaped: str, expected: str) -> None:
    assert ODD.unescape(escaped) == expected


def test_truncation_escape_only_when_declared() -> None:
    assert Encoding.from_msh("|", "^~\\&#").unescape("12\\P\\34") == "12#34"
    assert ENC.unescape("12\\P\\34") == "12\\P\\34"


def test_escaped_escape_before_r_is_not_a_repetition_escape() -> None:
    # python-hl7 issue #84: "\E\R\" is an escaped backslash followed by "R\".
    assert ENC.unescape("\\E\\R\\") == "\\R\\"
    assert ENC.unescape("C:\\E\\temp\\E\\new") == "C:\\temp\\new"
    assert ENC.unescape("\\E\\E\\") == "\\E\\"


# -- hexadecimal data ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("escaped", "codec", "expected"),
    [
        ("\\XC3A9\\", "utf-8", "é"),
        ("\\Xc3a9\\", "utf-8", "é"),
        ("caf\\XC3A9\\ cr\\XC3A8\\me", "utf-8", "café crème"),
        ("\\XE282AC\\", "utf-8", "€"),
        ("\\XF09F9880\\", "utf-8", "\U0001f600"),
        ("\\XE9\\", "iso-8859-1", "é"),
        ("\\XE9E8\\", "iso-8859-1", "éè"),
        ("\\XA4\\", "iso-8859-15", "€"),
        ("\\X0D0A\\", "utf-8", "\r\n"),
        ("\\X41\\", "ascii", "A"),
    ],
)
def test_unescape_hex(escaped: str, codec: str, expected: str) -> None:
    assert ENC.unescape(escaped, codec) == expected


def test_a_character_split_over_adjacent_hex_escapes_is_decoded() -> None:
    # Engines that escape byte by byte write é (C3 A9 in UTF-8) as two sequences.
    assert ENC.unescape("Ren\\XC3\\\\XA9\\e", "utf-8") == "Renée"
    assert ENC.unescape("\\XE2\\\\X82\\\\XAC\\", "utf-8") == "€"
    assert ENC.unescape("\\XC3\\\\XA9\\", "iso-8859-1") == "Ã©"
    # Not adjacent: each stands alone.
    assert ENC.unescape("\\XC3\\ \\XA9\\", "utf-8") == "\\XC3\\ \\XA9\\"


@pytest.mark.parametrize(
    ("escaped", "codec"),
    [
        ("\\X\\", "utf-8"),  # no digits
        ("\\XABC\\", "utf-8"),  # odd number of digits
        ("\\XZZ\\", "utf-8"),  # not hexadecimal
    ],
)
def test_malformed_hex_is_kept_literally(escaped: str, codec: str) -> None:
    for undecodable in ("keep", "raise", "replace"):
        assert ENC.unescape(escaped, codec, undecodable=undecodable) == escaped


@pytest.mark.parametrize(
    ("escaped", "codec", "replaced"),
    [
        ("\\XE9\\", "utf-8", "\ufffd"),  # a lone Latin-1 byte is not UTF-8
        ("\\XC3\\", "utf-8", "\ufffd"),  # truncated UTF-8 sequence
        ("\\XC3A9\\", "ascii", "\ufffd\ufffd"),
        ("Ren\\XE9\\e", "utf-8", "Ren\ufffde"),
    ],
)
def test_undecodable_hex_is_kept_raised_or_replaced(
    escaped: str, codec: str, replaced: str
) -> None:
    """Well-formed ``\\Xhh\\`` whose bytes are not valid in the charset. Message values
    (converter.hl7v2.value) raise, and make that a CharsetError at the value's path or,
    in lenient mode, U+FFFD and a warning: as the same byte written raw. Keeping the
    escape as written (the default, once the converter's behaviour) is for the service's
    header reads (MSH-10 for the ACK), which must not fail."""
    assert ENC.unescape(escaped, codec) == escaped
    assert ENC.unescape(escaped, codec, undecodable="replace") == replaced
    with pytest.raises(UndecodableEscape) as caught:
        ENC.unescape(escaped, codec, undecodable="raise")
    assert caught.value.sequence == escaped.removeprefix("Ren").removesuffix("e")
    assert caught.value.codec == codec
    assert escaped not in str(caught.value)


# -- formatting commands ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("escaped", "expected"),
    [
        ("line 1\\.br\\line 2", "line 1\nline 2"),
        ("a\\.sp\\b", "a\nb"),
        ("a\\.sp3\\b", "a\n\n\nb"),
        ("a\\.sk2\\b", "a  b"),
        ("\\H\\bold\\N\\ normal", "bold normal"),
        ("\\.fi\\a\\.nf\\b\\.ce\\c", "abc"),
        ("\\.in+4\\a\\.ti-2\\b", "ab"),
        ("\\C2842\\x\\M2442\\y", "xy"),
    ],
)
def test_formatting_commands(escaped: str, expected: str) -> None:
    assert ENC.unescape(escaped) == expected


@pytest.mark.parametrize("command", [".sp", ".sk"])
def test_a_skip_count_over_the_limit_is_kept_as_written(command: str) -> None:
    """A few bytes of ``\\.sp200000000\\`` would be 200 MB of blank lines on every access
    of the value (MSH-10 is read before the ACK): counts over 100 are not applied."""
    assert (
        ENC.unescape(f"a\\{command}100\\b") == "a" + ("\n" if command == ".sp" else " ") * 100 + "b"
    )
    for count in ("101", "200000000", "9" * 5000):
        escaped = f"a\\{command}{count}\\b"
        assert ENC.unescape(escaped) == escaped


# -- malformed sequences ---------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "\\Q\\",
        "\\ZZZ\\",
        "a\\.xx\\b",
        "abc\\F",  # unterminated
        "abc\\",
        "\\",
        "\\\\",
        "50\\% off",
    ],
)
def test_unknown_and_unterminated_sequences_are_kept(text: str) -> None:
    assert ENC.unescape(text) == text


def test_unknown_sequence_does_not_hide_a_following_one() -> None:
    # The opening delimiter of an unknown sequence is kept and decoding resumes after it.
    assert ENC.unescape("\\Q\\F\\") == "\\Q|"
    assert ENC.unescape("\\Q\\ \\F\\") == "\\Q\\ |"


def test_no_escape_character_means_no_decoding() -> None:
    enc = Encoding.from_msh("|", "^~")
    assert enc.unescape("\\F\\") == "\\F\\"
    assert enc.escape_text("a|b") == "a|b"


# -- escape_text -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a|b^c&d~e\\f", "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"),
        ("\\F\\", "\\E\\F\\E\\"),
        ("line 1\nline 2", "line 1\\.br\\line 2"),
        ("cr\rlf\n", "cr\\X0D\\lf\\.br\\"),
        ("plain", "plain"),
        ("", ""),
        ("#", "#"),  # no truncation character declared
        # Two quotes alone would read as HL7's explicit null.
        ('""', '\\X22\\"'),
        ('say ""', 'say ""'),
    ],
)
def test_escape_text(text: str, expected: str) -> None:
    assert ENC.escape_text(text) == expected


def test_escape_text_non_default_delimiters() -> None:
    assert ODD.escape_text("#$%*@|^") == "*F**S**R**E**T*|^"


def test_escape_text_truncation_character() -> None:
    enc = Encoding.from_msh("|", "^~\\&#")
    assert enc.escape_text("a#b") == "a\\P\\b"
    assert enc.unescape("a\\P\\b") == "a#b"


def test_escape_text_line_break_when_dot_is_a_delimiter() -> None:
    enc = Encoding.from_msh("|", ".~\\&")
    assert enc.escape_text("a\nb.c") == "a\\X0A\\b\\S\\c"
    assert enc.unescape(enc.escape_text("a\nb.c")) == "a\nb.c"


def test_escaped_null_reads_back_as_two_quotes() -> None:
    assert ENC.unescape(ENC.escape_text('""')) == '""'


# -- properties ------------------------------------------------------------------------
_DELIMITER_CHARS = list(string.punctuation)


@st.composite
def encodings(draw: st.DrawFn) -> Encoding:
    """Random valid delimiter sets: distinct printable non-alphanumeric characters; MSH-2
    of 3 (no sub-component separator), 4 or 5 (truncation) characters."""
    msh2_length = draw(st.sampled_from([3, 4, 5]))
    chars = draw(
        st.lists(
            st.sampled_from(_DELIMITER_CHARS),
            min_size=1 + msh2_length,
            max_size=1 + msh2_length,
            unique=True,
        )
    )
    return Encoding.from_msh(chars[0], "".join(chars[1:]))


def _delimiters(enc: Encoding) -> list[str]:
    chars = [enc.field, enc.component, enc.repetition, enc.subcomponent, enc.truncation]
    return [char for char in chars if char] + ["\r", "\n"]


# Text that is rich in delimiters and escape-like sequences, plus arbitrary text.
_tricky_text = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from([*string.punctuation, "E", "F", "X", "0", "D", "\r", "\n"])),
)


@given(_tricky_text)
@example('""')
@example("\\E\\R\\\r\n")
@settings(max_examples=300)
def test_escape_round_trip_default(text: str) -> None:
    escaped = ENC.escape_text(text)
    assert ENC.unescape(escaped) == text
    for char in _delimiters(ENC):
        assert char not in escaped


@given(encodings(), _tricky_text)
@example(Encoding.from_msh("|", ".~\\&"), "a\nb")
@example(Encoding.from_msh("|", "^~.&"), "a\nb.")
@example(Encoding.from_msh("#", "$%*@!"), '""')
@example(Encoding.from_msh("|", "^~\\"), "Smith & Jones")
@settings(max_examples=300)
def test_escape_round_trip_random_delimiters(enc: Encoding, text: str) -> None:
    escaped = enc.escape_text(text)
    assert enc.unescape(escaped) == text
    for char in _delimiters(enc):
        assert char not in escaped
    assert escaped != '""'
    assert enc.msh2 == "".join(
        [enc.component, enc.repetition, enc.escape, enc.subcomponent, enc.truncation]
    )


@given(st.binary(max_size=12), st.sampled_from(["utf-8", "iso-8859-1", "ascii", "gb18030"]))
@example(b"\xc3\xa9", "utf-8")
@example(b"\xe9", "utf-8")
@settings(max_examples=300)
def test_hex_escapes_decode_as_the_same_bytes_written_raw(data: bytes, codec: str) -> None:
    """``\\Xhh..\\`` is the bytes it names: it decodes exactly when they do, to the same
    text, byte by byte or in one sequence; ``replace`` is the codec's own replacement."""
    whole = f"\\X{data.hex()}\\" if data else ""
    bytewise = "".join(f"\\X{byte:02X}\\" for byte in data)
    try:
        expected = data.decode(codec)
    except UnicodeDecodeError:
        for escaped in (whole, bytewise):
            with pytest.raises(UndecodableEscape):
                ENC.unescape(escaped, codec, undecodable="raise")
            replaced = ENC.unescape(escaped, codec, undecodable="replace")
            assert replaced == data.decode(codec, errors="replace")
        return
    for escaped in (whole, bytewise):
        for undecodable in ("keep", "raise", "replace"):
            assert ENC.unescape(escaped, codec, undecodable=undecodable) == expected
