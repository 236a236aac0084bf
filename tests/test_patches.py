"""The patch series (patches/) and `xend-fastmig patches ...`.

Xen's files are not part of this repository (only a patch's context lines
may carry Xen's text), so the always-run tests use a *synthetic* tree built
here from the series' own hunks: each hunk's preimage (context and removed
lines) is laid out, apart from the others, inside just enough scaffolding to
be a module that compiles.  The tests that need a real Xen 3.1 tree read it
from the environment variable XEN31_TREE and are skipped, saying so, when it
is unset; they copy it and never touch the original.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastmig_tools.patchtool import engine, export, series
from fastmig_tools.patchtool.python2 import find_python2
from fastmig_tools.patchtool.unidiff import parse_patch

ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / "patches"
XEN31_TREE = os.environ.get("XEN31_TREE")
needs_xen31 = pytest.mark.skipif(
    not XEN31_TREE,
    reason="XEN31_TREE is unset: set it to a Xen 3.1 checkout (e.g. xen-project/xen "
           "tag 3.1.0-branched) to apply the series to a real tree")
CLI_TIMEOUT = 120.0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def series_names() -> list[str]:
    return [ln for ln in (PATCHES / "series").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def committed() -> list:
    return [parse_patch(n, (PATCHES / n).read_text()) for n in series_names()]


def snapshot(tree: Path) -> dict[str, str]:
    """Every file under ``tree`` (path -> sha256), and every directory."""
    out = {}
    for path in sorted(tree.rglob("*")):
        rel = str(path.relative_to(tree))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


CLI = [sys.executable, "-m", "fastmig_tools.cli"]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["patches", *args],
                          cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=CLI_TIMEOUT)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def _scaffold(path: str, pieces: list[list[str]]) -> str:
    """A module holding each preimage piece, compiling on Python 2 and 3."""
    out = ["# Synthetic preimage: built by tests/test_patches.py from the hunks",
           "# of patches/; not Xen's file."]
    if path.endswith("setup.py"):
        out += ["def setup(**kw):", "    return kw", ""]
        for piece in pieces:
            out += ["setup(name = 'xen',"] + piece + ["                         ])", ""]
        return "\n".join(out) + "\n"
    out += ["class Synthetic:", "    filler = 0"]
    for n, piece in enumerate(pieces):
        # Filler keeps the hunks apart and off Xen's line numbers.
        out += ["    # filler %d" % i for i in range(7 + 5 * n)]
        out += piece
        if piece[-1].count('"""') % 2:
            out.append('        synthetic body"""')
        out += ["        return 'stock'", ""]
    return "\n".join(out) + "\n"


def make_synthetic_tree(root: Path, patches=None) -> Path:
    """A tree where the series applies: every modified file holds the
    preimages of its hunks, in series order."""
    patches = patches or committed()
    pieces: dict[str, list[list[str]]] = {}
    for p in patches:
        for fp in p.files:
            if fp.creates:
                continue
            for hunk in fp.hunks:
                pieces.setdefault(fp.path, []).append(hunk.old_lines)
    for path, parts in pieces.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_scaffold(path, parts))
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_synthetic_tree(tmp_path / "xen")


def drop_empty_package_dir(tree: Path) -> None:
    """quilt pop leaves the emptied tools/python/xend_fastmig behind
    (GNU patch -R -E removes it)."""
    pkg = tree / series.PACKAGE_DEST
    if pkg.is_dir():
        pkg.rmdir()


