"""``xend-fastmig verify --tree``: the series and the tree's real xend.

The full runs (one per shared tree) take a minute or two each: they are
the proof a packager gets, so they run the harness for real.  The failing
trees fail before any harness run, on the series check.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fastmig_tools.cli import main
from fastmig_tools.verify import patchsets
from tests.conftest import XEN_TREES, XEN_TREES_DIR

pytestmark = [pytest.mark.xend]

PORT_310 = patchsets.COMPARE_DIR / "patch2008-port-3.1.0.diff"


def tree_path(name: str) -> Path:
    path = Path(XEN_TREES_DIR) / name
    if not (path / "tools" / "python" / "xen" / "xend").is_dir():
        pytest.fail("Xen tree %s missing" % path, pytrace=False)
    return path


def fingerprint(tree: Path) -> dict:
    out = {}
    for part in ("tools/python/xen/xend", "tools/examples"):
        for path in sorted((tree / part).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(tree))] = hashlib.sha256(
                    path.read_bytes()).hexdigest()
    return out


def writable_copy(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for part in ("tools", "docs"):
        shutil.copytree(src / part, dest / part, symlinks=True)
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


def verify(capsys, tree, *extra):
    status = main(["verify", "--tree", str(tree), "--json", "--quiet", *extra])
    out = capsys.readouterr()
    return status, json.loads(out.out), out.err


@pytest.mark.timeout(600)   # 3 min measured at load average 27
@pytest.mark.parametrize("name", XEN_TREES)
def test_verify_passes_on_the_shared_tree(capsys, name):
    tree = tree_path(name)
    before = fingerprint(tree)
    status, doc, _err = verify(capsys, tree)
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert status == 0 and doc["ok"] and not failed, failed
    names = " | ".join(c["name"] for c in doc["checks"])
    for what in ("series applies", "patched -> stock", "stock -> patched",
                 "save and restore", "option off", "package deleted",
                 "target fails after the image (patched", "HVM", "tap",
                 "shutdown-request"):
        assert what in names
    figures = [f for c in doc["checks"] for f in c["figures"]]
    patched = {f["memory_gb"]: f for f in figures
               if f["variant"] == "patched" and f["what"] == "migrate"}
    stock = {f["memory_gb"]: f for f in figures
             if f["variant"] == "stock" and f["what"] == "migrate"}
    assert sorted(patched) == sorted(stock) == [1.0, 4.0]
    # Stock's gate carries the source's destroy (0.5 s/GB, so at least 2 s
    # at 4 GB); the patched gate does not.  Orderings only: the machine is
    # shared, and a loaded run has added a second to a 1 GB stock gate.
    assert stock[4.0]["gate"] > stock[1.0]["gate"]
    assert stock[4.0]["gate"] >= 2.0
    assert patched[4.0]["gate"] < stock[4.0]["gate"]
    failing = [f for f in figures if f["what"] == "target fails"]
    assert {f["variant"]: f["guest"] for f in failing} == {
        "patched": "resumed at the source", "stock": "LOST (no copy runs)"}
    assert fingerprint(tree) == before


@pytest.mark.timeout(120)
def test_verify_fails_where_a_hunk_context_differs(capsys, tmp_path):
    tree = writable_copy(tree_path("3.1.0"), tmp_path / "tree")
    migrate = tree / "tools/python/xen/xend/XendDomain.py"
    text = migrate.read_text()
    assert text.count("        sock.recv(80)\n") == 1
    migrate.write_text(text.replace("        sock.recv(80)\n",
                                    "        sock.recv(4096)\n"))
    before = fingerprint(tree)
    status, doc, _err = verify(capsys, tree)
    assert status == 1 and not doc["ok"]
    assert [c["ok"] for c in doc["checks"]] == [False]     # no harness run
    reason = doc["reason"]
    assert "does not apply with fuzz 0" in reason
    assert "XendDomain.py hunk #1 (domain_migrate)" in reason
    assert "sock.recv(4096)" in reason
    assert fingerprint(tree) == before


@pytest.mark.timeout(120)
def test_verify_fails_on_a_tree_with_the_2008_patch(capsys, tmp_path):
    tree = writable_copy(tree_path("3.1.0"), tmp_path / "tree")
    subprocess.run(["patch", "-p1", "--fuzz=0", "-s", "-i", str(PORT_310)],
                   cwd=tree, check=True, timeout=60)
    status, doc, _err = verify(capsys, tree)
    assert status == 1
    assert doc["reason"].startswith("series applies (fuzz 0) and compiles: "
                                    "the tree carries the 2008 patch")
    assert "testDeviceComplete(self, io_done = False)" in doc["reason"]


@pytest.mark.timeout(60)
def test_verify_text_output_ends_with_the_reason(capsys, tmp_path):
    tree = writable_copy(tree_path("3.1.0"), tmp_path / "tree")
    subprocess.run(["patch", "-p1", "--fuzz=0", "-s", "-i", str(PORT_310)],
                   cwd=tree, check=True, timeout=60)
    status = main(["verify", "--tree", str(tree)])
    out = capsys.readouterr()
    assert status == 1
    last = out.out.strip().splitlines()[-1]
    assert last.startswith("verify: FAILED (1 of 1 checks")
    assert "the tree carries the 2008 patch" in last
    assert "verify: [1/" in out.err                      # the progress line


@pytest.mark.timeout(30)
def test_verify_not_a_tree_is_one_line(capsys, tmp_path):
    status = main(["verify", "--tree", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert "is not a Xen 3.1 tree with xend" in err


@pytest.mark.timeout(30)
def test_verify_without_xenstored_says_what_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTMIG_XEN_ROOT", str(tmp_path / "nothing"))
    status = main(["verify", "--tree", str(tree_path("3.1.0"))])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "no real xenstored: run scripts/install-xenstored" in err


@pytest.mark.timeout(30)
def test_verify_without_python27_says_what_to_install(capsys, monkeypatch):
    from fastmig_tools.xendharness import build

    def missing():
        raise build.HarnessUnavailable("no Python 2.7")
    monkeypatch.setattr(build, "python27", missing)
    status = main(["verify", "--tree", str(tree_path("3.1.0"))])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "pyenv install 2.7.18" in err and "FASTMIG_PYTHON27" in err


@pytest.mark.timeout(30)
def test_harness_copies_of_the_series(tmp_path):
    """The harness runs tools/ only; the package-deleted copies leave the
    fastmig package out but keep every hunk of xend's own files."""
    full = patchsets.harness_series(tmp_path / "a")
    bare = patchsets.harness_series(tmp_path / "b", without_package=True)
    assert len(full) == len(bare) == len(patchsets.series_names())
    text = "".join(p.read_text() for p in full)
    assert "+++ b/docs/" not in text and "+++ b/tools/python/xen/xend/fastmig/" in text
    bare_text = "".join(p.read_text() for p in bare)
    assert "+++ b/tools/python/xen/xend/fastmig/" not in bare_text
    for name in ("XendOptions.py", "XendDomainInfo.py", "XendCheckpoint.py",
                 "XendDomain.py"):
        assert text.count("+++ b/tools/python/xen/xend/" + name) == \
            bare_text.count("+++ b/tools/python/xen/xend/" + name) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", XEN_TREES)
