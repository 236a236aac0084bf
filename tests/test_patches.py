"""The patch series (patches/): what every patch in it must be, and what it
does to real Xen trees.

Generic over ``patches/series``: the one generated patch
(``series.PACKAGE_PATCH``, from ``xend_fastmig/``) and every hand-written
patch get the same checks: DEP-3 header read by python-debian's deb822,
three lines of context, a quilt refresh with Debian's settings leaves them
byte for byte, fuzz 0 with GNU patch and quilt on both trees in
../shared/xen (tests/xen_trees.py), every patched module byte-compiles on
Python 2.7, the carried package imports there, and reverting restores the
tree byte for byte.  The CLI is tested in tests/test_patches_cli.py.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import shutil
import subprocess
import tokenize
from pathlib import Path

import pytest
from debian import deb822

from fastmig_tools.patchtool import export, series
from fastmig_tools.patchtool.python2 import find_python2
from fastmig_tools.patchtool.rewrite import leftover_names, rewrite_imports
from fastmig_tools.patchtool.unidiff import parse_patch
from tests.xen_trees import REFERENCE, ROOT, copy_tree, snapshot, tree_ids

PATCHES = ROOT / "patches"
TIMEOUT = 120.0

# Debian's quilt settings (the New Maintainers' Guide's quiltrc), and a
# locale that fixes the order of file names.
DEBIAN_REFRESH_ARGS = "-p ab --no-timestamps --no-index"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def series_names() -> list[str]:
    names = []
    for line in (PATCHES / "series").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


def hand_written() -> list[str]:
    return [n for n in series_names() if n != series.PACKAGE_PATCH]


def committed(name: str):
    return parse_patch(name, (PATCHES / name).read_text())


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kw)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def gnu_patch(tree: Path, name: str, *extra: str,
              patches: Path = PATCHES) -> subprocess.CompletedProcess:
    return run(["patch", "-p1", "--fuzz=0", "--force", "--no-backup-if-mismatch",
                *extra, "-d", str(tree), "-i", str(patches / name)])


def apply_all(tree: Path) -> None:
    for name in series_names():
        result = gnu_patch(tree, name)
        assert result.returncode == 0, output(result)


def drop_empty_dirs(tree: Path) -> None:
    """The pristine trees hold no empty directory; quilt pop and patch -R
    leave the emptied package directory behind."""
    for d in sorted((p for p in tree.rglob("*") if p.is_dir()),
                    key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def quilt_env(patches: Path, pc: Path) -> dict:
    return dict(os.environ, QUILT_PATCHES=str(patches), QUILT_PC=str(pc),
                QUILT_REFRESH_ARGS=DEBIAN_REFRESH_ARGS, QUILT_DIFF_OPTS="",
                QUILT_PATCH_OPTS="", LC_ALL="C")


def quilt(tree: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    # --quiltrc -: no ~/.quiltrc or /etc/quilt.quiltrc, only the settings above.
    return run(["quilt", "--quiltrc", "-", *args], cwd=tree, env=env)


def python27() -> str:
    found = find_python2()
    assert found and found[1] == "2.7", (
        "no Python 2.7 found (pyenv's 2.7.18 is expected on this machine): "
        "the patched modules must be byte-compiled with it")
    return found[0]


@pytest.fixture(params=tree_ids())
def tree_id(request) -> str:
    return request.param


@pytest.fixture
def tree(tree_id: str, tmp_path: Path) -> Path:
    """A scratch copy of each real tree in turn."""
    return copy_tree(tree_id, tmp_path / "xen")


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return copy_tree(REFERENCE, tmp_path / "xen")


# --------------------------------------------------------------------------
# the generated patch and the import rewrite
# --------------------------------------------------------------------------

def test_series_lists_the_generated_patch():
    assert series.PACKAGE_PATCH in series_names()
    assert len(set(series_names())) == len(series_names())
    for name in series_names():
        assert (PATCHES / name).is_file(), name


def test_package_patch_matches_a_fresh_export():
    assert export.drift(PATCHES) == []


def test_drift_in_the_package_is_detected(tmp_path: Path):
    pkg = tmp_path / series.PACKAGE
    shutil.copytree(ROOT / series.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    victim = sorted(pkg.glob("*.py"))[-1]
    victim.write_text(victim.read_text() + "# changed after the export\n")
    assert export.drift(PATCHES, pkg=pkg) == [
        "%s differs from a fresh export" % series.PACKAGE_PATCH]


def test_drift_in_the_series_file_is_detected(tmp_path: Path):
    dest = tmp_path / "patches"
    shutil.copytree(PATCHES, dest)
    text = (dest / "series").read_text()
    (dest / "series").write_text(text.replace(series.PACKAGE_PATCH + "\n", ""))
    assert export.drift(dest) == ["series does not list %s" % series.PACKAGE_PATCH]


def test_export_writes_only_the_package_patch(tmp_path: Path):
    dest = tmp_path / "patches"
    shutil.copytree(PATCHES, dest)
    before = snapshot(dest)
    (dest / series.PACKAGE_PATCH).write_text("stale\n")
    assert export.write(dest) == [series.PACKAGE_PATCH]
    assert snapshot(dest) == before
    assert export.write(dest) == []


def test_rewrite_changes_only_the_package_name_in_imports():
    source = (
        '"""Docs naming xend_fastmig stay as they are."""\n'
        "from xend_fastmig import drain, release\n"
        "from xend_fastmig.drain import (DrainWaiter,\n"
        "                                dom0_block_backends)\n"
        "import xend_fastmig.store as store, os\n"
        "def f():\n"
        "    import xend_fastmig.clock as clock  # xend_fastmig in a comment\n"
        "    return 'xend_fastmig' + clock.__name__\n")
    assert rewrite_imports(source) == (
        '"""Docs naming xend_fastmig stay as they are."""\n'
        "from xen.xend.fastmig import drain, release\n"
        "from xen.xend.fastmig.drain import (DrainWaiter,\n"
        "                                dom0_block_backends)\n"
        "import xen.xend.fastmig.store as store, os\n"
        "def f():\n"
        "    import xen.xend.fastmig.clock as clock  # xend_fastmig in a comment\n"
        "    return 'xend_fastmig' + clock.__name__\n")


def test_rewrite_refuses_a_use_of_the_name_outside_an_import():
    with pytest.raises(ValueError, match=r"m\.py: the name xend_fastmig is used outside "
                                         r"an import at line 2 \(`xend_fastmig\.drain\.X`\)"):
        rewrite_imports("import xend_fastmig.drain\nxend_fastmig.drain.X\n", "m.py")


def _imported_top_names(source: str) -> set[str]:
    names = set()
    for line in source.splitlines():
        m = re.match(r"\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", line)
        if m:
            names.add((m.group(1) or m.group(2)).split(".")[0])
    return names


def test_carried_modules_name_only_the_in_tree_package():
    """What the export carries: every module of the package, no name
    xend_fastmig left in code, only the import lines changed, and no bare
    import that Python 2's implicit relative import would resolve to a
    module of the package instead of the standard library."""
    carried = export.carried_files()
    ours = sorted(p.name for p in (ROOT / series.PACKAGE).glob("*.py"))
    assert sorted(path.rsplit("/", 1)[1] for path in carried) == ours
    modules = {name[:-3] for name in ours}
    for path, text in carried.items():
        original = (ROOT / series.PACKAGE / path.rsplit("/", 1)[1]).read_text()
        assert leftover_names(text) == [], path
        changed = [(a, b) for a, b in zip(original.split("\n"), text.split("\n")) if a != b]
        assert len(text.split("\n")) == len(original.split("\n"))
        for old, new in changed:
            assert new == old.replace(series.PACKAGE, series.IN_TREE_PACKAGE, 1), (path, old)
            assert re.match(r"\s*(from|import) xen\.xend\.fastmig\b", new), (path, new)
        shadowed = _imported_top_names(text) & modules
        assert not shadowed, "%s imports %s by a bare name" % (path, shadowed)


# --------------------------------------------------------------------------
# hygiene of every patch
# --------------------------------------------------------------------------

REQUIRED = (("Description", "Subject"), ("Author", "From"), ("Origin",), ("Forwarded",),
            ("Last-Update",))


def _split(text: str) -> tuple[str, str]:
    """(header, diff): the diff starts at the first ``--- `` file line."""
    m = re.search(r"^--- (a/|/dev/null)", text, re.M)
    assert m, "no diff"
    return text[:m.start()], text[m.start():]


@pytest.mark.parametrize("name", series_names())
def test_header_opens_with_dep3_fields(name: str):
    header, _ = _split((PATCHES / name).read_text())
    fields_block, sep, rest = header.partition("\n\n")
    assert sep, "%s: no blank line after the DEP-3 fields" % name
    # A real DEP-3 reader: the first paragraph of the header.
    paragraphs = list(deb822.Deb822.iter_paragraphs(io.StringIO(header)))
    assert paragraphs, name
    dep3 = paragraphs[0]
    assert sorted(dep3.keys()) == sorted(
        ln.split(":", 1)[0] for ln in fields_block.splitlines() if not ln[:1].isspace()), \
        "%s: deb822 did not read every line of the first paragraph as a field" % name
    for alternatives in REQUIRED:
        assert any(dep3.get(f, "").strip() for f in alternatives), (name, alternatives)
    summary = (dep3.get("Description") or dep3.get("Subject")).split("\n")[0].strip()
    assert summary.startswith("xend: ") and len(summary) <= 75, (name, summary)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", dep3["Last-Update"]), name
    assert re.match(r"(upstream|backport|vendor|other)\b", dep3["Origin"]), name
    # Then the long description, the sign-off, and `---` before the diff.
    assert rest.endswith("---\n"), "%s: the header must end with a `---` line" % name
    body = rest[:-len("---\n")].rstrip("\n").split("\n")
    signoffs = [ln for ln in body if ln.startswith("Signed-off-by: ")]
    assert signoffs and body[-1].startswith("Signed-off-by: "), name
    description = "\n".join(body[:body.index(signoffs[0])]).strip()
    assert len(description.split()) >= 30, "%s: the long description says too little" % name
    # No diffstat: nothing in the header that a refresh would have to rewrite.
    assert not re.search(r"^ .* \| +\d+ ", header, re.M), "%s has a diffstat" % name


@pytest.mark.parametrize("name", series_names())
def test_diff_is_what_quilt_writes(name: str):
    """a/ and b/ names, no timestamps, no Index: lines, three lines of
    context (diff -u), and hunks split as diff would split them."""
    text = (PATCHES / name).read_text()
    _, diff = _split(text)
    assert not re.search(r"^(Index: |====|diff )", diff, re.M), name
    for line in re.findall(r"^(?:---|\+\+\+) .*$", diff, re.M):
        assert re.fullmatch(r"--- (a/\S+|/dev/null)|\+\+\+ b/\S+", line), (name, line)
    patch = committed(name)
    assert patch.files, name
    for fp in patch.files:
        if fp.creates:
            assert len(fp.hunks) == 1 and fp.hunks[0].old_start == 0, (name, fp.path)
            continue
        for i, hunk in enumerate(fp.hunks):
            marks = "".join(ln[0] for ln in hunk.lines)
            lead = len(marks) - len(marks.lstrip(" "))
            trail = len(marks) - len(marks.rstrip(" "))
            where = (name, fp.path, hunk.header())
            assert lead == 3 or (lead < 3 and hunk.old_start == 1), where
            assert trail == 3 or (trail < 3 and i == len(fp.hunks) - 1), where
            inner = re.findall(r"(?<=[-+]) +(?=[-+])", marks)
            assert all(len(run_) <= 6 for run_ in inner), where


# --------------------------------------------------------------------------
# on the real trees
# --------------------------------------------------------------------------

def test_series_applies_with_gnu_patch_at_fuzz_0_and_reverts(tree: Path):
    before = snapshot(tree)
    for name in series_names():
        result = gnu_patch(tree, name)
        assert result.returncode == 0, output(result)
        # neither fuzz nor a reversed-patch guess; offsets are fine
        assert "fuzz" not in result.stdout and "Reversed" not in result.stdout, result.stdout
    assert snapshot(tree) != before
    for name in reversed(series_names()):
        result = gnu_patch(tree, name, "--reverse", "--remove-empty-files")
        assert result.returncode == 0, output(result)
    drop_empty_dirs(tree)
    assert snapshot(tree) == before


def test_quilt_pushes_at_fuzz_0_and_pops(tree: Path, tmp_path: Path):
    before = snapshot(tree)
    env = quilt_env(PATCHES, tmp_path / "pc")
    push = quilt(tree, env, "push", "-a", "--fuzz=0")
    assert push.returncode == 0, output(push)
    assert "fuzz" not in push.stdout.lower(), push.stdout
    assert "Now at patch %s" % series_names()[-1] in push.stdout
    pop = quilt(tree, env, "pop", "-a")
    assert pop.returncode == 0, output(pop)
    drop_empty_dirs(tree)
    assert snapshot(tree) == before


def _hunk_numbers_blanked(text: str) -> str:
    return re.sub(r"^@@ -\d+(,\d+)? \+\d+(,\d+)? @@", "@@ -N +N @@", text, flags=re.M)


def test_quilt_refresh_with_debian_settings_leaves_every_patch_as_committed(
        tree: Path, tree_id: str, tmp_path: Path):
    """`quilt refresh -p ab --no-timestamps --no-index` over each patch in
    turn.  On the tree the series is made against, every byte stays; on the
    other trees only hunk line numbers may move (their functions sit
    elsewhere)."""
    copy = tmp_path / "patches"
    shutil.copytree(PATCHES, copy)
    env = quilt_env(copy, tmp_path / "pc")
    for name in series_names():
        push = quilt(tree, env, "push", "--fuzz=0")
        assert push.returncode == 0, output(push)
        refresh = quilt(tree, env, "refresh")
        assert refresh.returncode == 0, output(refresh)
    for name in series_names():
        ours = (PATCHES / name).read_text()
        theirs = (copy / name).read_text()
        if tree_id == REFERENCE:
            assert theirs == ours, "quilt refresh rewrote %s" % name
        else:
            assert _hunk_numbers_blanked(theirs) == _hunk_numbers_blanked(ours), \
                "quilt refresh rewrote %s beyond its line numbers" % name


def test_patched_modules_compile_and_the_package_imports_on_python_27(tree: Path):
    python = python27()
    apply_all(tree)
    # The tree's copy of the package is this release's, imports rewritten.
    assert export.tree_drift(tree) == []
    touched = sorted({fp.path for n in series_names() for fp in committed(n).files
                      if fp.path.endswith(".py")})
    assert touched
    compiled = run([python, "-m", "py_compile"] + [str(tree / p) for p in touched])
    assert compiled.returncode == 0, output(compiled)
    for path in touched:
        names = {t.string for t in tokenize.generate_tokens(
            io.StringIO((tree / path).read_text()).readline) if t.type == tokenize.NAME}
        assert series.PACKAGE not in names, "%s still names %s" % (path, series.PACKAGE)
    # Import every module of the package as xend would, from the tree's
    # `xen` package (nothing else of ours on the path).  A source tree has
    # no built C bindings (xen.lowlevel.xc, .xs): a module that needs them
    # at import time is let off, nothing else is.
    modules = sorted(p.stem for p in (tree / series.PACKAGE_DEST).glob("*.py"))
    imported = run([python, "-S", str(ROOT / "tests" / "py2_import_package.py"),
                    str(tree / "tools" / "python"), series.IN_TREE_PACKAGE] + modules,
                   cwd=str(tree))
    assert imported.returncode == 0, output(imported)
    results = dict(ln.split(" ", 1) for ln in imported.stdout.splitlines())
    assert sorted(results) == modules, imported.stdout
    assert results["__init__"] == "ok"
    assert all(r == "ok" or r.startswith("needs-c-bindings") for r in results.values()), \
        imported.stdout


def _added_line_numbers(before: str, after: str) -> list[int]:
    matcher = difflib.SequenceMatcher(None, before.split("\n"), after.split("\n"),
                                      autojunk=False)
    return [j + 1 for tag, _, _, j1, j2 in matcher.get_opcodes()
            if tag in ("insert", "replace") for j in range(j1, j2)]


def test_tree_drift_is_detected(reference: Path):
    """A patched tree whose copy of the package is not this release's."""
    apply_all(reference)
    assert export.tree_drift(reference) == []
    pkg = reference / series.PACKAGE_DEST
    victim = sorted(pkg.glob("*.py"))[-1]
    victim.write_text(victim.read_text().replace(series.IN_TREE_PACKAGE, series.PACKAGE))
    (pkg / "stale.py").write_text('"""From an older release."""\n')
    (pkg / "__init__.py").unlink()
    rel = series.PACKAGE_DEST + "/"
    assert export.tree_drift(reference) == [
        "%s__init__.py is missing from the tree" % rel,
        "%sstale.py is in the tree but not in %s/" % (rel, series.PACKAGE),
        "%s%s differs from %s/%s with its imports rewritten"
        % (rel, victim.name, series.PACKAGE, victim.name),
    ]


