"""`xend-fastmig patches check / apply / revert / export` on copies of the
real trees (tests/xen_trees.py): every state a tree can be in, all or
nothing when a write fails part-way (an immutable target file), and one
clear line for each bad argument.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastmig_tools.patchtool import engine, series
from fastmig_tools.patchtool.python2 import find_python2
from fastmig_tools.patchtool.unidiff import parse_patch
from tests.xen_trees import REFERENCE, ROOT, copy_tree, snapshot, tree_ids

PATCHES = ROOT / "patches"
TIMEOUT = 120.0
CLI = [sys.executable, "-m", "fastmig_tools.cli", "patches"]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=TIMEOUT)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def series_names() -> list[str]:
    return [ln.split()[0] for ln in (PATCHES / "series").read_text().splitlines()
            if ln.split("#", 1)[0].strip()]


def patches() -> list:
    return [parse_patch(n, (PATCHES / n).read_text()) for n in series_names()]


def gnu_patch(tree: Path, name: str) -> None:
    result = subprocess.run(["patch", "-p1", "--fuzz=0", "--force", "--no-backup-if-mismatch", "-s", "-d", str(tree),
                             "-i", str(PATCHES / name)], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, output(result)


def modified_paths() -> list[str]:
    """Files of the tree the series changes (not those it creates), in the
    order apply writes them."""
    out = []
    for p in patches():
        for fp in p.files:
            if not fp.creates and fp.path not in out:
                out.append(fp.path)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return copy_tree(REFERENCE, tmp_path / "xen")


# --------------------------------------------------------------------------
# the states of a tree
# --------------------------------------------------------------------------

@pytest.mark.parametrize("tree_id", tree_ids())
def test_check_apply_check_revert(tree_id: str, tmp_path: Path):
    tree = copy_tree(tree_id, tmp_path / "xen")
    before = snapshot(tree)
    check = cli("check", "--tree", str(tree))
    assert check.returncode == engine.EXIT_OK, output(check)
    assert "the series is not applied, and every hunk applies with fuzz 0" in check.stdout
    for name in series_names():
        assert "%s: not applied" % name in check.stdout
    assert snapshot(tree) == before

    n = len(series_names())
    result = cli("apply", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "dry run: all %d patches apply with fuzz 0" % n in result.stdout
    assert re.search(r"byte-compile: \d+ modules compile with Python 2\.7", result.stdout)
    assert "applied: %d patches" % n in result.stdout
    # the same result as GNU patch, file by file
    by_hand = copy_tree(tree_id, tmp_path / "by-hand")
    for name in series_names():
        gnu_patch(by_hand, name)
    assert snapshot(tree) == snapshot(by_hand)

    check = cli("check", "--tree", str(tree))
    assert check.returncode == engine.EXIT_APPLIED, output(check)
    assert "state: the series is applied" in check.stdout

    result = cli("revert", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "reverted: %d patches" % n in result.stdout
    assert snapshot(tree) == before


def test_revert_removes_python_2_byte_code_of_the_package(tree: Path):
    """Python 2 would still import a lone fastmig/*.pyc after a revert."""
    assert cli("apply", "--tree", str(tree)).returncode == engine.EXIT_OK
    before_revert = snapshot(tree)
    pkg = tree / series.PACKAGE_DEST
    for py in pkg.glob("*.py"):
        py.with_suffix(".pyc").write_bytes(b"compiled")
    result = cli("revert", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert not pkg.exists()
    assert before_revert != snapshot(tree)


def test_apply_refuses_an_already_patched_tree(tree: Path):
    for name in series_names():
        gnu_patch(tree, name)
    before = snapshot(tree)
    result = cli("apply", "--tree", str(tree))
    assert result.returncode == engine.EXIT_APPLIED, output(result)
    assert "refusing to apply: already applied; nothing changed" in result.stderr
    assert snapshot(tree) == before


def test_revert_refuses_a_tree_without_the_series(tree: Path):
    before = snapshot(tree)
    result = cli("revert", "--tree", str(tree))
    assert result.returncode == engine.EXIT_NOT_APPLIED, output(result)
    assert "refusing to revert: not applied; nothing changed" in result.stderr
    assert snapshot(tree) == before


@pytest.mark.parametrize("command", ["check", "apply", "revert"])
def test_a_half_patched_tree(tree: Path, command: str):
    names = series_names()
    half = len(names) // 2
    for name in names[:half]:
        gnu_patch(tree, name)
    before = snapshot(tree)
    result = cli(command, "--tree", str(tree))
    assert result.returncode == engine.EXIT_PARTLY, output(result)
    text = output(result)
    for name in names[:half]:
        assert "%s: applied" % name in text
    for name in names[half:]:
        assert "%s: not applied" % name in text
    assert "PARTLY applied" in text
    if command != "check":
        assert "refusing to %s a partly applied tree; nothing changed" % command in text
    assert snapshot(tree) == before


def _first_changed_hunk():
    """(patch name, path, hunk) of the first hunk that edits an existing file."""
    for p in patches():
        for fp in p.files:
            if not fp.creates and fp.hunks:
                return p.name, fp.path, fp.hunks[0]
    raise AssertionError("the series edits no existing file")


@pytest.mark.parametrize("command", ["check", "apply"])
def test_a_tree_whose_context_line_differs(tree: Path, command: str):
    name, path, hunk = _first_changed_hunk()
    target = tree / path
    context = hunk.old_lines[0]
    text = target.read_text()
    assert text.count(context + "\n") >= 1
    start = text.index("\n".join(hunk.old_lines) + "\n")
    changed = context.rstrip() + "  # a distribution's change"
    target.write_text(text[:start] + changed + text[start + len(context):])
    before = snapshot(tree)
    result = cli(command, "--tree", str(tree))
    assert result.returncode == engine.EXIT_CONFLICT, output(result)
    text = output(result)
    assert re.search(r"FAILS: %s hunk #1 \(.*\): at line \d+: expected `%s`, found `%s`"
                     % (re.escape(path), re.escape(context), re.escape(changed)), text), text
    assert "%s: would not apply" % name in text
    assert snapshot(tree) == before


def test_a_changed_signature_is_named(tree: Path):
    """A method whose signature the series edits, with another signature
    in the tree: the report names both."""
    for p in patches():
        for fp in p.files:
            for hunk in fp.hunks:
                defs = [ln for ln in hunk.removed if re.match(r"\s*def \w+\(self", ln)]
                if not fp.creates and defs:
                    target = tree / fp.path
                    mine = defs[0].replace("(self", "(self, distro_arg=None", 1)
                    target.write_text(target.read_text().replace(defs[0] + "\n", mine + "\n", 1))
                    result = cli("check", "--tree", str(tree))
                    assert result.returncode == engine.EXIT_CONFLICT, output(result)
                    assert ("the signature differs: expected `%s`" % defs[0].strip()) in \
                        result.stdout, result.stdout
                    assert "has `%s`" % mine.strip() in result.stdout
                    return
    raise AssertionError("no hunk of the series edits a method's signature")


@pytest.mark.parametrize("command", ["check", "apply", "revert"])
def test_a_directory_that_is_not_a_xen_tree(tmp_path: Path, command: str):
    (tmp_path / "README").write_text("not xen\n")
    before = snapshot(tmp_path)
    result = cli(command, "--tree", str(tmp_path))
    assert result.returncode == engine.EXIT_NOT_XEN, output(result)
    assert "not a Xen tree with xend: tools/python/xen/xend/XendDomain.py" in output(result)
    if command != "check":
        assert "refusing to %s: not a Xen tree with xend; nothing changed" % command \
            in output(result)
    assert snapshot(tmp_path) == before


def test_a_result_that_does_not_compile_is_not_written(tree: Path):
    target = tree / modified_paths()[-1]
    assert target.suffix == ".py"
    target.write_text(target.read_text() + "def broken(:\n")
    before = snapshot(tree)
    result = cli("apply", "--tree", str(tree))
    assert result.returncode == engine.EXIT_COMPILE, output(result)
    assert "FAILED" in result.stderr and target.name in result.stderr
    assert snapshot(tree) == before


def test_says_so_when_no_python_2_is_found(tree: Path, tmp_path: Path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "patch").symlink_to(shutil.which("patch"))
    env = dict(os.environ, PATH=str(bindir), HOME=str(tmp_path),
               PYENV_ROOT=str(tmp_path / "none"))
    env.pop("XEND_FASTMIG_PYTHON2", None)
    result = cli("apply", "--tree", str(tree), env=env)
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "byte-compile: SKIPPED, no Python 2 interpreter found" in result.stdout


def test_quilt_managed_tree_is_left_to_quilt(tree: Path):
    for name in series_names():
        gnu_patch(tree, name)
    (tree / ".pc").mkdir()
    (tree / ".pc" / "applied-patches").write_text("\n".join(series_names()) + "\n")
    before = snapshot(tree)
    result = cli("revert", "--tree", str(tree))
    assert result.returncode == engine.EXIT_QUILT, output(result)
    assert "use `quilt pop -a`" in result.stderr
    assert snapshot(tree) == before


# --------------------------------------------------------------------------
# all or nothing when a write fails part-way
# --------------------------------------------------------------------------

@contextlib.contextmanager
def unwritable(path: Path):
    """``path`` cannot be replaced or written, even by root: the immutable
    attribute, else a read-only bind mount.  Always undone."""
    how = None
    try:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True,
                          timeout=TIMEOUT).returncode == 0:
            how = "chattr"
        elif subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)],
                            capture_output=True, timeout=TIMEOUT).returncode == 0:
            how = "mount"
        else:
            pytest.fail("cannot make %s unwritable: neither `chattr +i` nor a read-only "
                        "bind mount works here (run as root on ext4/xfs)" % path)
        with pytest.raises(OSError):
            path.write_bytes(path.read_bytes())
        yield
    finally:
        if how == "chattr":
            subprocess.run(["chattr", "-i", str(path)], timeout=TIMEOUT)
        elif how == "mount":
            subprocess.run(["umount", str(path)], timeout=TIMEOUT)


@pytest.mark.parametrize("command", ["apply", "revert"])
def test_a_write_that_fails_part_way_changes_nothing(tree: Path, command: str):
    """The last file apply writes is immutable: the files already written
    (setup.py, other xend modules, the new package) are put back."""
    if command == "revert":
        assert cli("apply", "--tree", str(tree)).returncode == engine.EXIT_OK
    victim = modified_paths()[-1]
    before = snapshot(tree)
    with unwritable(tree / victim):
        result = cli(command, "--tree", str(tree))
        after = snapshot(tree)
    assert result.returncode == engine.EXIT_WRITE, output(result)
    changed = len([p for p in modified_paths() if p != victim])
    created = len([fp for p in patches() for fp in p.files if fp.creates])
    assert ("writing %s failed: Operation not permitted; put back the %d files already "
            "changed (%d restored, %d new removed): nothing changed in %s"
            % (victim, changed + created, changed if command == "apply" else
               changed + created, created if command == "apply" else 0, tree)) \
        in result.stderr, result.stderr
    assert after == before


def test_when_putting_back_fails_too_it_says_what_is_left(tree: Path, mocker):
    """Pins the report when the disk fails both ways: the tree is named as
    partly changed, with the file left."""
    real = engine._write_file
    calls = []

    def failing(dst, data, like):
        calls.append(dst)
        if len(calls) >= 3:
            raise OSError(28, "No space left on device")
        return real(dst, data, like)

    mocker.patch.object(engine, "_write_file", side_effect=failing)
    outcome = engine.apply(tree, PATCHES, compile_=False)
    assert outcome.status == engine.EXIT_WRITE_LEFT, outcome.lines
    text = "\n".join(outcome.lines)
    assert "putting back failed too: the tree is PARTLY CHANGED" in text
    first = calls[0].relative_to(tree).as_posix()
    assert re.search(r"still changed: .*%s \(No space left on device\)" % re.escape(first),
                     text), text


# --------------------------------------------------------------------------
# bad arguments: one line each, exit status 2
# --------------------------------------------------------------------------

def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == engine.EXIT_USAGE, output(result)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["check", "apply", "revert"])
def test_an_empty_tree_argument_is_an_error(command: str):
    line = _one_line(cli(command, "--tree", ""))
    assert line == ("xend-fastmig patches %s: --tree: empty path (name the top of a Xen "
                    "tree, the directory holding tools/)" % command)


@pytest.mark.parametrize("command", ["check", "apply", "revert"])
def test_a_missing_patches_folder_is_one_line(tree: Path, tmp_path: Path, command: str):
    missing = tmp_path / "no-such-patches"
    line = _one_line(cli(command, "--tree", str(tree), "--patches", str(missing)))
    assert line == "xend-fastmig patches %s: --patches %s: no such directory" % (command, missing)


def test_a_patches_folder_without_a_series_is_one_line(tree: Path, tmp_path: Path):
    line = _one_line(cli("check", "--tree", str(tree), "--patches", str(tmp_path)))
    assert line == ("xend-fastmig patches check: --patches %s: no series file in it, so not "
                    "a patch series" % tmp_path)


def test_a_series_naming_a_missing_patch_is_one_line(tree: Path, tmp_path: Path):
    dest = tmp_path / "patches"
    shutil.copytree(PATCHES, dest)
    (dest / series_names()[-1]).unlink()
    line = _one_line(cli("apply", "--tree", str(tree), "--patches", str(dest)))
    assert line == "xend-fastmig patches apply: %s lists %s, not in %s" % (
        dest / "series", series_names()[-1], dest)


@pytest.mark.parametrize("command", ["apply", "revert"])
def test_a_python2_that_does_not_exist_is_an_error(tree: Path, tmp_path: Path, command: str):
    before = snapshot(tree)
    missing = tmp_path / "python2.4"
    line = _one_line(cli(command, "--tree", str(tree), "--python2", str(missing)))
    assert line == "xend-fastmig patches %s: --python2 %s: no such file" % (command, missing)
    assert snapshot(tree) == before


def test_a_python2_that_is_python_3_is_an_error(tree: Path):
    before = snapshot(tree)
    line = _one_line(cli("apply", "--tree", str(tree), "--python2", sys.executable))
    assert line == ("xend-fastmig patches apply: --python2 %s is Python %d.%d, not Python 2 "
                    "(xend runs on Python 2)" % (sys.executable, *sys.version_info[:2]))
    assert snapshot(tree) == before


def test_a_python2_that_is_not_python_is_an_error(tree: Path, tmp_path: Path):
    fake = tmp_path / "python2"
    fake.write_text("#!/bin/sh\necho 'not a python' >&2\nexit 3\n")
    fake.chmod(0o755)
    line = _one_line(cli("apply", "--tree", str(tree), "--python2", str(fake)))
    assert line == ("xend-fastmig patches apply: --python2 %s: does not run as Python "
                    "(not a python)" % fake)


def test_the_environment_s_python2_is_held_to_the_same(tree: Path, tmp_path: Path):
    env = dict(os.environ, XEND_FASTMIG_PYTHON2=str(tmp_path / "nothing"))
    line = _one_line(cli("apply", "--tree", str(tree), env=env))
    assert line == ("xend-fastmig patches apply: $XEND_FASTMIG_PYTHON2 %s: no such file"
                    % (tmp_path / "nothing"))


def test_a_named_python_2_is_used(tree: Path):
    found = find_python2()
    assert found, "no Python 2 on this machine"
    result = cli("apply", "--tree", str(tree), "--python2", found[0])
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "compile with Python %s (%s)" % (found[1], found[0]) in result.stdout


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------

def test_export_check_reports_drift(tmp_path: Path):
    dest = tmp_path / "patches"
    shutil.copytree(PATCHES, dest)
    ok = cli("export", "--check", "--dest", str(dest))
    assert ok.returncode == engine.EXIT_OK, output(ok)
    # A hand-written patch is not the export's business...
    hand = [n for n in series_names() if n != series.PACKAGE_PATCH][0]
    (dest / hand).write_text((dest / hand).read_text() + "\n")
    assert cli("export", "--check", "--dest", str(dest)).returncode == engine.EXIT_OK
    # ...the package patch is.
    victim = dest / series.PACKAGE_PATCH
    victim.write_text(victim.read_text().replace("xen.xend.fastmig", "xend_fastmig", 1))
    bad = cli("export", "--check", "--dest", str(dest))
    assert bad.returncode == engine.EXIT_DRIFT, output(bad)
    assert "%s differs from a fresh export" % series.PACKAGE_PATCH in bad.stderr
    fixed = cli("export", "--dest", str(dest))
    assert fixed.returncode == engine.EXIT_OK, output(fixed)
    assert victim.read_text() == (PATCHES / series.PACKAGE_PATCH).read_text()


def test_a_hunk_inside_a_method_is_named_after_it(tree: Path, tmp_path: Path):
    """A hunk that edits a body, not a ``def``, is reported under the
    method it sits in.  The hunk is made here from the tree's own lines."""
    rel = "tools/python/xen/xend/XendCheckpoint.py"
    lines = (tree / rel).read_text().split("\n")
    start = next(i for i, ln in enumerate(lines) if re.match(r"def save\(", ln)) + 3
    context = lines[start:start + 6]
    body = ["@@ -%d,6 +%d,7 @@" % (start + 1, start + 1)]
    body += [" " + ln for ln in context[:3]] + ["+    # added in the body"]
    body += [" " + ln for ln in context[3:]]
    dest = tmp_path / "series-dir"
    dest.mkdir()
    (dest / "series").write_text("0001-body.patch\n")
    (dest / "0001-body.patch").write_text("--- a/%s\n+++ b/%s\n%s\n" % (rel, rel, "\n".join(body)))
    lines[start + 4] = lines[start + 4] + "  # a distribution's change"
    (tree / rel).write_text("\n".join(lines))
    result = cli("check", "--tree", str(tree), "--patches", str(dest))
    assert result.returncode == engine.EXIT_CONFLICT, output(result)
    assert "FAILS: %s hunk #1 (save): at line %d" % (rel, start + 5) in result.stdout, \
        result.stdout
