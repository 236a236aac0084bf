"""Carry a module of ``xend_fastmig`` into the tree's ``xen.xend.fastmig``.

In the tree the package lives inside xend's own package (so RPM specs that
list ``%{python_sitearch}/xen`` pick it up), and Python 2.4 has only
absolute imports: the package's imports of itself must name the new place.
Only the module name of an import statement changes; every other byte of
the file stays, so a reader can diff the two copies.  A use of the name
``xend_fastmig`` outside an import (``xend_fastmig.drain.X``) would break
in the tree and is refused rather than guessed at.
"""

from __future__ import annotations

import io
import tokenize

from .series import IN_TREE_PACKAGE as NEW
from .series import PACKAGE as OLD

__all__ = ["rewrite_imports", "leftover_names", "OLD", "NEW"]


def _names(source: str):
    return [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type == tokenize.NAME]


def leftover_names(source: str) -> list[tuple[int, str]]:
    """(line number, line) of every ``xend_fastmig`` name in code (strings
    and comments do not count)."""
    lines = source.splitlines()
    return [(t.start[0], lines[t.start[0] - 1].strip())
            for t in _names(source) if t.string == OLD]


def _import_module_tokens(source: str) -> list[tokenize.TokenInfo]:
    """The ``xend_fastmig`` tokens that begin the module name of an import
    statement: ``from xend_fastmig[.m] import ...`` and each
    ``xend_fastmig[.m]`` listed after ``import``."""
    found = []
    statement: list[tokenize.TokenInfo] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER) or \
                (tok.type == tokenize.OP and tok.string == ";"):
            found.extend(_in_statement(statement))
            statement = []
        elif tok.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT,
                              tokenize.DEDENT):
            statement.append(tok)
    return found


def _in_statement(toks: list[tokenize.TokenInfo]) -> list[tokenize.TokenInfo]:
    if not toks or toks[0].type != tokenize.NAME:
        return []
    if toks[0].string == "from":
        if len(toks) > 1 and toks[1].string == OLD:
            return [toks[1]]
        return []
    if toks[0].string != "import":
        return []
    out = []
    expect_module = True
    for tok in toks[1:]:
        if expect_module and tok.string == OLD:
            out.append(tok)
        if tok.type == tokenize.OP and tok.string in (",", "("):
            expect_module = True
        elif not (tok.type == tokenize.OP and tok.string == ")"):
            expect_module = False
    return out


def rewrite_imports(source: str, filename: str = "<module>") -> str:
    """``source`` with its imports of ``xend_fastmig`` pointing at
    ``xen.xend.fastmig``.  Raises ValueError if the name is used elsewhere."""
    lines = source.split("\n")
    # Right to left, so that earlier columns on a line stay valid.
    for tok in sorted(_import_module_tokens(source), key=lambda t: t.start, reverse=True):
        row, col = tok.start
        line = lines[row - 1]
        assert line[col:col + len(OLD)] == OLD
        lines[row - 1] = line[:col] + NEW + line[col + len(OLD):]
    result = "\n".join(lines)
    left = leftover_names(result)
    if left:
        raise ValueError("%s: the name %s is used outside an import at line %d "
                         "(`%s`); in the tree the package is %s: import what "
                         "you use with `from %s.<module> import <name>`"
                         % (filename, OLD, left[0][0], left[0][1], NEW, OLD))
    return result