def test_comparison_patches_apply_with_fuzz_0(name):
    tree = tree_path(name)
    assert patchsets.compare_patch("patch2008", tree).name == \
        "patch2008-port-%s.diff" % name
    assert patchsets.compare_patch("xen41", tree).name == "xen41-order-3.1.0.diff"


@pytest.mark.timeout(120)
def test_verify_on_a_tree_already_patched_by_the_series(capsys, tmp_path):
    """Not mistaken for the 2008 patch (the series' testDeviceComplete also
    takes io_done): verify says the series is there already."""
    from fastmig_tools.patchtool import engine
    tree = writable_copy(tree_path("3.1.0"), tmp_path / "tree")
    assert engine.apply(tree, patchsets.REPO_PATCHES).status == engine.EXIT_OK
    status, doc, _err = verify(capsys, tree)
    assert status == 1
    assert "the series is already applied to this tree" in doc["reason"]
    assert "2008" not in doc["reason"]


@pytest.mark.timeout(60)
def test_the_harness_builds_an_edited_tree_anew(tmp_path):
    """Builds are cached by the tree's content: an edited tree must get a
    build of its own, an unchanged one the same."""
    from fastmig_tools.xendharness.build import _key
    tree = writable_copy(tree_path("3.1.0"), tmp_path / "3.1.0")
    first = _key(tree, [])
    assert _key(tree, []) == first
    rel = "tools/python/xen/xend/XendDomain.py"
    (tree / rel).write_text((tree / rel).read_text() + "# edited\n")
    assert _key(tree, []) != first
    # The same content elsewhere is the same build.
    (tmp_path / "elsewhere").mkdir()
    other = writable_copy(tree, tmp_path / "elsewhere" / "3.1.0")
    assert _key(other, []) == _key(tree, [])
    patch = tmp_path / "x.patch"
    patch.write_text("--- a/x\n+++ b/x\n")
    assert _key(tree, [patch]) != _key(tree, [])