def gnu_patch(tree: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["patch", "-p1", "--fuzz=0", "--force", "--no-backup-if-mismatch",
                           *extra, "-d", str(tree), "-i", str(PATCHES / name)],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def apply_file_by_file(tree: Path, reverse: bool = False) -> None:
    names = series_names()
    for name in (reversed(names) if reverse else names):
        extra = ("--reverse", "--remove-empty-files") if reverse else ()
        result = gnu_patch(tree, name, *extra)
        assert result.returncode == 0, output(result)


# --------------------------------------------------------------------------
# the series itself
# --------------------------------------------------------------------------

def test_committed_series_matches_a_fresh_export():
    assert export.drift(PATCHES) == []


def test_drift_in_the_package_is_detected(tmp_path: Path):
    pkg = tmp_path / series.PACKAGE
    shutil.copytree(ROOT / series.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    victim = sorted(pkg.glob("*.py"))[-1]
    victim.write_text(victim.read_text() + "# changed after the export\n")
    problems = export.drift(PATCHES, pkg=pkg)
    assert problems == ["0001-xend-add-the-xend_fastmig-package.patch differs from a fresh export"]


def test_drift_in_a_hook_is_detected(monkeypatch):
    hook = series.PATCHES[1].hook
    changed = series.Hook(hook.path, hook.anchor, hook.renamed, hook.context,
                          hook.dispatcher[:-2] + ("        pass", ""), hook.line)
    patched = list(series.PATCHES)
    patched[1] = series.HookPatch(series.PATCHES[1].number, series.PATCHES[1].slug,
                                  series.PATCHES[1].subject, series.PATCHES[1].why, changed)
    monkeypatch.setattr(series, "PATCHES", tuple(patched))
    assert export.drift(PATCHES) == ["%s differs from a fresh export" % series.PATCHES[1].filename]


def test_export_writes_only_generated_files(tmp_path: Path):
    dest = tmp_path / "patches"
    dest.mkdir()
    (dest / "xend-config-fastmig.sxp").write_text("(keep me)\n")
    (dest / "0099-stale.patch").write_text("old\n")
    export.write(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        series_names() + ["series", "xend-config-fastmig.sxp"])
    assert (dest / "xend-config-fastmig.sxp").read_text() == "(keep me)\n"
    assert export.drift(dest) == []


def test_config_snippet_documents_every_option_with_its_default():
    from xend_fastmig import options
    text = (PATCHES / "xend-config-fastmig.sxp").read_text()
    settings = dict(re.findall(r"^\((xend-fast-migration[\w-]*) (\S+)\)$", text, re.M))
    assert settings == {
        options.ENABLED: "yes",
        options.DRAIN_TIMEOUT: "%g" % options.DEFAULT_DRAIN_TIMEOUT,
        options.VERDICT_TIMEOUT: "%g" % options.DEFAULT_VERDICT_TIMEOUT,
    }
    assert options.FastMigrationOptions().enabled is True


def test_package_is_carried_byte_for_byte(tree: Path):
    apply_file_by_file(tree)
    ours = sorted(p.name for p in (ROOT / series.PACKAGE).glob("*.py"))
    carried = sorted(p.name for p in (tree / series.PACKAGE_DEST).glob("*.py"))
    assert carried == ours
    for name in ours:
        assert (tree / series.PACKAGE_DEST / name).read_bytes() == \
            (ROOT / series.PACKAGE / name).read_bytes(), name


def test_headers_follow_xen_and_dep3_conventions():
    for name in series_names():
        text = (PATCHES / name).read_text()
        header = text.split("\n---\n", 1)[0]
        first = header.splitlines()[0]
        assert first.startswith("xend: ") and len(first) <= 75, (name, first)
        for field in ("Signed-off-by: ", "Description: ", "Author: ", "Origin: ",
                      "Forwarded: ", "Last-Update: "):
            assert re.search("^" + field, header, re.M), (name, field)
        assert re.search(r"^Last-Update: \d{4}-\d\d-\d\d$", header, re.M)
        # a why-description between the subject and the sign-off
        assert len(header.split("Signed-off-by:")[0].split()) > 40, name


def test_hunks_are_anchored_on_signature_and_docstring_only():
    """A hook hunk's context is the blank line before the def and the
    docstring's first line; nothing of the body, so distribution fixes in
    these functions do not stop it applying."""
    for p in committed()[1:]:
        for fp in p.files:
            for hunk in fp.hunks:
                context = [ln[1:] for ln in hunk.lines if ln[0] == " "]
                assert len(context) == 2 and context[0] == "", (p.name, context)
                assert context[1].lstrip().startswith('"""'), (p.name, context)
                assert [ln for ln in hunk.removed if not ln.lstrip().startswith("def ")] == []


def test_series_applies_file_by_file_with_fuzz_0_and_reverts(tree: Path):
    before = snapshot(tree)
    for name in series_names():
        result = gnu_patch(tree, name)
        assert result.returncode == 0, output(result)
        # neither fuzz nor a reversed-patch guess; offsets are expected
        assert "fuzz" not in result.stdout and "Reversed" not in result.stdout, result.stdout
    assert snapshot(tree) != before
    apply_file_by_file(tree, reverse=True)
    drop_empty_package_dir(tree)
    assert snapshot(tree) == before


def test_quilt_push_with_fuzz_0_and_pop(tree: Path):
    if not shutil.which("quilt"):
        pytest.skip("quilt is not installed (apt-get install quilt); "
                    "the file-by-file GNU patch test covers the same hunks")
    before = snapshot(tree)
    env = dict(os.environ, QUILT_PATCHES=str(PATCHES), QUILT_PC=str(tree.parent / "pc"))
    push = subprocess.run(["quilt", "push", "-a", "--fuzz=0"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert push.returncode == 0, output(push)
    assert "fuzz" not in push.stdout.lower()
    pop = subprocess.run(["quilt", "pop", "-a"], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert pop.returncode == 0, output(pop)
    drop_empty_package_dir(tree)
    assert snapshot(tree) == before


def test_every_added_line_passes_the_python_24_check(tree: Path):
    """The patched modules (our added lines inside Xen's context and the
    synthetic scaffolding, both plain 2.4) and the carried package."""
    apply_file_by_file(tree)
    files = [str(tree / p) for p in series.XEND_FILES + (series.SETUP_PY,)]
    files += sorted(str(p) for p in (tree / series.PACKAGE_DEST).glob("*.py"))
    checker = ROOT / "tools" / "py24check.py"
    if checker.is_file():
        cmd = [sys.executable, str(checker)] + files
    else:
        cmd = [shutil.which("vermin") or "vermin", "-t=2.4-", "--no-tips", "--violations"] + files
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, output(result)


def test_added_hook_lines_compile_on_python_2(tree: Path):
    found = find_python2()
    if not found:
        pytest.skip("no Python 2 interpreter (python2.7, python2, pyenv 2.7.*) found")
    apply_file_by_file(tree)
    files = [str(tree / p) for p in series.XEND_FILES + (series.SETUP_PY,)]
    result = subprocess.run([found[0], "-c", "import sys\nfor f in sys.argv[1:]:\n"
                             "    compile(open(f).read(), f, 'exec')\n"] + files,
                            capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, output(result)


def _load_patched(path: Path, name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Synthetic()


@pytest.fixture
def hooks(mocker, monkeypatch):
    """A stand-in for xend_fastmig.xend_hooks, recording the hooks' calls."""
    import types
    fake = types.ModuleType("xend_fastmig.xend_hooks")
    fake.fast_migration_enabled = mocker.Mock(return_value=True)
    fake.domain_migrate = mocker.Mock(return_value="fast")
    fake.release_devices = mocker.Mock(return_value="fast")
    fake.test_device_complete = mocker.Mock(return_value="fast")
    import xend_fastmig
    monkeypatch.setitem(sys.modules, "xend_fastmig.xend_hooks", fake)
    monkeypatch.setattr(xend_fastmig, "xend_hooks", fake, raising=False)
    return fake


def test_hooks_dispatch_only_when_asked(tree: Path, hooks):
    """The patched methods: stock unless force / io_done / fast migration."""
    apply_file_by_file(tree)
    info = _load_patched(tree / series.XEND_FILES[1], "patched_info")
    assert info._releaseDevices() == "stock"
    assert info._releaseDevices(True) == "stock"
    assert info.testDeviceComplete() == "stock"
    hooks.release_devices.assert_not_called()
    hooks.test_device_complete.assert_not_called()
    assert info._releaseDevices(force=True) == "fast"
    hooks.release_devices.assert_called_once_with(info, False, True)
    assert info.testDeviceComplete(io_done=True) == "fast"
    hooks.test_device_complete.assert_called_once_with(info, True)

    domain = _load_patched(tree / series.XEND_FILES[0], "patched_domain")
    assert domain.domain_migrate(7, "10.0.0.2", True, 0, 8002) == "fast"
    hooks.domain_migrate.assert_called_once_with(domain, 7, "10.0.0.2", True, 0, 8002)
    hooks.fast_migration_enabled.return_value = False
    assert domain.domain_migrate(7, "10.0.0.2", live=True) == "stock"
    assert hooks.domain_migrate.call_count == 1


# --------------------------------------------------------------------------
# xend-fastmig patches check / apply / revert
# --------------------------------------------------------------------------

def test_check_a_good_tree(tree: Path):
    before = snapshot(tree)
    result = cli("check", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "the series is not applied, and every hunk applies with fuzz 0" in result.stdout
    for name in series_names():
        assert "%s: not applied" % name in result.stdout
    assert snapshot(tree) == before


def test_apply_then_revert_a_good_tree(tree: Path):
    before = snapshot(tree)
    result = cli("apply", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "dry run: all 4 patches apply with fuzz 0" in result.stdout
    assert "applied: 4 patches" in result.stdout
    assert "byte-compile" in result.stdout
    # the same result as GNU patch file by file
    reference = make_synthetic_tree(tree.parent / "reference")
    apply_file_by_file(reference)
    assert snapshot(tree) == snapshot(reference)

    check = cli("check", "--tree", str(tree))
    assert check.returncode == engine.EXIT_APPLIED
    assert "state: the series is applied" in check.stdout

    result = cli("revert", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "reverted: 4 patches" in result.stdout
    assert snapshot(tree) == before


def test_apply_refuses_an_already_patched_tree(tree: Path):
    apply_file_by_file(tree)
    before = snapshot(tree)
    result = cli("apply", "--tree", str(tree))
    assert result.returncode == engine.EXIT_APPLIED
    assert "refusing to apply: already applied; nothing changed" in result.stderr
    assert snapshot(tree) == before


def test_revert_refuses_a_tree_without_the_series(tree: Path):
    before = snapshot(tree)
    result = cli("revert", "--tree", str(tree))
    assert result.returncode == engine.EXIT_NOT_APPLIED
    assert "refusing to revert: not applied; nothing changed" in result.stderr
    assert snapshot(tree) == before


@pytest.mark.parametrize("command", ["check", "apply", "revert"])
def test_a_half_patched_tree(tree: Path, command: str):
    names = series_names()
    for name in names[:2]:
        assert gnu_patch(tree, name).returncode == 0
    before = snapshot(tree)
    result = cli(command, "--tree", str(tree))
    assert result.returncode == engine.EXIT_PARTLY, output(result)
    text = output(result)
    assert "%s: applied" % names[0] in text and "%s: applied" % names[1] in text
    assert "%s: not applied" % names[2] in text
    assert "PARTLY applied" in text
    if command != "check":
        assert "refusing to %s a partly applied tree; nothing changed" % command in text
    assert snapshot(tree) == before


@pytest.mark.parametrize("command", ["check", "apply"])
def test_a_tree_whose_hunk_does_not_match(tree: Path, command: str):
    target = tree / "tools/python/xen/xend/XendDomainInfo.py"
    text = target.read_text()
    assert "    def testDeviceComplete(self):" in text
    target.write_text(text.replace("    def testDeviceComplete(self):",
                                   "    def testDeviceComplete(self, wait=True):"))
    before = snapshot(tree)
    result = cli(command, "--tree", str(tree))
    assert result.returncode == engine.EXIT_CONFLICT, output(result)
    text = output(result)
    assert ("FAILS: tools/python/xen/xend/XendDomainInfo.py hunk #1 (testDeviceComplete): "
            "the signature differs: expected `def testDeviceComplete(self):`") in text
    assert "0003-xend-testDeviceComplete-io_done.patch: would not apply" in text
    assert "0002-xend-releaseDevices-force.patch: not applied" in text
    assert snapshot(tree) == before


def test_a_body_line_that_differs_is_named(tree: Path):
    """A changed context line is reported with its line number, expected
    and found text."""
    target = tree / "tools/python/xen/xend/XendDomain.py"
    text = target.read_text()
    target.write_text(text.replace('        """Start domain migration.',
                                   '        """Start a domain migration.'))
    result = cli("check", "--tree", str(tree))
    assert result.returncode == engine.EXIT_CONFLICT
    assert re.search(r"XendDomain.py hunk #1 \(domain_migrate\): at line \d+: expected "
                     r"`        \"\"\"Start domain migration.`, found "
                     r"`        \"\"\"Start a domain migration.`", result.stdout), result.stdout


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
    found = find_python2()
    if not found:
        pytest.skip("no Python 2 interpreter (python2.7, python2, pyenv 2.7.*) found")
    target = tree / "tools/python/xen/xend/XendDomain.py"
    target.write_text(target.read_text() + "def broken(:\n")
    before = snapshot(tree)
    result = cli("apply", "--tree", str(tree))
    assert result.returncode == engine.EXIT_COMPILE, output(result)
    assert "FAILED" in result.stderr and "XendDomain.py" in result.stderr
    assert snapshot(tree) == before


def test_says_so_when_no_python_2_is_found(tree: Path, tmp_path: Path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "patch").symlink_to(shutil.which("patch"))
    env = dict(os.environ, PATH=str(bindir), HOME=str(tmp_path), PYENV_ROOT=str(tmp_path / "none"))
    env.pop("XEND_FASTMIG_PYTHON2", None)
    result = cli("apply", "--tree", str(tree), env=env)
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "byte-compile: SKIPPED, no Python 2 interpreter found" in result.stdout


def test_quilt_managed_tree_is_left_to_quilt(tree: Path):
    apply_file_by_file(tree)
    (tree / ".pc").mkdir()
    (tree / ".pc" / "applied-patches").write_text("\n".join(series_names()) + "\n")
    before = snapshot(tree)
    result = cli("revert", "--tree", str(tree))
    assert result.returncode == engine.EXIT_QUILT, output(result)
    assert "use `quilt pop -a`" in result.stderr
    assert snapshot(tree) == before


def test_install_puts_back_what_it_changed_when_a_write_fails(tree: Path, mocker):
    """All or nothing even if the disk fails half-way through the writes."""
    before = snapshot(tree)
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    mocker.patch("fastmig_tools.patchtool.engine.os.replace", side_effect=flaky)
    with pytest.raises(OSError, match="No space left"):
        engine.apply(tree, PATCHES, compile_=False)
    assert len(calls) == 3
    assert snapshot(tree) == before


def test_export_check_reports_drift(tmp_path: Path):
    dest = tmp_path / "patches"
    shutil.copytree(PATCHES, dest)
    ok = cli("export", "--check", "--dest", str(dest))
    assert ok.returncode == engine.EXIT_OK, output(ok)
    victim = dest / series_names()[2]
    victim.write_text(victim.read_text().replace("io_done", "io_finished"))
    bad = cli("export", "--check", "--dest", str(dest))
    assert bad.returncode == engine.EXIT_DRIFT
    assert "%s differs from a fresh export" % victim.name in bad.stderr


# --------------------------------------------------------------------------
# a real Xen 3.1 tree (XEN31_TREE)
# --------------------------------------------------------------------------

def _copy_real_tree(dest: Path) -> Path:
    src = Path(XEN31_TREE)
    for rel in ("tools/python", "xen/Makefile"):
        if (src / rel).is_dir():
            shutil.copytree(src / rel, dest / rel, symlinks=True)
        elif (src / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)
    return dest


def _vary(tree: Path) -> None:
    """Make the tree look like a distribution's: lines added above and
    inside the patched functions (right after a docstring, too), a first
    body line changed, and upstream's 2007-05-22 fix (destroyDomain no
    longer clears the domid)."""
    info = tree / "tools/python/xen/xend/XendDomainInfo.py"
    text = info.read_text()
    fix = "                xc.domain_destroy(self.domid)\n                self.domid = None\n"
    assert fix in text
    text = text.replace(fix, "                xc.domain_destroy(self.domid)\n")
    text = text.replace("import logging\n", "import logging\n# distribution: extra import\nimport errno\n", 1)
    first = '        flushed to disk\n        """\n        start = time.time()\n'
    assert first in text
    text = text.replace(first, '        flushed to disk\n        """\n'
                        "        start = time.time()  # distribution: changed first line\n")
    text = text.replace("            if diff >= MIGRATE_TIMEOUT:\n",
                        "            # distribution: log the wait\n"
                        "            if diff >= MIGRATE_TIMEOUT:\n", 1)
    text = text.replace('        """Release all domain\'s devices.  Nothrow guarantee."""\n'
                        "        if suspend and self.image:\n",
                        '        """Release all domain\'s devices.  Nothrow guarantee."""\n'
                        "        log.debug('releasing devices of %s', self.domid)\n"
                        "        if suspend and self.image:\n")
    info.write_text(text)
    dom = tree / "tools/python/xen/xend/XendDomain.py"
    text = dom.read_text()
    old = "        dominfo.testMigrateDevices(True, dst)\n"
    assert old in text
    dom.write_text(text.replace(old, "        # distribution: check devices first\n" + old, 1))


@needs_xen31
def test_real_tree_apply_compile_and_revert(tmp_path: Path):
    found = find_python2()
    assert found, "XEN31_TREE is set but no Python 2 was found to byte-compile with"
    tree = _copy_real_tree(tmp_path / "xen31")
    before = snapshot(tree)
    check = cli("check", "--tree", str(tree))
    assert check.returncode == engine.EXIT_OK, output(check)
    result = cli("apply", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert re.search(r"byte-compile: \d+ modules compile with Python 2\.7", result.stdout), \
        result.stdout
    # and directly, every patched module, as xend would import it
    files = [str(tree / p) for p in series.XEND_FILES]
    files += sorted(str(p) for p in (tree / series.PACKAGE_DEST).glob("*.py"))
    compiled = subprocess.run([found[0], "-m", "py_compile"] + files,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert compiled.returncode == 0, output(compiled)
    for pyc in list(tree.rglob("*.pyc")):
        pyc.unlink()
    assert cli("check", "--tree", str(tree)).returncode == engine.EXIT_APPLIED
    result = cli("revert", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert snapshot(tree) == before


@needs_xen31
def test_real_tree_quilt_and_patch_with_fuzz_0(tmp_path: Path):
    tree = _copy_real_tree(tmp_path / "xen31")
    before = snapshot(tree)
    for name in series_names():
        result = gnu_patch(tree, name)
        assert result.returncode == 0, output(result)
        assert "fuzz" not in result.stdout and "offset" not in result.stdout, result.stdout
    apply_file_by_file(tree, reverse=True)
    drop_empty_package_dir(tree)
    assert snapshot(tree) == before
    if shutil.which("quilt"):
        env = dict(os.environ, QUILT_PATCHES=str(PATCHES), QUILT_PC=str(tmp_path / "pc"))
        push = subprocess.run(["quilt", "push", "-a", "--fuzz=0"], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT)
        assert push.returncode == 0, output(push)


@needs_xen31
def test_real_tree_with_distribution_changes(tmp_path: Path):
    tree = _copy_real_tree(tmp_path / "varied")
    _vary(tree)
    for name in series_names():
        result = gnu_patch(tree, name, "--dry-run")
        assert result.returncode == 0, output(result)
    result = cli("apply", "--tree", str(tree))
    assert result.returncode == engine.EXIT_OK, output(result)
    assert "modules compile with Python 2" in result.stdout
    text = (tree / "tools/python/xen/xend/XendDomainInfo.py").read_text()
    # the stock body, with the distribution's line, now behind the dispatcher
    assert ("    def _releaseDevicesStock(self, suspend = False):\n"
            '        """Release all domain\'s devices.  Nothrow guarantee."""\n'
            "        log.debug('releasing devices of %s', self.domid)\n") in text
