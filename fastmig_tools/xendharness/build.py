"""Prepare a Xen tree's xend to run here: copy, patch, build its bindings.

``prepare_tree(tree, patches)`` copies the tree's ``tools/python`` and
``tools/examples`` into a cache folder outside the repository, applies the
patch files in order with ``patch -p1 --fuzz=0`` and builds the tree's own
C bindings for Python 2.7 against Debian's libraries:
``xen.lowlevel.xs`` (libxenstore) and ``xen.lowlevel.ptsname``.  The
result is cached under a key made of the content of the tree's
``tools/python`` and ``tools/examples`` and of every patch's bytes, so a
second call is instant and an edited tree gets a build of its own.  The hypervisor stand-ins (``xc``,
``acm``) and the helper wrappers are refreshed on every call, so an edit
of them never needs a cache purge.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["HarnessUnavailable", "PreparedTree", "prepare_tree",
           "python27", "CACHE_ENV", "DEFAULT_CACHE", "INSTALL_HINT"]

CACHE_ENV = "FASTMIG_XENDHARNESS_CACHE"
DEFAULT_CACHE = "/opt/xend-fastmig/xendharness"
INSTALL_HINT = "run scripts/install-xend-deps as root"
_HERE = Path(__file__).resolve().parent
_PY2 = _HERE / "py2"


class HarnessUnavailable(Exception):
    """Something the harness needs is missing; the message names it."""


def python27() -> Path:
    """The Python 2.7 that runs xend ($FASTMIG_PYTHON27 or pyenv's 2.7.18)."""
    candidates = []
    if os.environ.get("FASTMIG_PYTHON27"):
        candidates.append(os.environ["FASTMIG_PYTHON27"])
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        if root:
            candidates.append(os.path.join(root, "versions", "2.7.18", "bin",
                                           "python2.7"))
    except (OSError, subprocess.TimeoutExpired):
        pass
    candidates.append(os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python2.7"))
    for c in candidates:
        if os.access(c, os.X_OK):
            return Path(c)
    raise HarnessUnavailable(
        "no Python 2.7 to run xend (tried %s): install pyenv's 2.7.18 or set "
        "FASTMIG_PYTHON27" % ", ".join(candidates))


@dataclasses.dataclass(frozen=True)
class PreparedTree:
    """A ready copy of one tree (+ patches): paths inside the cache."""

    source: Path          # the original tree
    root: Path            # the copy: root/tools/python, root/tools/examples
    patches: tuple
    helper_dir: Path      # xc_save / xc_restore as auxbin would find them
    py2_dir: Path         # the harness's own Python 2 modules (hostd, guest)

    @property
    def python_dir(self) -> Path:
        return self.root / "tools" / "python"

    @property
    def scripts_dir(self) -> Path:
        return self.root / "tools" / "examples"

    @property
    def name(self) -> str:
        return self.source.name + ("+%d patches" % len(self.patches)
                                   if self.patches else "")


# What the harness copies of a tree, and so what its builds depend on.
TREE_PARTS = ("tools/python", "tools/examples")


def _key(tree: Path, patches: list[Path]) -> str:
    """The tree's parts by content (names, modes, symlinks, bytes), every
    patch's bytes, and this checkout's stand-ins."""
    h = hashlib.sha256()
    tree = tree.resolve()
    for part in TREE_PARTS:
        for path in sorted((tree / part).rglob("*")):
            rel = str(path.relative_to(tree)).encode()
            if path.is_symlink():
                h.update(b"L\0" + rel + b"\0" + os.readlink(path).encode())
            elif path.is_file():
                h.update(b"F\0" + rel + b"\0%o\0"
                         % (path.stat().st_mode & 0o111))
                h.update(path.read_bytes())
    for p in patches:
        h.update(b"\0patch\0" + Path(p).read_bytes())
    # The stand-ins copied in and the helpers the wrappers run are this
    # checkout's: two checkouts never share (and rewrite) one build.
    for name in ("xc.py", "acm.py"):
        h.update(b"\0standin\0" + (_PY2 / "lowlevel" / name).read_bytes())
    h.update(b"\0helpers\0" + str(_HERE).encode())
    return h.hexdigest()[:16]


def _check_tools() -> None:
    for tool, package in (("gcc", "gcc"), ("patch", "patch"),
                          ("xenstore-read", "xenstore-utils"),
                          ("xenstore-rm", "xenstore-utils")):
        if shutil.which(tool) is None:
            raise HarnessUnavailable("%s not found (apt-get install %s): %s"
                                     % (tool, package, INSTALL_HINT))
    if not Path("/usr/include/xenstore.h").exists() and \
            not Path("/usr/include/xs.h").exists():
        raise HarnessUnavailable("libxenstore headers missing (apt-get install "
                                 "--no-install-recommends libxen-dev): %s"
                                 % INSTALL_HINT)


def _build(tree: Path, patches: list[Path], dest: Path, py27: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        (work / "tools").mkdir()
        for part in ("python", "examples"):
            shutil.copytree(tree / "tools" / part, work / "tools" / part,
                            symlinks=True)
        # A series may document what it adds (xend-config.sxp's man page).
        if (tree / "docs" / "man").is_dir():
            shutil.copytree(tree / "docs" / "man", work / "docs" / "man",
                            symlinks=True)
        for p in patches:
            r = subprocess.run(["patch", "-p1", "--fuzz=0", "--batch",
                                "--no-backup-if-mismatch", "-i", str(Path(p).resolve())],
                               cwd=work, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise HarnessUnavailable("patch %s does not apply to %s:\n%s%s"
                                         % (p, tree, r.stdout, r.stderr))
        include = subprocess.run(
            [str(py27), "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
            capture_output=True, text=True, timeout=30).stdout.strip()
        lowlevel = work / "tools" / "python" / "xen" / "lowlevel"
        builds = [(lowlevel / "xs.so", [lowlevel / "xs" / "xs.c"],
                   ["-lxenstore", "-lxenctrl"]),
                  (lowlevel / "ptsname.so",
                   [work / "tools" / "python" / "ptsname" / "ptsname.c"], [])]
        for out, sources, libs in builds:
            r = subprocess.run(["gcc", "-shared", "-fPIC", "-w", "-I" + include,
                                "-o", str(out)] + [str(s) for s in sources] + libs,
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise HarnessUnavailable(
                    "building %s for Python 2.7 failed (is libxen-dev "
                    "installed? %s):\n%s" % (out.name, INSTALL_HINT, r.stderr))
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _install_standins(root: Path, helper_dir: Path) -> None:
    lowlevel = root / "tools" / "python" / "xen" / "lowlevel"
    for name in ("xc.py", "acm.py"):
        shutil.copyfile(_PY2 / "lowlevel" / name, lowlevel / name)
        stale = lowlevel / (name + "c")
        if stale.exists():
            stale.unlink()
    helper_dir.mkdir(exist_ok=True)
    _build_helper_client(helper_dir)


HELPER_CLIENT = _HERE / "helper_client.c"


def _build_helper_client(helper_dir: Path) -> None:
    """``xc_save`` and ``xc_restore``: helper_client.c, which hands each
    run to the host's helper server (helpers.py), built again whenever
    its source changes."""
    source = HELPER_CLIENT.read_bytes()
    stamp = helper_dir / "helper_client.sha256"
    digest = hashlib.sha256(source).hexdigest()
    names = ("xc_save", "xc_restore")
    if (stamp.exists() and stamp.read_text() == digest
            and all((helper_dir / n).exists() for n in names)):
        return
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise HarnessUnavailable("no C compiler for %s (%s)"
                                 % (HELPER_CLIENT.name, INSTALL_HINT))
    built = helper_dir / ("helper_client.%d" % os.getpid())
    r = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                        str(built), str(HELPER_CLIENT)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        built.unlink(missing_ok=True)
        raise HarnessUnavailable("%s does not build:\n%s"
                                 % (HELPER_CLIENT, r.stderr))
    for name in names:
        tmp = helper_dir / ("%s.%d.new" % (name, os.getpid()))
        shutil.copyfile(built, tmp)
        tmp.chmod(0o755)
        os.rename(tmp, helper_dir / name)
    built.unlink()
    stamp.write_text(digest)


def prepare_tree(tree: str | os.PathLike, patches=()) -> PreparedTree:
    """The tree's xend, patched and built, ready for ``Host`` (cached)."""
    tree = Path(tree).resolve()
    patches = [Path(p).resolve() for p in patches]
    for sub in ("tools/python/xen/xend", "tools/examples/block"):
        if not (tree / sub).exists():
            raise HarnessUnavailable("%s is not a Xen tree (no %s)" % (tree, sub))
    _check_tools()
    py27 = python27()
    cache = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    repo = _HERE.parent.parent
    if str(cache.resolve()).startswith(str(repo) + os.sep):
        raise HarnessUnavailable("%s=%s is inside the repository" % (CACHE_ENV, cache))
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / ("%s-%s" % (tree.name, _key(tree, patches)))
    if not (dest / "tools" / "python" / "xen" / "lowlevel" / "xs.so").exists():
        _build(tree, patches, dest, py27)
    helper_dir = dest / "helpers"
    _install_standins(dest, helper_dir)
    return PreparedTree(tree, dest, tuple(patches), helper_dir, _PY2)
