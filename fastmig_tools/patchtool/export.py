"""Generate the series' package patch from the ``xend_fastmig`` package.

The export writes one file, ``series.PACKAGE_PATCH``: every
``xend_fastmig/*.py`` added as ``tools/python/xen/xend/fastmig/<name>.py``
(imports rewritten by ``rewrite``), and the package's line in setup.py.  The
other patches of ``patches/series`` are hand-written; the export never
writes them.  The output depends only on its inputs (no dates, no paths of
this machine), and it is what ``quilt refresh -p ab --no-timestamps
--no-index`` would write (a/ b/ names, no timestamps, no Index lines, three
lines of context), so a refresh leaves it byte for byte as it is.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from . import series
from .rewrite import rewrite_imports
from .unidiff import Hunk, new_file_hunk, render_file_patch

__all__ = ["repo_root", "package_dir", "patches_dir", "carried_files", "generate",
           "write", "drift", "tree_drift", "dep3_header", "SERIES_FILE"]

SERIES_FILE = "series"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def package_dir() -> Path:
    """The ``xend_fastmig`` package the series carries.

    The source checkout's copy when there is one, else the installed one."""
    local = repo_root() / series.PACKAGE
    if (local / "__init__.py").is_file():
        return local
    import importlib.util
    spec = importlib.util.find_spec(series.PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("cannot find the %s package" % series.PACKAGE)
    return Path(list(spec.submodule_search_locations)[0])


def patches_dir() -> Path:
    return repo_root() / "patches"


def _package_files(pkg: Path) -> list[Path]:
    nested = sorted(p for p in pkg.glob("*/**/*.py") if "__pycache__" not in p.parts)
    if nested:
        # The patch carries a flat package; a subpackage would silently be
        # left out of the tree.
        raise ValueError("%s has subpackages (%s); the series carries only a "
                         "flat package" % (pkg, nested[0].relative_to(pkg)))
    # Byte order, as quilt (LC_ALL=C) lists them.
    return sorted((p for p in pkg.glob("*.py") if p.is_file()), key=lambda p: p.name.encode())


def carried_files(pkg: Path | None = None) -> dict[str, str]:
    """What the tree gets for each module of the package: tree path -> text."""
    pkg = pkg or package_dir()
    out = {}
    for f in _package_files(pkg):
        text = f.read_bytes().decode("utf-8")
        if "\r" in text:
            raise ValueError("%s has CR line ends; patch would mangle them" % f)
        if not text:
            raise ValueError("%s is empty: a plain unified diff cannot create "
                             "an empty file; give it a docstring" % f)
        out["%s/%s" % (series.PACKAGE_DEST, f.name)] = rewrite_imports(text, str(f))
    return out


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=72, break_on_hyphens=False)


def dep3_header(subject: str, paragraphs: tuple[str, ...]) -> str:
    """A patch header as the series' patches have it: DEP-3 fields, a blank
    line, the long description, Signed-off-by, then ``---``."""
    parts = [
        "Description: %s" % subject,
        "Author: %s" % series.AUTHOR,
        "Origin: %s" % series.ORIGIN,
        "Forwarded: %s" % series.FORWARDED,
        "Last-Update: %s" % series.LAST_UPDATE,
        "",
    ]
    for para in paragraphs:
        parts += [_wrap(para), ""]
    parts += ["Signed-off-by: %s" % series.AUTHOR, "---"]
    return "\n".join(parts) + "\n"


def _setup_hunk() -> Hunk:
    lines = [" " + ln for ln in series.SETUP_CONTEXT_BEFORE]
    lines += ["+" + series.SETUP_ADDED]
    lines += [" " + ln for ln in series.SETUP_CONTEXT_AFTER]
    return Hunk(series.SETUP_LINE, series.SETUP_LINE, lines)


def _package_patch(pkg: Path) -> str:
    body = [render_file_patch(series.SETUP_PY, [_setup_hunk()])]
    for dest, text in carried_files(pkg).items():
        body.append(render_file_patch(dest, [new_file_hunk(text)], creates=True))
    return dep3_header(series.PACKAGE_SUBJECT, series.PACKAGE_DESCRIPTION) + "".join(body)


def generate(pkg: Path | None = None) -> dict[str, str]:
    """The files of ``patches/`` the export owns: name -> text."""
    return {series.PACKAGE_PATCH: _package_patch(pkg or package_dir())}


def write(dest: Path | None = None, pkg: Path | None = None) -> list[str]:
    """Write the generated patch into ``dest``; touches no other file.
    Returns the names it changed."""
    dest = dest or patches_dir()
    dest.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in generate(pkg).items():
        path = dest / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_name("." + name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            changed.append(name)
    return changed


def _series_names(dest: Path) -> list[str] | None:
    path = dest / SERIES_FILE
    if not path.is_file():
        return None
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


def drift(dest: Path | None = None, pkg: Path | None = None) -> list[str]:
    """What differs between ``dest`` and a fresh export (empty: no drift)."""
    dest = dest or patches_dir()
    problems = []
    for name, text in generate(pkg).items():
        path = dest / name
        if not path.exists():
            problems.append("%s is missing" % name)
        elif path.read_text(encoding="utf-8") != text:
            problems.append("%s differs from a fresh export" % name)
    names = _series_names(dest)
    if names is None:
        problems.append("%s has no %s file" % (dest, SERIES_FILE))
    elif series.PACKAGE_PATCH not in names:
        problems.append("%s does not list %s" % (SERIES_FILE, series.PACKAGE_PATCH))
    return problems


def tree_drift(tree: Path, pkg: Path | None = None) -> list[str]:
    """How a patched tree's ``xen/xend/fastmig`` differs from what this
    release's package becomes there (empty: the same)."""
    wanted = carried_files(pkg)
    where = Path(tree) / series.PACKAGE_DEST
    have = {"%s/%s" % (series.PACKAGE_DEST, p.name) for p in where.glob("*.py")}
    problems = ["%s is missing from the tree" % p for p in sorted(set(wanted) - have)]
    problems += ["%s is in the tree but not in %s/" % (p, series.PACKAGE)
                 for p in sorted(have - set(wanted))]
    for rel in sorted(set(wanted) & have):
        if (Path(tree) / rel).read_bytes() != wanted[rel].encode("utf-8"):
            problems.append("%s differs from %s/%s with its imports rewritten"
                            % (rel, series.PACKAGE, rel.rsplit("/", 1)[1]))
    return problems
