"""The patch lists the harness hosts run: the series, and the comparisons.

The harness copies only a tree's ``tools/python`` and ``tools/examples``,
so it is handed copies of the series' patches holding only the files under
``tools/`` (0001 also patches ``docs/man``: the full series is checked on
a scratch copy of the whole tree first, by the patch engine).  The copies
are written into a folder the caller owns; the harness caches its builds
by the patches' bytes, so the folder's name does not matter.
"""
from __future__ import annotations

import re
from pathlib import Path

from fastmig_tools.patchtool import engine
from fastmig_tools.patchtool.series import PACKAGE_DEST

__all__ = ["REPO_PATCHES", "COMPARE_DIR", "series_names", "harness_series", "harness_tree",
           "compare_patch", "VARIANTS", "variant_patches", "UnknownTree"]

_REPO = Path(__file__).resolve().parent.parent.parent
REPO_PATCHES = _REPO / "patches"
COMPARE_DIR = REPO_PATCHES / "compare"

# rehearse --xend's columns: what each host runs, in display order.
VARIANTS = ("stock", "fastmig", "patch2008", "xen41")

class UnknownTree(Exception):
    """No comparison patch applies to this tree (the message says which)."""


def series_names(patches_dir: Path = REPO_PATCHES) -> list[str]:
    return [p.name for p in engine.load_series(Path(patches_dir))]


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(path after b/, section text)]): a section runs from a
    file's "--- " header line to the next one."""
    parts = re.split(r"(?m)^(?=--- )", text)
    preamble, sections = parts[0], []
    for part in parts[1:]:
        m = re.match(r"--- [^\n]*\n\+\+\+ (?:b/)?(\S+)", part)
        if m:
            sections.append((m.group(1), part))
        elif sections:      # a removed line that began "-- ": same file
            sections[-1] = (sections[-1][0], sections[-1][1] + part)
        else:
            preamble += part
    return preamble, sections


def filtered_patch(text: str, keep) -> str:
    """The patch with only the files ``keep(path)`` accepts ("" if none)."""
    preamble, sections = _sections(text)
    kept = [body for path, body in sections if keep(path)]
    return preamble + "".join(kept) if kept else ""


def harness_series(dest: Path, patches_dir: Path = REPO_PATCHES,
                   without_package: bool = False) -> list[Path]:
    """Copies of the series' patches for the harness, in order, under
    ``dest``: only files under tools/; ``without_package`` also leaves out
    the fastmig package's files (the hunks then run without it)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []

    def keep(path: str) -> bool:
        if not path.startswith("tools/"):
            return False
        return not (without_package and path.startswith(PACKAGE_DEST + "/"))

    for name in series_names(patches_dir):
        text = filtered_patch((Path(patches_dir) / name).read_text(encoding="utf-8"), keep)
        if text:
            path = dest / (("nopkg-" if without_package else "") + name)
            path.write_text(text, encoding="utf-8")
            out.append(path)
    return out


def _applies(tree: Path, patch: Path) -> bool:
    import subprocess
    r = subprocess.run(["patch", "-p1", "--fuzz=0", "--dry-run", "--batch",
                        "-s", "-d", str(tree), "-i", str(patch)],
                       capture_output=True, text=True, timeout=60)
    return r.returncode == 0


def compare_patch(kind: str, tree: Path) -> Path:
    """The comparison patch of ``kind`` (patch2008, xen41) that applies to
    ``tree`` with fuzz 0: its port for the tree's name first, then the
    others in patches/compare/."""
    tree = Path(tree)
    prefix = {"patch2008": "patch2008-port-", "xen41": "xen41-order-"}[kind]
    candidates = sorted(COMPARE_DIR.glob(prefix + "*.diff"),
                        key=lambda p: (p.stem != prefix + tree.name, p.name))
    for patch in candidates:
        if _applies(tree, patch):
            return patch
    raise UnknownTree("no %s patch in %s applies to %s with fuzz 0 (tried %s): "
                      "port one to this tree" % (kind, COMPARE_DIR, tree,
                                                 ", ".join(p.name for p in candidates)))


def variant_patches(variant: str, tree: Path, dest: Path) -> list[Path]:
    """The patch list a host runs for a rehearse --xend column."""
    if variant == "stock":
        return []
    if variant == "fastmig":
        return harness_series(dest)
    if variant in ("patch2008", "xen41"):
        return [compare_patch(variant, tree)]
    raise ValueError("unknown variant %r (one of %s)" % (variant, ", ".join(VARIANTS)))


def harness_tree(tree: Path) -> Path:
    """What to hand the harness for ``tree``: the tree itself (the
    harness caches its builds by the tree's content, so an edited tree is
    built anew)."""
    return Path(tree).resolve()
