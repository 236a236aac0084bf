"""Plain unified diffs: the subset GNU patch 2.5 (CentOS 5) and quilt read.

Writing is for the export; reading is for the checks (a hunk's preimage and
postimage).  No git extensions: old ``patch`` versions ignore them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Hunk", "FilePatch", "Patch", "parse_patch", "render_file_patch",
           "new_file_hunk", "DEV_NULL"]

DEV_NULL = "/dev/null"
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_NO_NEWLINE = "\\ No newline at end of file"


@dataclass
class Hunk:
    """One hunk; ``lines`` keep their one-character prefix (' ', '-', '+')."""

    old_start: int
    new_start: int
    lines: list[str]
    # The last preimage/postimage line has no newline (a file's last line).
    old_no_newline: bool = False
    new_no_newline: bool = False

    @property
    def old_lines(self) -> list[str]:
        return [ln[1:] for ln in self.lines if ln[0] in " -"]

    @property
    def new_lines(self) -> list[str]:
        return [ln[1:] for ln in self.lines if ln[0] in " +"]

    @property
    def added(self) -> list[str]:
        return [ln[1:] for ln in self.lines if ln[0] == "+"]

    @property
    def removed(self) -> list[str]:
        return [ln[1:] for ln in self.lines if ln[0] == "-"]

    def header(self) -> str:
        return "@@ -%s +%s @@" % (_range(self.old_start, len(self.old_lines)),
                                  _range(self.new_start, len(self.new_lines)))

    def render(self) -> str:
        out = [self.header()]
        last_old = last_new = None
        for i, ln in enumerate(self.lines):
            if ln[0] in " -":
                last_old = i
            if ln[0] in " +":
                last_new = i
        for i, ln in enumerate(self.lines):
            out.append(ln)
            if (i == last_old and self.old_no_newline) or \
               (i == last_new and self.new_no_newline):
                out.append(_NO_NEWLINE)
        return "\n".join(out) + "\n"


def _range(start: int, count: int) -> str:
    if count == 1:
        return "%d" % start
    return "%d,%d" % (start, count)


@dataclass
class FilePatch:
    old_path: str   # "a/..." or /dev/null
    new_path: str   # "b/..." or /dev/null
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The path inside the tree (what ``patch -p1`` patches)."""
        name = self.new_path if self.new_path != DEV_NULL else self.old_path
        return name.split("/", 1)[1]

    @property
    def creates(self) -> bool:
        return self.old_path == DEV_NULL

    def render(self) -> str:
        return ("--- %s\n+++ %s\n" % (self.old_path, self.new_path)
                + "".join(h.render() for h in self.hunks))


@dataclass
class Patch:
    name: str
    header: str
    files: list[FilePatch]


def render_file_patch(path: str, hunks: list[Hunk], creates: bool = False) -> str:
    old = DEV_NULL if creates else "a/" + path
    return FilePatch(old, "b/" + path, hunks).render()


def new_file_hunk(text: str) -> Hunk:
    """The hunk that creates a file holding ``text`` (which must not be empty:
    a plain unified diff cannot create an empty file)."""
    if not text:
        raise ValueError("a plain unified diff cannot create an empty file")
    lines = text.split("\n")
    no_newline = not text.endswith("\n")
    if not no_newline:
        lines = lines[:-1]
    return Hunk(0, 1, ["+" + ln for ln in lines], new_no_newline=no_newline)


def parse_patch(name: str, text: str) -> Patch:
    """Read a patch file.  Raises ValueError on a malformed hunk."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    files: list[FilePatch] = []
    header: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            fp = FilePatch(_name(ln[4:]), _name(lines[i + 1][4:]))
            files.append(fp)
            i += 2
            while i < len(lines) and lines[i].startswith("@@"):
                i = _read_hunk(lines, i, fp, name)
            continue
        if not files:
            header.append(ln)
        i += 1
    return Patch(name, "\n".join(header), files)


def _name(field_: str) -> str:
    return field_.split("\t", 1)[0].strip()


def _read_hunk(lines: list[str], i: int, fp: FilePatch, name: str) -> int:
    m = _HUNK_RE.match(lines[i])
    if not m:
        raise ValueError("%s: malformed hunk header %r" % (name, lines[i]))
    old_len = int(m.group(2)) if m.group(2) is not None else 1
    new_len = int(m.group(4)) if m.group(4) is not None else 1
    hunk = Hunk(int(m.group(1)), int(m.group(3)), [])
    i += 1
    seen_old = seen_new = 0
    while seen_old < old_len or seen_new < new_len:
        if i >= len(lines):
            raise ValueError("%s: hunk %s of %s is truncated" % (name, m.group(0), fp.path))
        ln = lines[i]
        if ln == "":
            ln = " "  # an empty context line whose space was stripped
        if ln[0] not in " -+":
            raise ValueError("%s: unexpected line %r in a hunk of %s" % (name, ln, fp.path))
        hunk.lines.append(ln)
        if ln[0] in " -":
            seen_old += 1
        if ln[0] in " +":
            seen_new += 1
        i += 1
        while i < len(lines) and lines[i] == _NO_NEWLINE:
            prev = hunk.lines[-1][0]
            if prev in " -":
                hunk.old_no_newline = True
            if prev in " +":
                hunk.new_no_newline = True
            i += 1
    fp.hunks.append(hunk)
    return i
