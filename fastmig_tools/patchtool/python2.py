"""Finding a Python 2 interpreter and byte-compiling xend's modules with it.

xend runs on the dom0's Python 2 (2.4 on CentOS 5); a patched module that
does not compile there breaks xend at start-up, so apply and revert compile
what they produce before it reaches the tree.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["find_python2", "check_python2", "compile_files", "ENV_PYTHON2"]

ENV_PYTHON2 = "XEND_FASTMIG_PYTHON2"
_PROBE_TIMEOUT = 20.0
_COMPILE_TIMEOUT = 120.0

# Runs on Python 2.4 to 3: compile() only, so nothing (.pyc) is written.
_COMPILER = r"""
import sys
bad = 0
for name in sys.argv[1:]:
    f = open(name, 'r')
    try:
        source = f.read()
    finally:
        f.close()
    try:
        # Python < 2.7 wants a final newline.
        compile(source + '\n', name, 'exec')
    except SyntaxError:
        e = sys.exc_info()[1]
        sys.stdout.write('%s:%s: %s\n' % (name, e.lineno, e.msg))
        bad = 1
sys.exit(bad)
"""


def _pyenv_root() -> str | None:
    if os.environ.get("PYENV_ROOT"):
        return os.environ["PYENV_ROOT"]
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            out = subprocess.run([pyenv, "root"], capture_output=True, text=True,
                                 timeout=_PROBE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    home = os.path.expanduser("~/.pyenv")
    return home if os.path.isdir(home) else None


def _candidates() -> list[str]:
    found = []
    for name in ("python2.7", "python2"):
        path = shutil.which(name)
        if path:
            found.append(path)
    root = _pyenv_root()
    if root:
        pattern = os.path.join(root, "versions", "2.7.*", "bin", "python2.7")
        found.extend(sorted(glob.glob(pattern), reverse=True))
    return found


def _probe(python: str) -> tuple[str | None, str]:
    """(version such as "2.7" or "3.11", "") when ``python`` runs, else
    (None, why not).  pyenv's shims are on PATH even when they cannot run,
    so running is the test."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; sys.stdout.write('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=_PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, "did not answer within %g s" % _PROBE_TIMEOUT
    except OSError as error:
        return None, error.strerror or str(error)
    version = out.stdout.strip()
    if out.returncode != 0 or not version[:1].isdigit():
        last = (out.stderr.strip().splitlines() or ["exit status %d" % out.returncode])[-1]
        return None, "does not run as Python (%s)" % last
    return version, ""


def _version(python: str) -> str | None:
    """"2.7" when ``python`` runs and is a Python 2, else None."""
    version, _ = _probe(python)
    return version if version and version.startswith("2.") else None


def check_python2(python: str) -> tuple[str, str]:
    """(path, "2.x") for an interpreter the user named; ValueError saying
    why when it is missing, does not run or is not Python 2."""
    path = python if os.sep in python else shutil.which(python)
    if not path or not os.path.exists(path):
        raise ValueError("%s: no such file" % python)
    if os.path.isdir(path):
        raise ValueError("%s: a directory, not an interpreter" % python)
    if not os.access(path, os.X_OK):
        raise ValueError("%s: not executable" % python)
    version, why = _probe(path)
    if version is None:
        raise ValueError("%s: %s" % (python, why))
    if not version.startswith("2."):
        raise ValueError("%s is Python %s, not Python 2 (xend runs on Python 2)"
                         % (python, version))
    return path, version


def find_python2(explicit: str | None = None) -> tuple[str, str] | None:
    """(path, "2.x") of the Python 2 to compile with, or None when none is
    found.  One the user named (``explicit``, else $XEND_FASTMIG_PYTHON2)
    must be a Python 2: ValueError says why it is not."""
    named = explicit or os.environ.get(ENV_PYTHON2)
    if named:
        return check_python2(named)
    for python in _candidates():
        version = _version(python)
        if version:
            return python, version
    return None


def compile_files(python: str, files: list[Path]) -> list[str]:
    """Syntax errors (``path:line: message``) found by ``python``; [] when
    all compile.  Writes nothing next to the files."""
    if not files:
        return []
    out = subprocess.run([python, "-c", _COMPILER] + [str(f) for f in files],
                         capture_output=True, text=True, timeout=_COMPILE_TIMEOUT)
    if out.returncode == 0:
        return []
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    return lines or ["%s exited with status %d" % (python, out.returncode)]
