"""Check, apply and revert the series on a Xen tree, all or nothing.

GNU patch does the patching, at fuzz 0, on a scratch copy of the files the
series touches; only when every patch went through there (and the result
compiles on Python 2, when one is found) are the results written into the
tree, one rename per file; if a write fails part-way, every file already
changed is put back and every file and directory created is removed.  So a
refusal or a failure leaves the tree exactly as it was (and says so when
putting back fails too).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import export, series
from .python2 import compile_files, find_python2
from .unidiff import Hunk, Patch, parse_patch

__all__ = [
    "load_series", "inspect", "apply", "revert", "Outcome", "TreeReport",
    "HunkReport", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NOT_XEN",
    "EXIT_APPLIED", "EXIT_PARTLY", "EXIT_CONFLICT", "EXIT_NOT_APPLIED",
    "EXIT_COMPILE", "EXIT_QUILT", "EXIT_DRIFT", "EXIT_WRITE", "EXIT_WRITE_LEFT",
    "SeriesError",
]

# Exit statuses: distinct, so that scripts (and RPM specs) can tell why.
EXIT_OK = 0
EXIT_ERROR = 1          # something unexpected (no GNU patch, I/O error)
EXIT_USAGE = 2          # argparse's own
EXIT_NOT_XEN = 3        # not a Xen tree with xend
EXIT_APPLIED = 4        # the series is applied (apply refuses)
EXIT_PARTLY = 5         # some patches applied, others not
EXIT_CONFLICT = 6       # a hunk matches neither before nor after
EXIT_NOT_APPLIED = 7    # nothing to revert
EXIT_COMPILE = 8        # the result does not compile on Python 2: not written
EXIT_QUILT = 9          # quilt manages these patches in this tree
EXIT_DRIFT = 10         # export --check: patches/ differ from a fresh export
EXIT_WRITE = 11         # a write into the tree failed; what was written is put back
EXIT_WRITE_LEFT = 12    # a write failed and putting back failed too: tree changed

_XEND_MARKERS = series.TREE_MARKERS
_PATCH_TIMEOUT = 60.0


class SeriesError(ValueError):
    """The series directory cannot be read (one line, for the user)."""


def series_paths(patches_dir: Path) -> list[Path]:
    """The patch files ``patches_dir/series`` lists, in order (for tools
    that hand them to GNU patch, such as the real-xend harness)."""
    return [Path(patches_dir) / p.name for p in load_series(patches_dir)]


def load_series(patches_dir: Path) -> list[Patch]:
    """The series that ``patches_dir/series`` lists, in order."""
    patches_dir = Path(patches_dir)
    if not patches_dir.is_dir():
        raise SeriesError("%s: %s" % (patches_dir, "not a directory" if patches_dir.exists()
                                      else "no such directory"))
    series_file = patches_dir / export.SERIES_FILE
    if not series_file.is_file():
        raise SeriesError("%s has no %s file: not a patch series" % (patches_dir,
                                                                    export.SERIES_FILE))
    names = _series_names(series_file.read_text(encoding="utf-8"))
    if not names:
        raise SeriesError("%s lists no patch" % series_file)
    missing = [n for n in names if not (patches_dir / n).is_file()]
    if missing:
        raise SeriesError("%s lists %s, not in %s" % (series_file, ", ".join(missing),
                                                       patches_dir))
    return [parse_patch(n, (patches_dir / n).read_text(encoding="utf-8")) for n in names]


def _series_names(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])  # quilt allows options after the name
    return names


@dataclass
class HunkReport:
    patch: str
    path: str
    index: int          # 1-based, within this file's hunks in this patch
    label: str
    state: str          # "applied", "applicable" or "conflict"
    why: str = ""

    def describe(self) -> str:
        text = "%s hunk #%d (%s)" % (self.path, self.index, self.label)
        return text + (": " + self.why if self.why else "")


@dataclass
class TreeReport:
    tree: Path
    xen_problem: str = ""            # why this is not a Xen tree with xend
    version_note: str = ""
    hunks: list[HunkReport] = field(default_factory=list)
    quilt_applied: list[str] = field(default_factory=list)
    patch_names: list[str] = field(default_factory=list)

    def patch_state(self, name: str) -> str:
        states = {h.state for h in self.hunks if h.patch == name}
        if states == {"applied"}:
            return "applied"
        if states == {"applicable"}:
            return "not applied"
        if "conflict" in states:
            return "would not apply"
        return "partly applied"

    @property
    def state(self) -> str:
        if self.xen_problem:
            return "not a Xen tree"
        states = {h.state for h in self.hunks}
        if states == {"applied"}:
            return "applied"
        if states == {"applicable"}:
            return "not applied"
        if "applied" in states:
            return "partly applied"
        return "would not apply"

    @property
    def status(self) -> int:
        return {
            "not a Xen tree": EXIT_NOT_XEN,
            "applied": EXIT_APPLIED,
            "not applied": EXIT_OK,
            "partly applied": EXIT_PARTLY,
            "would not apply": EXIT_CONFLICT,
        }[self.state]

    def lines(self) -> list[str]:
        out = ["tree: %s" % self.tree]
        if self.xen_problem:
            out.append("not a Xen tree with xend: %s" % self.xen_problem)
            return out
        if self.version_note:
            out.append(self.version_note)
        if self.quilt_applied:
            out.append("quilt (.pc/applied-patches) has applied: %s"
                       % ", ".join(self.quilt_applied))
        for name in self.patch_names:
            out.append("  %s: %s" % (name, self.patch_state(name)))
            for h in self.hunks:
                if h.patch == name and h.state == "conflict":
                    out.append("    FAILS: %s" % h.describe())
        out.append("state: %s" % _state_sentence(self.state))
        return out


def _state_sentence(state: str) -> str:
    return {
        "applied": "the series is applied",
        "not applied": "the series is not applied, and every hunk applies with fuzz 0",
        "partly applied": "the series is PARTLY applied (see above)",
        "would not apply": "the series is not applied, and some hunks would not apply (see above)",
    }[state]


@dataclass
class Outcome:
    status: int
    lines: list[str]


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return path.read_bytes().decode("utf-8", "surrogateescape").split("\n")


def _find(lines: list[str], seq: list[str]) -> list[int]:
    if not seq:
        return []
    first = seq[0]
    n = len(seq)
    return [i for i, ln in enumerate(lines)
            if ln == first and lines[i:i + n] == seq]


def _label(fp_creates: bool, hunk: Hunk, lines: list[str] | None) -> str:
    """What a reader calls the hunk: the method whose ``def`` it edits,
    else the method it sits in (found in the tree), else what it adds."""
    if fp_creates:
        return "new file"
    for ln in hunk.removed + hunk.added:
        m = re.match(r"\s*def (\w+)", ln)
        if m:
            return m.group(1)
    if any(series.IN_TREE_PACKAGE in ln for ln in hunk.added):
        return "packages list"
    at = _where(lines or [], hunk)
    if at is not None:
        for ln in reversed((lines or [])[:at + 1]):
            m = re.match(r"\s*def (\w+)", ln)
            if m:
                return m.group(1)
    return "hunk"


def _where(lines: list[str], hunk: Hunk) -> int | None:
    """Where the hunk is in ``lines``: its pre- or postimage, else the
    first of its lines that occurs once in the file."""
    for seq in (hunk.old_lines, hunk.new_lines):
        found = _find(lines, seq)
        if found:
            return found[0]
    for k, ln in enumerate(hunk.old_lines):
        if ln.strip() and lines.count(ln) == 1:
            return max(lines.index(ln) - k, 0)
    return None


def _creation_state(path: Path, hunk: Hunk) -> tuple[str, str]:
    if not path.exists():
        return "applicable", ""
    text = "\n".join(hunk.new_lines) + ("" if hunk.new_no_newline else "\n")
    if path.read_bytes().decode("utf-8", "surrogateescape") == text:
        return "applied", ""
    return "conflict", ("the file exists and differs from this release's "
                        "(another xend-fastmig version? revert it with that "
                        "version's series first)")


def _diagnose(lines: list[str], hunk: Hunk) -> str:
    """Why ``hunk`` matches neither before nor after: the first line of its
    preimage that the tree does not have where expected."""
    pre = hunk.old_lines
    key = hunk.removed[0] if hunk.removed else max(pre, key=len)
    k = pre.index(key)
    positions = [i for i, ln in enumerate(lines) if ln == key]
    if not positions:
        loose = [i for i, ln in enumerate(lines) if ln.rstrip() == key.rstrip()]
        if loose:
            return ("line %d differs from `%s` only in trailing whitespace"
                    % (loose[0] + 1, key.strip()))
        m = re.match(r"(\s*def \w+\()", key)
        if m:
            similar = [i for i, ln in enumerate(lines) if ln.startswith(m.group(1))]
            if similar:
                return ("the signature differs: expected `%s`, line %d has `%s`"
                        % (key.strip(), similar[0] + 1, lines[similar[0]].strip()))
        return "`%s` is not in the file" % key.strip()
    best = None
    for pos in positions:
        start = pos - k
        for j, want in enumerate(pre):
            at = start + j
            got = lines[at] if 0 <= at < len(lines) else None
            if got != want:
                if best is None or j > best[0]:
                    best = (j, at, want, got)
                break
    if best is None:
        return "matches, but patch refused it"
    _, at, want, got = best
    if got is None:
        return "the file ends before the hunk's line `%s`" % want.strip()
    if got.rstrip() == want.rstrip():
        return "line %d differs from `%s` only in trailing whitespace" % (at + 1, want.strip())
    return "at line %d: expected `%s`, found `%s`" % (at + 1, want, got)


def _xen_problem(tree: Path) -> str:
    if not tree.is_dir():
        return "%s is not a directory" % tree
    missing = [m for m in _XEND_MARKERS if not (tree / m).is_file()]
    if missing:
        return "%s missing" % ", ".join(missing)
    return ""


def _version_note(tree: Path) -> str:
    makefile = tree / "xen" / "Makefile"
    if not makefile.is_file():
        return "version: unknown (no xen/Makefile); judged by xend's files"
    text = makefile.read_text(encoding="utf-8", errors="replace")
    major = re.search(r"^export XEN_VERSION\s*=\s*(\d+)", text, re.M)
    minor = re.search(r"^export XEN_SUBVERSION\s*=\s*(\d+)", text, re.M)
    if not (major and minor):
        return "version: unknown (xen/Makefile has no XEN_VERSION)"
    extra = re.search(r"^export XEN_EXTRAVERSION\s*\??=\s*(\S*)", text, re.M)
    version = "%s.%s" % (major.group(1), minor.group(1))
    if version == "3.1":
        return "version: Xen 3.1 (xen/Makefile)"
    # The 3.1.0-branched tag, where 3.1 was cut, still says 3.0-unstable.
    if version == "3.0" and extra and extra.group(1).startswith("-unstable"):
        return "version: xen/Makefile says 3.0-unstable (as where 3.1 branched)"
    return ("WARNING: xen/Makefile says Xen %s; the series is made and tested "
            "for Xen 3.1's xend" % version)


def _quilt_applied(tree: Path, names: list[str]) -> list[str]:
    applied = tree / ".pc" / "applied-patches"
    if not applied.is_file():
        return []
    listed = {ln.strip() for ln in applied.read_text(errors="replace").splitlines()}
    return [n for n in names if n in listed]


def inspect(tree: Path, patches: list[Patch]) -> TreeReport:
    """What the tree holds of the series, hunk by hunk.  Reads only."""
    tree = Path(tree).absolute()
    report = TreeReport(tree=tree, patch_names=[p.name for p in patches])
    report.xen_problem = _xen_problem(tree)
    if report.xen_problem:
        return report
    report.version_note = _version_note(tree)
    report.quilt_applied = _quilt_applied(tree, report.patch_names)
    for p in patches:
        for fp in p.files:
            path = tree / fp.path
            lines = _read_lines(path)
            for i, hunk in enumerate(fp.hunks, 1):
                h = HunkReport(p.name, fp.path, i, _label(fp.creates, hunk, lines), "conflict")
                if fp.creates:
                    h.state, h.why = _creation_state(path, hunk)
                elif lines is None:
                    h.why = "the file is missing"
                elif _find(lines, hunk.new_lines):
                    h.state = "applied"
                elif _find(lines, hunk.old_lines):
                    h.state = "applicable"
                else:
                    h.why = _diagnose(lines, hunk)
                report.hunks.append(h)
    return report


def _touched(patches: list[Patch]) -> list[str]:
    seen: list[str] = []
    for p in patches:
        for fp in p.files:
            if fp.path not in seen:
                seen.append(fp.path)
    return seen


def _gnu_patch() -> str:
    path = shutil.which("patch")
    if not path:
        raise RuntimeError("GNU patch is not installed (apt-get/yum install patch)")
    return path


def _run_series(scratch: Path, patches: list[Patch], texts: dict[str, str],
                reverse: bool) -> list[str]:
    """Run GNU patch over the scratch copy; the failures, [] when all went
    through."""
    patch_bin = _gnu_patch()
    store = scratch / ".series"
    store.mkdir()
    order = list(reversed(patches)) if reverse else patches
    for p in order:
        pfile = store / p.name
        pfile.write_text(texts[p.name], encoding="utf-8")
        # --force: never guess that a patch is reversed; fuzz 0 refuses any
        # hunk whose lines are not all there.
        cmd = [patch_bin, "-p1", "--fuzz=0", "--force", "--no-backup-if-mismatch",
               "--remove-empty-files", "-d", str(scratch / "tree"), "-i", str(pfile)]
        if reverse:
            cmd.insert(1, "--reverse")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=_PATCH_TIMEOUT)
        if out.returncode != 0:
            detail = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
            return ["GNU patch %s %s failed:" % ("--reverse" if reverse else "", p.name)] + \
                   ["    " + ln for ln in detail]
    return []


class InstallFailed(Exception):
    """A write into the tree failed part-way; ``lines`` say what happened
    and ``status`` whether the tree is as it was (EXIT_WRITE) or not."""

    def __init__(self, status: int, lines: list[str]):
        super().__init__(lines[0])
        self.status = status
        self.lines = lines


def _write_file(dst: Path, data: bytes, like: os.stat_result | None) -> None:
    """Replace ``dst`` with ``data`` in one rename, keeping ``like``'s mode
    and (when we may) owner, so that no reader sees half a file."""
    tmp = dst.with_name(".%s.fastmig-tmp" % dst.name)
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, (like.st_mode & 0o7777) if like is not None else 0o644)
        if like is not None and os.geteuid() == 0:
            os.chown(tmp, like.st_uid, like.st_gid)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def _missing_dirs(path: Path, stop: Path) -> list[Path]:
    """The directories above ``path`` (up to ``stop``) that do not exist,
    deepest first."""
    out = []
    for d in path.parents:
        if d == stop or d.exists():
            break
        out.append(d)
    return out


def _install(tree: Path, scratch_tree: Path, paths: list[str]) -> list[str]:
    """Make each of ``paths`` in ``tree`` what it is in ``scratch_tree``
    (present with the same bytes, or absent).  All or nothing: when a write
    fails, every file already changed gets its old bytes back, files and
    directories it created are removed, and InstallFailed says so.
    Returns the paths it changed."""
    done: list[tuple[str, bytes | None, os.stat_result | None]] = []
    made_dirs: list[Path] = []
    for rel in paths:
        dst = tree / rel
        src = scratch_tree / rel
        old = dst.read_bytes() if dst.is_file() else None
        new = src.read_bytes() if src.is_file() else None
        if old == new:
            continue
        like = dst.stat() if old is not None else None
        try:
            if new is None:
                dst.unlink()
            else:
                # Noted before mkdir, so that a mkdir failing half-way
                # is undone too; deepest first, newest first.
                made_dirs[:0] = _missing_dirs(dst, tree)
                dst.parent.mkdir(parents=True, exist_ok=True)
                _write_file(dst, new, like)
        except OSError as error:
            what = "removing" if new is None else "writing"
            raise _rolled_back(tree, "%s %s" % (what, rel), error, done, made_dirs) from None
        done.append((rel, old, like))
    return [rel for rel, _, _ in done]


def _rolled_back(tree: Path, failed: str, error: OSError,
                 done: list[tuple[str, bytes | None, os.stat_result | None]],
                 made_dirs: list[Path]) -> InstallFailed:
    """Put back every file in ``done``; the InstallFailed that tells how it
    went.  Each step on its own, so one that fails does not stop the rest."""
    left = []
    for rel, old, like in reversed(done):
        dst = tree / rel
        try:
            if old is None:
                if dst.exists():
                    dst.unlink()
            elif not dst.is_file() or dst.read_bytes() != old:
                _write_file(dst, old, like)
        except OSError as exc:
            left.append("%s (%s)" % (rel, exc.strerror))
    for d in made_dirs:
        try:
            d.rmdir()
        except OSError as exc:
            if d.exists():
                left.append("%s/ (left behind: %s)" % (d.relative_to(tree), exc.strerror))
    why = error.strerror or str(error)
    first = "%s failed: %s" % (failed, why)
    if not left:
        created = sum(1 for _, old, _ in done if old is None)
        return InstallFailed(EXIT_WRITE, [
            "%s; put back the %d file%s already changed (%d restored, %d new removed): "
            "nothing changed in %s" % (first, len(done), "" if len(done) == 1 else "s",
                                       len(done) - created, created, tree)])
    return InstallFailed(EXIT_WRITE_LEFT, [
        "%s; putting back failed too: the tree is PARTLY CHANGED" % first,
        "still changed: %s" % ", ".join(left),
        "restore these from a pristine tree"])


def _clean_after_revert(tree: Path, patches: list[Patch]) -> list[str]:
    """After a revert: remove the byte-compiled copies of the modules the
    series created (Python 2 would still import a lone ``.pyc``) and the
    directories it created once they are empty.  Notes about what stays."""
    notes = []
    dirs = set()
    for p in patches:
        for fp in p.files:
            if not fp.creates:
                continue
            created = tree / fp.path
            if created.suffix == ".py":
                for compiled in (created.with_suffix(".pyc"), created.with_suffix(".pyo")):
                    try:
                        compiled.unlink()
                    except FileNotFoundError:
                        pass
                    except OSError as error:
                        notes.append("left %s: %s" % (compiled, error.strerror))
            d = created.parent
            while d != tree and tree in d.parents:
                dirs.add(d)
                d = d.parent
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        if not d.is_dir():
            continue
        if any(d.iterdir()):
            if d.relative_to(tree).as_posix() == series.PACKAGE_DEST:
                notes.append("left %s: it holds files that are not the series'" % d)
            continue
        try:
            d.rmdir()
        except OSError as error:
            notes.append("left %s: %s" % (d, error.strerror))
    return notes


def _compile(scratch_tree: Path, paths: list[str], python2: str | None,
             compile_: bool) -> tuple[list[str], list[str]]:
    """(messages, errors) of byte-compiling the scratch result's Python
    modules with Python 2."""
    if not compile_:
        return ["byte-compile: skipped (--no-compile)"], []
    found = find_python2(python2)
    if not found:
        what = python2 or "python2.7, python2 or $(pyenv root)/versions/2.7.*"
        return ["byte-compile: SKIPPED, no Python 2 interpreter found (looked for %s)"
                % what], []
    python, version = found
    files = [scratch_tree / p for p in paths
             if p.endswith(".py") and (scratch_tree / p).is_file()]
    errors = compile_files(python, files)
    prefix = str(scratch_tree) + os.sep
    errors = [e.replace(prefix, "") for e in errors]
    if errors:
        return [], ["byte-compile with Python %s (%s) FAILED:" % (version, python)] + \
            ["    " + e for e in errors]
    return ["byte-compile: %d modules compile with Python %s (%s)"
            % (len(files), version, python)], []


def _texts(patches: list[Patch], patches_dir: Path) -> dict[str, str]:
    return {p.name: (Path(patches_dir) / p.name).read_text(encoding="utf-8") for p in patches}


def _change(tree: Path, patches_dir: Path, reverse: bool,
            python2: str | None, compile_: bool) -> Outcome:
    tree = Path(tree)
    patches = load_series(patches_dir)
    report = inspect(tree, patches)
    lines = report.lines()
    verb = "revert" if reverse else "apply"
    if report.xen_problem:
        return Outcome(EXIT_NOT_XEN, lines + ["refusing to %s: not a Xen tree with xend; "
                                              "nothing changed" % verb])
    if report.quilt_applied:
        return Outcome(EXIT_QUILT, lines + [
            "refusing to %s: quilt manages this series here; use `quilt %s`; "
            "nothing changed" % (verb, "pop -a" if reverse else "push -a")])
    state = report.state
    if not reverse and state == "applied":
        return Outcome(EXIT_APPLIED, lines + ["refusing to apply: already applied; nothing changed"])
    if reverse and state == "not applied":
        return Outcome(EXIT_NOT_APPLIED, lines + ["refusing to revert: not applied; nothing changed"])
    if state == "partly applied":
        return Outcome(EXIT_PARTLY, lines + [
            "refusing to %s a partly applied tree; nothing changed.  Restore the "
            "listed files from a pristine tree, or finish by hand with "
            "`patch -p1 --fuzz=0` / `patch -R -p1 --fuzz=0`." % verb])
    if state == "would not apply" or (reverse and state != "applied"):
        return Outcome(EXIT_CONFLICT, lines + ["refusing to %s: hunks do not match; "
                                               "nothing changed" % verb])
    paths = _touched(patches)
    texts = _texts(patches, patches_dir)
    with tempfile.TemporaryDirectory(prefix="fastmig-patches-") as tmp:
        scratch = Path(tmp)
        for rel in paths:
            if (tree / rel).is_file():
                (scratch / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tree / rel, scratch / "tree" / rel)
        (scratch / "tree").mkdir(exist_ok=True)
        failures = _run_series(scratch, patches, texts, reverse)
        if failures:
            return Outcome(EXIT_CONFLICT, lines + failures + [
                "dry run failed: nothing changed in %s" % tree])
        lines.append("dry run: all %d patches %s with fuzz 0" % (
            len(patches), "revert" if reverse else "apply"))
        notes, errors = _compile(scratch / "tree", paths, python2, compile_)
        if errors:
            return Outcome(EXIT_COMPILE, lines + errors + ["nothing changed in %s" % tree])
        try:
            changed = _install(tree, scratch / "tree", paths)
        except InstallFailed as failure:
            return Outcome(failure.status, lines + notes + failure.lines)
    if reverse:
        lines.extend(_clean_after_revert(tree, patches))
    done = "reverted" if reverse else "applied"
    return Outcome(EXIT_OK, lines + notes + [
        "%s: %d patches, %d files changed in %s" % (done, len(patches), len(changed), tree)])


def apply(tree: Path, patches_dir: Path, python2: str | None = None,
          compile_: bool = True) -> Outcome:
    """Apply the whole series, or change nothing."""
    return _change(tree, patches_dir, False, python2, compile_)


def revert(tree: Path, patches_dir: Path, python2: str | None = None,
           compile_: bool = True) -> Outcome:
    """Revert the whole series, or change nothing."""
    return _change(tree, patches_dir, True, python2, compile_)
