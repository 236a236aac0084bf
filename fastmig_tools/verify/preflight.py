"""What verify needs before it runs anything: one line each, saying what
to install.  Nothing here writes anywhere."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from fastmig_tools.patchtool import engine

__all__ = ["Unavailable", "check_tree", "check_environment", "XEND_FILES"]

_REPO = Path(__file__).resolve().parent.parent.parent
DEPS_SCRIPT = _REPO / "scripts" / "install-xend-deps"
XENSTORED_SCRIPT = _REPO / "scripts" / "install-xenstored"

# What verify drives besides the series' own markers: the migration path
# and the hotplug script the harness's backend runs.
XEND_FILES = ("tools/python/xen/xend/XendCheckpoint.py",
              "tools/python/xen/xend/XendDomain.py",
              "tools/python/xen/xend/XendDomainInfo.py",
              "tools/python/xen/xend/server/DevController.py",
              "tools/examples/block")


class Unavailable(Exception):
    """verify cannot run here (one line: what is wrong, what to do)."""


def _deps_hint() -> str:
    if DEPS_SCRIPT.is_file():
        return "run %s as root" % os.path.relpath(DEPS_SCRIPT)
    return "apt-get install --no-install-recommends libxen-dev xenstore-utils gcc libc6-dev patch"


def check_tree(tree: Path) -> str:
    """The tree's version note; Unavailable if it is not a 3.1-like tree."""
    tree = Path(tree)
    if not tree.is_dir():
        raise Unavailable("%s: no such directory" % tree)
    report = engine.inspect(tree, [])
    if report.xen_problem:
        raise Unavailable("%s is not a Xen 3.1 tree with xend (%s)"
                          % (tree, report.xen_problem))
    missing = [f for f in XEND_FILES if not (tree / f).is_file()]
    if missing:
        raise Unavailable("%s is not a Xen 3.1-like tree (missing %s)"
                          % (tree, ", ".join(missing)))
    checkpoint = (tree / XEND_FILES[0]).read_text(errors="replace")
    if "def save(fd, dominfo, network, live, dst" not in checkpoint:
        raise Unavailable("%s is not a Xen 3.1-like tree (XendCheckpoint has no "
                          "save(fd, dominfo, network, live, dst, ...))" % tree)
    if report.version_note.startswith("WARNING"):
        raise Unavailable("%s is not a Xen 3.1 tree: %s" % (
            tree, report.version_note.split(": ", 1)[1]))
    return report.version_note


def check_environment() -> Path:
    """Python 2.7, a real xenstored, libxen-dev and the tools the harness
    calls; returns the Python 2.7.  Unavailable names the first missing."""
    from fastmig_tools.xendharness.build import HarnessUnavailable, python27
    from fastmig_tools.xenstore.real import XenstoredUnavailable, find_install
    try:
        py27 = python27()
    except HarnessUnavailable:
        raise Unavailable(
            "no Python 2.7 to run xend: install pyenv's 2.7.18 (pyenv install "
            "2.7.18), or set FASTMIG_PYTHON27 to a python2.7") from None
    try:
        find_install()
    except XenstoredUnavailable as exc:
        raise Unavailable("no real xenstored: run %s as root (%s)"
                          % (os.path.relpath(XENSTORED_SCRIPT),
                             str(exc).split(":", 1)[0])) from None
    if not Path("/usr/include/xenstore.h").exists() and \
            not Path("/usr/include/xs.h").exists():
        raise Unavailable("no libxenstore headers (libxen-dev), needed to build "
                          "the tree's xen.lowlevel.xs: %s" % _deps_hint())
    for tool, package in (("gcc", "gcc"), ("patch", "patch"),
                          ("xenstore-read", "xenstore-utils")):
        if shutil.which(tool) is None:
            raise Unavailable("%s not found (apt package %s): %s"
                              % (tool, package, _deps_hint()))
    return py27
