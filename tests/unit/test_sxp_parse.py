"""Replies are read as Xen 3.1's own sxp parser reads them (defect 4)."""

import sys

import pytest

from tests.unit import xend31_sxp
from xend_fastmig.sxp_parse import Malformed, first_value, parser_in_use
from xend_fastmig.verdict import ERR, OK, UNKNOWN, parse_verdict

needs_xend31 = pytest.mark.skipif(
    xend31_sxp.sxp_path() is None or xend31_sxp.python2() is None,
    reason="needs Xen 3.1's sxp.py (XEN31_TREE) and a Python 2.7")


def test_outside_xend_our_own_parser_is_used():
    assert parser_in_use() == "own"


RULE_CASES = [
    ("(ok)", ["ok"], 4),
    ("  (ok)\n", ["ok"], 6),
    ("(err (value 'a ( b'))", ["err", ["value", "a ( b"]], 21),
    ("(err (value \"it's )\"))", ["err", ["value", "it's )"]], 22),
    ("(a 'x\\'y' \"p\\\"q\")", ["a", "x'y", 'p"q'], 17),
    ("('\\n\\t\\\\\\x41\\101\\0')", ["\n\t\\AA\x00"], 20),
    ("('\\q')", ["\\"], 6),
    ("# a comment (\n(ok)", ["ok"], 18),
    ("(a#comment )\n)", ["a"], 14),
    ("(a (b (c)) d)", ["a", ["b", ["c"]], "d"], 13),
    ("(caf\xe9 x\x01)", ["caf\xe9", "x\x01"], 9),
    ("('\\7x')", ["\x07x"], 7),
    ("ok ", "ok", 2),
    # X is no space, separator, quote, octal or hex digit, nor an escape.
    ("(X 'X' \"X\" aXb 'a\\Xb')", ["X", "X", "X", "aXb", "a\\b"], 22),
    ("('\\a\\b\\t\\n\\v\\f\\r\\\\\\'\\\"')",
     ["\a\b\t\n\v\f\r\\'\""], 24),
    ("(a\tb\nc\vd\fe\rf g)", ["a", "b", "c", "d", "e", "f", "g"], 15),
    # A separator ends an atom and starts the next one (as 3.1 does).
    ("(a{b}c(d)e<f>g[h]i!j;k)",
     ["a", "{b", "}c", ["d"], "e", "<f", ">g", "[h", "]i", "!j", ";k"], 23),
    ("({)", ["{"], 3),
    ("('\\x4a\\x4A\\x0f')", ["JJ\x0f"], 16),
    ("('\\0011\\08\\377')", ["\x011\x008\xff"], 16),
]
INCOMPLETE = [
    "(err (value 'a ( b')", "(ok", "'open", "(a '\\", "(a '\\x4",
    "(a '\\01", "# comment without its newline", "", "   ", "atom",
]
MALFORMED = [
    ")", "(a \x00)", "(\xe9t\xe9)", "(a '\\xzz')", "(a '\\777')",
    # Just out of range; and out of range at the text's very end.
    "(a '\\400')", "(a '\\777",
]


@pytest.mark.parametrize("text,value,end", RULE_CASES)
def test_our_parser_follows_xend_rules(text, value, end):
    assert first_value(text) == (value, end)


@pytest.mark.parametrize("text", INCOMPLETE)
def test_incomplete_text_may_still_become_a_value(text):
    assert first_value(text) == (None, -1)


@pytest.mark.parametrize("text", MALFORMED + ["\x04"])
def test_text_that_can_never_parse_is_malformed(text):
    with pytest.raises(Malformed):
        first_value(text)


@needs_xend31
def test_xend31s_parser_reads_the_rule_cases_as_ours_does():
    texts = [case[0] for case in RULE_CASES] + INCOMPLETE + MALFORMED
    expected = [[value, end] for _, value, end in RULE_CASES] \
        + [None] * len(INCOMPLETE) + ["malformed"] * len(MALFORMED)
    # 3.1 sees an atom's end one character later (it consumes it).
    texts_of_rules = [c[0] for c in RULE_CASES]
    expected[texts_of_rules.index("ok ")] = ["ok", 3]
    # 3.1 decodes the hex digits a-f as 0-5 (sxp_parse's doc): same end.
    expected[texts_of_rules.index("('\\x4a\\x4A\\x0f')")] = [
        ["@@\x05"], 16]
    assert xend31_sxp.xend_parse(texts) == expected


@needs_xend31
def test_driving_xend31s_parser_ours_ends_values_as_with_our_own():
    """Inside xend ``first_value`` drives xend's Parser: the same ends, the
    same (None, -1) while incomplete, xend's own message when malformed."""
    texts = [case[0] for case in RULE_CASES] + INCOMPLETE + MALFORMED
    for text, read in zip(texts, xend31_sxp.ours_via_xend(texts)):
        if text in INCOMPLETE:
            assert read == {"xend_error": None, "ours": [None, -1]}, text
        elif text in MALFORMED:
            assert read["xend_error"], text
            assert read["ours"] == ["malformed", read["xend_error"]], text
        else:
            value, end = first_value(text)
            assert read["ours"][1] == end, text
            if "\\x" not in text:
                assert read["ours"][0] == value, text


@needs_xend31
def test_inside_xend_its_parser_is_found_and_used():
    found = xend31_sxp.discovered_inside_xend()
    assert found["in_use"] == "xend"
    # 3.1 decodes the hex digit a as 0 (sxp_parse's doc): xend's read it.
    assert found["hex"] == [["@"], 8]


