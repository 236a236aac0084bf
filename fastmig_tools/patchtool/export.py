"""Generate the patch series from ``series.py`` and the ``xend_fastmig`` package.

Every ``.patch`` file and ``patches/series`` are generated: the package's
files are carried byte for byte, the hooks come from ``series.py``.  The
output depends on nothing but those inputs (no dates, no paths of this
machine), so a regenerated series can be compared with the committed one.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from . import series
from .unidiff import Hunk, new_file_hunk, render_file_patch

__all__ = ["repo_root", "package_dir", "patches_dir", "generate", "write",
           "drift", "SERIES_FILE", "GENERATED_RE"]

SERIES_FILE = "series"
# Names of the files the export owns in patches/ (others, such as the
# xend-config snippet, are left alone).
GENERATED_RE = re.compile(r"^\d{4}-[A-Za-z0-9_.-]+\.patch$")


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
        # The series carries a flat package; a subpackage would silently
        # be left out of the tree.
        raise ValueError("%s has subpackages (%s); the series carries only a "
                         "flat package" % (pkg, nested[0].relative_to(pkg)))
    return sorted(p for p in pkg.glob("*.py") if p.is_file())


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=72, break_on_hyphens=False)


def _diffstat(entries: list[tuple[str, int, int]]) -> str:
    width = max(len(path) for path, _, _ in entries)
    most = max(plus + minus for _, plus, minus in entries)
    scale = min(1.0, 40.0 / most) if most else 1.0
    out = []
    for path, plus, minus in entries:
        bar = "+" * max(int(plus * scale), 1 if plus else 0)
        bar += "-" * max(int(minus * scale), 1 if minus else 0)
        out.append(" %-*s | %4d %s" % (width, path, plus + minus, bar))
    plus = sum(e[1] for e in entries)
    minus = sum(e[2] for e in entries)
    summary = " %d file%s changed, %d insertion%s(+)" % (
        len(entries), "" if len(entries) == 1 else "s", plus, "" if plus == 1 else "s")
    if minus:
        summary += ", %d deletion%s(-)" % (minus, "" if minus == 1 else "s")
    return "\n".join(out + [summary]) + "\n"


def _header(p, stat: list[tuple[str, int, int]]) -> str:
    parts = [p.subject, ""]
    for para in p.why:
        parts += [_wrap(para), ""]
    parts += [
        "Signed-off-by: %s" % series.AUTHOR,
        "",
        # DEP-3, for packagers' tools (Debian's lintian, gbp and the like).
        "Description: %s" % p.subject,
        "Author: %s" % series.AUTHOR,
        "Origin: %s" % series.ORIGIN,
        "Forwarded: %s" % series.FORWARDED,
        "Last-Update: %s" % series.LAST_UPDATE,
        "---",
    ]
    return "\n".join(parts) + "\n" + _diffstat(stat) + "\n"


def _package_patch(p: series.PackagePatch, pkg: Path) -> str:
    setup = p.setup
    hunk = Hunk(setup.line, setup.line,
                [" " + setup.before, "+" + setup.added, " " + setup.after])
    body = [render_file_patch(series.SETUP_PY, [hunk])]
    stat = [(series.SETUP_PY, 1, 0)]
    for f in _package_files(pkg):
        text = f.read_bytes().decode("utf-8")
        if "\r" in text:
            raise ValueError("%s has CR line ends; patch would mangle them" % f)
        try:
            h = new_file_hunk(text)
        except ValueError:
            raise ValueError("%s is empty: a plain unified diff cannot create "
                             "an empty file; give it a docstring" % f) from None
        dest = "%s/%s" % (series.PACKAGE_DEST, f.name)
        body.append(render_file_patch(dest, [h], creates=True))
        stat.append((dest, len(h.added), 0))
    return _header(p, stat) + "".join(body)


def _hook_hunk(hook: series.Hook, offset: int) -> Hunk:
    start = hook.line - 1 + offset  # the blank line before the def
    lines = [" "] + ["+" + ln for ln in hook.dispatcher]
    lines += ["-" + hook.anchor, "+" + hook.renamed, " " + hook.context]
    return Hunk(start, start, lines)


def _hook_patch(p: series.HookPatch, offset: int) -> str:
    hunk = _hook_hunk(p.hook, offset)
    stat = [(p.hook.path, len(hunk.added), len(hunk.removed))]
    return _header(p, stat) + render_file_patch(p.hook.path, [hunk])


def _series_text() -> str:
    lines = [
        "# xend-fastmig: the live-migration handover for Xen 3.1's xend.",
        "# Generated by `xend-fastmig patches export`; apply in this order",
        "# (quilt push -a, or patch -p1 --fuzz=0 < each file).",
    ]
    lines += [p.filename for p in series.PATCHES]
    return "\n".join(lines) + "\n"


def generate(pkg: Path | None = None) -> dict[str, str]:
    """The generated files of ``patches/``: name -> text."""
    pkg = pkg or package_dir()
    out: dict[str, str] = {}
    # Lines inserted above a hook by earlier patches of the series shift its
    # hunk header, as they would in a quilt refresh.
    inserted: dict[str, list[tuple[int, int]]] = {}
    for p in series.PATCHES:
        if isinstance(p, series.PackagePatch):
            out[p.filename] = _package_patch(p, pkg)
            continue
        hook = p.hook
        offset = sum(n for line, n in inserted.get(hook.path, []) if line < hook.line)
        out[p.filename] = _hook_patch(p, offset)
        inserted.setdefault(hook.path, []).append((hook.line, len(hook.dispatcher)))
    out[SERIES_FILE] = _series_text()
    return out


def write(dest: Path | None = None, pkg: Path | None = None) -> list[str]:
    """Write the generated files; delete generated patches no longer in the
    series.  Never touches other files of ``dest``.  Returns what changed."""
    dest = dest or patches_dir()
    dest.mkdir(parents=True, exist_ok=True)
    wanted = generate(pkg)
    changed = []
    for name, text in wanted.items():
        path = dest / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_name("." + name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            changed.append(name)
    for path in dest.iterdir():
        if GENERATED_RE.match(path.name) and path.name not in wanted:
            path.unlink()
            changed.append(path.name + " (removed)")
    return changed


def drift(dest: Path | None = None, pkg: Path | None = None) -> list[str]:
    """What differs between ``dest`` and a fresh export (empty: no drift)."""
    dest = dest or patches_dir()
    wanted = generate(pkg)
    problems = []
    for name, text in wanted.items():
        path = dest / name
        if not path.exists():
            problems.append("%s is missing" % name)
        elif path.read_text(encoding="utf-8") != text:
            problems.append("%s differs from a fresh export" % name)
    if dest.is_dir():
        for path in sorted(dest.iterdir()):
            if GENERATED_RE.match(path.name) and path.name not in wanted:
                problems.append("%s is not part of the series" % path.name)
    return problems
