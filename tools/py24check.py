"""Check that code meant to run inside xend parses as Python 2.4 would.

Python 2.4 is not obtainable here, so this is the closest honest check:
vermin with target 2.4, plus an AST pass for what vermin does not flag.
The AST pass reads Python 3's tree, so it also catches Python 2-only
syntax by failing to parse.

    python3 tools/py24check.py [FILE_OR_DIR ...]     (default: xend_fastmig/)

Exit status 0 when clean, 1 with one line per finding otherwise.
"""

import ast
import os
import shutil
import subprocess
import sys

__all__ = ["check_source", "check_paths"]


class _Finder(ast.NodeVisitor):
    def __init__(self, filename):
        self.filename = filename
        self.findings = []

    def _flag(self, node, what):
        self.findings.append("%s:%d: %s is not Python 2.4" % (
            self.filename, getattr(node, "lineno", 0), what))

    def visit_ExceptHandler(self, node):
        if node.name is not None:
            self._flag(node, "'except X as name'")
        self.generic_visit(node)

    def visit_IfExp(self, node):
        self._flag(node, "a conditional expression")
        self.generic_visit(node)

    def visit_Try(self, node):
        if node.handlers and node.finalbody:
            self._flag(node, "try/except/finally in one statement")
        self.generic_visit(node)

    def visit_With(self, node):
        self._flag(node, "'with'")
        self.generic_visit(node)

    def visit_ImportFrom(self, node):
        if node.level:
            self._flag(node, "a relative import")
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("any", "all", "print",
                                                      "next", "bin",
                                                      "format"):
            if func.id != "print" or len(node.args) > 1 or node.keywords:
                self._flag(node, "%s()" % func.id)
        if isinstance(func, ast.Attribute) and func.attr == "format" \
                and isinstance(func.value, ast.Constant) \
                and isinstance(func.value.value, str):
            self._flag(node, "str.format")
        self.generic_visit(node)

    def _decorated(self, node):
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Attribute) and decorator.attr in (
                    "setter", "deleter", "getter"):
                self._flag(decorator, "@%s" % decorator.attr)
        self.generic_visit(node)

    visit_FunctionDef = _decorated

    def visit_ClassDef(self, node):
        if node.decorator_list:
            self._flag(node, "a class decorator")
        self.generic_visit(node)

    def visit_Set(self, node):
        self._flag(node, "a set literal")
        self.generic_visit(node)

    def visit_SetComp(self, node):
        self._flag(node, "a set comprehension")
        self.generic_visit(node)

    def visit_DictComp(self, node):
        self._flag(node, "a dict comprehension")
        self.generic_visit(node)

    def visit_Constant(self, node):
        if isinstance(node.value, bytes):
            self._flag(node, "a bytes literal")

    def visit_JoinedStr(self, node):
        self._flag(node, "an f-string")


def check_source(source, filename="<string>"):
    """Findings (strings) for one module's source; [] when clean."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        error = sys.exc_info()[1]
        return ["%s:%s: does not parse: %s" % (filename, error.lineno,
                                               error.msg)]
    finder = _Finder(filename)
    finder.visit(tree)
    return finder.findings


def _python_files(paths):
    for path in paths:
        if os.path.isdir(path):
            for folder, _dirs, files in sorted(os.walk(path)):
                for name in sorted(files):
                    if name.endswith(".py"):
                        yield os.path.join(folder, name)
        else:
            yield path


def run_vermin(files):
    """vermin's findings for a 2.4 target; [] when clean."""
    result = subprocess.run(
        [shutil.which("vermin") or "vermin", "--target=2.4-", "--no-tips",
         "--violations", "--no-parse-comments"] + list(files),
        capture_output=True, text=True)
    if result.returncode == 0:
        return []
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if line.strip()]
    return lines or ["vermin failed with status %d" % result.returncode]


def check_paths(paths):
    files = list(_python_files(paths))
    findings = []
    for name in files:
        handle = open(name)
        try:
            findings.extend(check_source(handle.read(), name))
        finally:
            handle.close()
    findings.extend(run_vermin(files))
    return findings


def main(argv=None):
    paths = (argv if argv is not None else sys.argv[1:]) or ["xend_fastmig"]
    findings = check_paths(paths)
    for finding in findings:
        print(finding)
    if findings:
        return 1
    print("py24check: %d files clean for Python 2.4"
          % len(list(_python_files(paths))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
