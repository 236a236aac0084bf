"""Reading the first s-expression of a reply, as xend's own parser reads it.

xend writes replies with ``sxp.show``: string atoms go out as Python's
``repr()``, so single quotes as a rule, double quotes when the text holds a
single quote, backslash escapes, and any parenthesis, quote or newline
inside.  A reader that knows double quotes only never finds the end of
``(err (value 'a ( b'))``.  So inside xend the reply is read by xend's own
``xen.xend.sxp.Parser`` (imported lazily: this package must import
without xend), and elsewhere (Python 3, tests, the rehearsal) by
``_OwnParser``, which follows the same rules as Xen 3.1's ``sxp.py``:

* outside strings: whitespace separates; ``#`` starts a comment up to the
  end of the line; ``(`` and ``)`` open and close lists; ``'`` and ``"``
  open strings; other printable characters make atoms, which end at
  whitespace, ``#`` or one of ``{}()<>[]!;``; ``)`` with no open list and
  a character that is not printable ASCII are errors;
* inside strings: only the opening quote closes; a backslash escapes the
  next character: ``\\a\\b\\t\\n\\v\\f\\r\\\\\\'\\"``, ``\\xHH`` (two
  hex digits, else xend's parser fails), up to three octal digits (at most
  0377), and for any other character a backslash (xend drops that
  character).

Decoded string values may differ from xend's in one respect: 3.1's parser
decodes the hex digits a-f as 0-5 (``'\\xe9'`` becomes ``'I'``); ours does
not.  The handover only uses a value's structure and its raw text, so both
agree on everything that matters: where the expression ends, whether it is
a list, and its words.
"""

import string
import sys

__all__ = ["Malformed", "first_value", "parser_in_use"]

_SPACE = " \t\n\v\f\r"
_SEPARATORS = "{}()<>[]!;"
_COMMENT = "#"
_QUOTES = "\"'"
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = {"a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v",
            "f": "\f", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_ATOM_END = _SPACE + _SEPARATORS + _COMMENT


class Malformed(Exception):
    """The text cannot be an s-expression, however much more arrives."""


class _Incomplete(Exception):
    pass


class _OwnParser:
    """Xen 3.1's sxp rules over a complete buffer (see the module doc)."""

    def __init__(self, text):
        self.text = text

    def first(self, start):
        """``(value, end)`` of the first value at or after ``start``."""
        text = self.text
        stack = []
        index = start
        while True:
            if index >= len(text):
                raise _Incomplete()
            char = text[index]
            if char in _SPACE:
                index = index + 1
                continue
            if char == _COMMENT:
                newline = text.find("\n", index)
                if newline == -1:
                    raise _Incomplete()
                index = newline + 1
                continue
            if char == "(":
                stack.append([])
                index = index + 1
                continue
            if char == ")":
                if not stack:
                    raise Malformed("syntax error: )")
                value = stack.pop()
                index = index + 1
            elif char in _QUOTES:
                value, index = self._string(index)
            elif char not in string.printable:
                # Including 3.1's end of text, ^D: no value after all.
                raise Malformed("invalid character: code %d" % ord(char))
            else:
                value, index = self._atom(index)
            if not stack:
                return value, index
            stack[-1].append(value)

    def _atom(self, index):
        text = self.text
        # The first character is the atom's even when it is a separator
        # (3.1 starts an atom at any printable character): else a lone
        # "{" would never be consumed.
        end = index + 1
        while end < len(text) and text[end] not in _ATOM_END:
            end = end + 1
        if end >= len(text):
            # More characters of the same atom may follow.
            raise _Incomplete()
        return text[index:end], end

    def _string(self, index):
        text = self.text
        quote = text[index]
        index = index + 1
        pieces = []
        while True:
            if index >= len(text):
                raise _Incomplete()
            char = text[index]
            if char == quote:
                return "".join(pieces), index + 1
            if char != "\\":
                pieces.append(char)
                index = index + 1
                continue
            index = index + 1
            if index >= len(text):
                raise _Incomplete()
            char = text[index]
            if char in _ESCAPES:
                pieces.append(_ESCAPES[char])
                index = index + 1
            elif char == "x":
                digits = text[index + 1:index + 3]
                if not _all_in(digits, _HEX):
                    raise Malformed("invalid hex escape")
                if len(digits) < 2:
                    raise _Incomplete()
                pieces.append(chr(int(digits, 16)))
                index = index + 3
            elif char in _OCTAL:
                end = index
                while end < index + 3 and end < len(text) \
                        and text[end] in _OCTAL:
                    end = end + 1
                if end < index + 3 and end >= len(text):
                    raise _Incomplete()
                code = int(text[index:end], 8)
                if code > 255:
                    raise Malformed("invalid octal escape: out of range")
                pieces.append(chr(code))
                index = end
            else:
                pieces.append("\\")
                index = index + 1


def _all_in(text, allowed):
    for char in text:
        if char not in allowed:
            return False
    return True


def _own_first(text, start):
    try:
        return _OwnParser(text).first(start)
    except _Incomplete:
        return None, -1


def _xend_first(sxp, text, start):
    parser = sxp.Parser()
    index = start
    try:
        while index < len(text):
            parser.input_char(text[index])
            index = index + 1
            if parser.ready():
                value = parser.get_val()
                if not isinstance(value, list):
                    # xend sees an atom's end only at the next character,
                    # which it has consumed; ours ends before it.
                    index = index - 1
                return value, index
    except Exception:
        # ParseError, or 3.1's NameError on a bad hex escape.
        raise Malformed(str(sys.exc_info()[1]))
    return None, -1


# [module or None], filled at the first use.
_XEND_SXP = []


def _xend_sxp():
    if not _XEND_SXP:
        module = None
        try:
            from xen.xend import sxp
            if getattr(sxp, "Parser", None) is not None:
                module = sxp
        except Exception:
            # Not inside xend (or not its Python): our own parser.
            module = None
        _XEND_SXP.append(module)
    return _XEND_SXP[0]


def parser_in_use():
    """"xend" or "own": which parser ``first_value`` uses here."""
    if _xend_sxp() is None:
        return "own"
    return "xend"


def first_value(text, start=0, sxp=None):
    """The first value in ``text[start:]`` and the index just past it.

    Returns ``(value, end)``: a list (of lists and strings) or a string,
    or ``(None, -1)`` while the text may still become one.  Raises
    ``Malformed`` when it cannot.  ``sxp``: a module with xend's
    ``Parser`` to use instead of the one found at the first call.
    """
    if sxp is None:
        sxp = _xend_sxp()
    if sxp is None:
        return _own_first(text, start)
    return _xend_first(sxp, text, start)
