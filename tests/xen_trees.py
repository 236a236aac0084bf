"""The real Xen trees the patch tests run against, and scratch copies of them.

Two unmodified extracts of xen-project/xen sit beside the repository, in
``../shared/xen`` (``$XEN_TREES`` overrides the folder): ``3.1.0`` (tag
3.1.0-branched, the tree the series is made against) and
``unstable-2007-06-08`` (a month later, with fixes a maintained 3.1 carries).
They are read-only: every test works on a copy.  ``$XEN31_TREE`` may name
one more tree to test against.  A missing default tree fails the tests that
need it; it never skips them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES_DIR = Path(os.environ.get("XEN_TREES") or ROOT.parent / "shared" / "xen")
# The tree the series' hunks are made against (their line numbers, what a
# quilt refresh must leave byte for byte).
REFERENCE = "3.1.0"
DEFAULT_TREES = (REFERENCE, "unstable-2007-06-08")


def tree_ids() -> list[str]:
    ids = list(DEFAULT_TREES)
    if os.environ.get("XEN31_TREE"):
        ids.append("XEN31_TREE")
    return ids


def source(tree_id: str) -> Path:
    path = Path(os.environ["XEN31_TREE"]) if tree_id == "XEN31_TREE" else TREES_DIR / tree_id
    if not (path / "tools" / "python" / "xen" / "xend").is_dir():
        pytest.fail("Xen tree %s not found at %s (the shared trees live in ../shared/xen; "
                    "set XEN_TREES to their folder)" % (tree_id, path), pytrace=False)
    return path


def copy_tree(tree_id: str, dest: Path) -> Path:
    """A writable copy of the tree's tools/ and docs/ (all the series touches)."""
    src = source(tree_id)
    dest.mkdir(parents=True)
    for part in ("tools", "docs", "xen/Makefile"):
        if (src / part).is_dir():
            shutil.copytree(src / part, dest / part, symlinks=True)
        elif (src / part).is_file():
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dest / part)
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


def snapshot(tree: Path) -> dict[str, str]:
    """Every file under ``tree`` (path -> sha256 and mode), every directory."""
    out = {}
    for path in sorted(tree.rglob("*")):
        rel = str(path.relative_to(tree))
        if path.is_file():
            out[rel] = "%s %o" % (hashlib.sha256(path.read_bytes()).hexdigest(),
                                  stat.S_IMODE(path.stat().st_mode))
        else:
            out[rel] = "dir"
    return out