def test_every_option_is_documented_with_its_default(reference: Path):
    """Where the options are documented for users: the tree's example
    xend-config.sxp (and man page) once the series edits them, the
    snippet in patches/ while it exists.  At least one of them."""
    from xend_fastmig import options
    wanted = {
        options.ENABLED: "yes",
        options.EARLY_RELEASE: "yes",
        options.DRAIN_TIMEOUT: "%g" % options.DEFAULT_DRAIN_TIMEOUT,
        options.VERDICT_TIMEOUT: "%g" % options.DEFAULT_VERDICT_TIMEOUT,
    }
    apply_all(reference)
    touched = {fp.path for n in series_names() for fp in committed(n).files}
    documents = [PATCHES / "xend-config-fastmig.sxp"] if \
        (PATCHES / "xend-config-fastmig.sxp").is_file() else []
    if "tools/examples/xend-config.sxp" in touched:
        documents.append(reference / "tools/examples/xend-config.sxp")
        man = (reference / "docs/man/xend-config.sxp.pod.5").read_text()
        for option in wanted:
            assert "I<%s>" % option in man, option
    assert documents, "no document gives the options and their defaults"
    for document in documents:
        settings = dict(re.findall(r"^#?\((xend-fast-migration[\w-]*) (\S+)\)$",
                                   document.read_text(), re.M))
        assert settings == wanted, document