def test_an_sxp_module_without_a_parser_is_not_xends(monkeypatch):
    import types
    from xend_fastmig import sxp_parse
    xen = types.ModuleType("xen")
    xen.xend = types.ModuleType("xen.xend")
    xen.xend.sxp = types.ModuleType("xen.xend.sxp")
    monkeypatch.setitem(sys.modules, "xen", xen)
    monkeypatch.setitem(sys.modules, "xen.xend", xen.xend)
    monkeypatch.setitem(sys.modules, "xen.xend.sxp", xen.xend.sxp)
    monkeypatch.setattr(sxp_parse, "_XEND_SXP", [])
    assert parser_in_use() == "own"
    assert first_value("(ok)") == (["ok"], 4)


@pytest.mark.parametrize("text", [
    # 3.1's relocation server: repr() quotes, so single quotes as a rule.
    "(err (type \"<class 'XendError'>\") (value 'unbalanced ('))",
    "(err (type \"<class 'XendError'>\") (value 'a lone \" quote'))",
    "(err (value 'closing ) ) )'))",
    "(err (value \"both ' and \\\" (\"))",
])
def test_repr_quoted_error_verdicts_are_errors(text):
    """Regression (defect 4): these were UNKNOWN, and the source destroyed."""
    assert parse_verdict(text + "\n").kind == ERR


@pytest.mark.parametrize("text,kind", [
    ("( ok )", OK), ("(\"ok\")", OK), ("(ok)(ok)", UNKNOWN),
    ("(err)", ERR), ("(err 'x)", UNKNOWN), ("(errors)", UNKNOWN),
    ("((err))", UNKNOWN), ("()", UNKNOWN), ("err", UNKNOWN),
])
def test_verdict_words_not_spelling(text, kind):
    assert parse_verdict(text).kind == kind


@needs_xend31
def test_ours_and_xend31s_parser_agree_on_real_relocation_replies():
    """The exact bytes a 3.1 relocation server writes, read by 3.1's Parser,
    by ours on Python 2 (alone and driving 3.1's), and by ours here."""
    replies = xend31_sxp.xend_replies()
    assert len(replies) == len(xend31_sxp.TRICKY_VALUES) + 1
    for reply in replies:
        wire = reply["wire"]
        xend_value, xend_end = reply["xend"]
        assert xend_end == len(wire) - 1, wire
        for ours in (reply["ours_py2"], reply["ours_py2_via_xend"],
                     list(first_value(wire))):
            value, end = ours
            assert end == xend_end, wire
            if "\\x" in wire:
                # 3.1 decodes \xe9 as 'I' (see sxp_parse): same shape.
                assert len(value) == len(xend_value)
                assert value[:2] == xend_value[:2]
            else:
                assert value == xend_value, wire
        expected = OK
        if xend_value[0] == "err":
            expected = ERR
        assert parse_verdict(wire).kind == expected, wire


@needs_xend31
def test_values_round_trip_through_xend31s_writer():
    replies = xend31_sxp.xend_replies()
    for reply, sent in zip(replies[1:], xend31_sxp.TRICKY_VALUES):
        value = first_value(reply["wire"])[0]
        assert value[0] == "err"
        if sent:
            assert value[2] == ["value", sent]
        else:
            # sxp.show writes an empty string as an empty atom.
            assert value[2] == ["value"]


@pytest.mark.parametrize("text,message", [
    (")", "syntax error: )"),
    ("(a \x00)", "invalid character: code 0"),
    ("(a '\\xzz')", "invalid hex escape"),
    ("(a '\\xX1')", "invalid hex escape"),
    ("(a '\\777')", "invalid octal escape: out of range"),
])
def test_malformed_text_says_why(text, message):
    with pytest.raises(Malformed) as info:
        first_value(text)
    assert str(info.value) == message


def _ours(text):
    try:
        value, end = first_value(text)
    except Malformed:
        return "malformed"
    if end < 0:
        return None
    return [value, end]


def _fuzz_texts():
    import random
    chance = random.Random(11)
    alphabet = "()'\"\\ \n#{a0x7;X"
    texts = []
    for char in range(32, 127):
        texts.append("(" + chr(char) + ")")
        texts.append(chr(char) + " ")
    for _ in range(400):
        length = chance.randint(1, 14)
        texts.append("".join(chance.choice(alphabet) for _ in range(length)))
    return texts


@needs_xend31
def test_ours_agrees_with_xend31s_parser_on_random_text():
    """Where each value ends, whether it can still complete, whether it is
    malformed; and the values themselves but for 3.1's hex quirk.  Every
    text ends at once (a lone separator once looped forever)."""
    texts = _fuzz_texts()
    for text, theirs in zip(texts, xend31_sxp.xend_parse(texts)):
        ours = _ours(text)
        if isinstance(ours, list) and not isinstance(ours[0], list) \
                and text.lstrip()[0] not in "'\"":
            # A top-level atom (never a verdict, garbage to read_reply):
            # 3.1 sees its end one character later, and fails there if
            # that character is a ")".
            if theirs == "malformed":
                continue
            ours = [ours[0], ours[1] + 1]
        if isinstance(ours, list) and isinstance(theirs, list) \
                and "\\x" in text:
            ours, theirs = ours[1], theirs[1]
        assert ours == theirs, repr(text)
