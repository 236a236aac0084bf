"""Flag syntax newer than Python 2.4 on given lines of a Python 2 module.

Run with Python 2.7, whose ast reads xend's Python 2 code (Python 3's cannot,
so tools/py24check.py checks only our own package):

    python2.7 tests/py24_added_lines.py FILE LINE[,LINE...] [FILE LINES ...]

Only nodes starting on the listed lines (what the series added to a xend
module) count: the rest is Xen's own code.  Exit status 1 with one line per
finding.  Itself Python 2.7 code: run by tests/test_patches.py.
"""
import ast
import re
import sys

_AS = re.compile(r"^\s*except\b[^:#]*\bas\b")


def findings(path, lines):
    source = open(path).read()
    tree = ast.parse(source, path)
    text = source.split("\n")
    out = []

    def flag(lineno, what):
        if lineno in lines:
            out.append("%s:%d: %s is not Python 2.4" % (path, lineno, what))

    for node in ast.walk(tree):
        lineno = getattr(node, "lineno", None)
        if lineno is None:
            continue
        kind = type(node).__name__
        if kind == "IfExp":
            flag(lineno, "a conditional expression")
        elif kind == "With":
            flag(lineno, "'with'")
        elif kind in ("Set", "SetComp", "DictComp"):
            flag(lineno, "a set literal or a comprehension of a set or dict")
        elif kind == "ImportFrom" and node.level:
            flag(lineno, "a relative import")
        elif kind == "TryFinally" and len(node.body) == 1 and \
                type(node.body[0]).__name__ == "TryExcept" and \
                node.body[0].lineno == lineno:
            flag(lineno, "try/except/finally in one statement")
        elif kind == "Call":
            func = node.func
            if type(func).__name__ == "Name" and func.id in ("any", "all", "next"):
                flag(lineno, "%s()" % func.id)
            if type(func).__name__ == "Attribute" and func.attr == "format" and \
                    type(func.value).__name__ == "Str":
                flag(lineno, "str.format")
        elif kind in ("FunctionDef", "ClassDef"):
            if kind == "ClassDef" and node.decorator_list:
                flag(lineno, "a class decorator")
            for deco in node.decorator_list:
                if type(deco).__name__ == "Attribute" and \
                        deco.attr in ("setter", "getter", "deleter"):
                    flag(deco.lineno, "a property .%s" % deco.attr)
    for lineno in sorted(lines):
        if 0 < lineno <= len(text) and _AS.match(text[lineno - 1]):
            flag(lineno, "'except X as name'")
    return out


def main(argv):
    bad = []
    for i in range(0, len(argv), 2):
        lines = set([int(n) for n in argv[i + 1].split(",") if n])
        bad.extend(findings(argv[i], lines))
    for line in bad:
        sys.stdout.write(line + "\n")
    return bad and 1 or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