def test_every_added_line_keeps_to_python_24(reference: Path, tmp_path: Path):
    """What the series adds keeps to Python 2.4 (xend on CentOS 5): the
    package it carries by tools/py24check.py, the lines it adds to xend's
    own modules by an ast walk on Python 2.7 (Python 3 cannot parse them)."""
    pristine = copy_tree(REFERENCE, tmp_path / "pristine")
    apply_all(reference)
    created, modified = set(), set()
    for name in series_names():
        for fp in committed(name).files:
            if fp.path.endswith(".py"):
                (created if fp.creates else modified).add(fp.path)
    modified -= created
    checked = run(["python3", str(ROOT / "tools" / "py24check.py")]
                  + sorted(str(reference / p) for p in created))
    assert checked.returncode == 0, output(checked)
    args = []
    for path in sorted(modified):
        lines = _added_line_numbers((pristine / path).read_text(), (reference / path).read_text())
        assert lines, path
        args += [str(reference / path), ",".join(map(str, lines))]
    walked = run([python27(), str(ROOT / "tests" / "py24_added_lines.py")] + args)
    assert walked.returncode == 0, output(walked)


def test_the_python_24_walk_flags_what_it_must(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("def f(x):\n"
                      "    try:\n"
                      "        y = x and 1 if x else 2\n"
                      "    except ValueError as e:\n"
                      "        pass\n"
                      "    finally:\n"
                      "        return any([x])\n"
                      "def g(x):\n"
                      "    return '%s' % x\n")
    walked = run([python27(), str(ROOT / "tests" / "py24_added_lines.py"),
                  str(module), "1,2,3,4,5,6,7,8,9"])
    assert walked.returncode == 1
    found = sorted(ln.split(": ", 1)[1] for ln in walked.stdout.splitlines())
    assert found == ["'except X as name' is not Python 2.4", "a conditional expression is "
                     "not Python 2.4", "any() is not Python 2.4",
                     "try/except/finally in one statement is not Python 2.4"], walked.stdout
    assert run([python27(), str(ROOT / "tests" / "py24_added_lines.py"),
                str(module), "8,9"]).returncode == 0
