#!/usr/bin/env python3
"""README.md's figures, from fresh runs: regenerate them, or check them.

Each figure README shows sits between two markers that this script owns:

    <!-- figures:NAME -->
    ... (written by this script: do not edit by hand)
    <!-- /figures:NAME -->

Sections (``--list`` prints them):

* ``rehearse`` (cheap, about ten seconds): the default rehearsal's table;
* ``blackout-plot`` (expensive): ``benchmarks/blackout.png``, the blackout
  against memory;
* ``matrix`` (expensive, about five minutes): the fault matrix, identical
  consecutive rows folded;
* ``bench-policies``, ``bench-drain``, ``bench-early-release``
  (expensive, about 15, 2 and 10 minutes): the benchmarks' tables;
* ``xend-verify``, ``xend-rehearse`` (expensive, about 1.5 and 1 minute):
  ``verify`` and ``rehearse --xend`` on ../shared/xen/3.1.0's real xend.

    python3 benchmarks/readme_figures.py            # regenerate the cheap sections
    python3 benchmarks/readme_figures.py --all      # every section (about an hour)
    python3 benchmarks/readme_figures.py --section matrix
    python3 benchmarks/readme_figures.py --check    # exit 1 if README disagrees

``--check`` re-runs the cheap sections and compares: exactly what is
deterministic (the scenario line, every policy's drain, disk and guest
columns, the stale blocks named under the table), the xs ops counts within
3 (how the drain wait's watch events batch varies a little), the sign of
each "after write" (released before or after the last write), and, for
timings, that each is within ``--tolerance-ms``/``--tolerance`` (default:
50 ms or 50 %, whichever is more: enough for a loaded shared machine,
not for a figure from another scenario or another core) of README's.  The expensive sections are only checked to be present.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

__all__ = ["SECTIONS", "read_sections", "replace_section", "check_rehearse",
           "fold_matrix", "main"]

INDENT = "    "


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    cheap: bool
    argv: tuple          # what runs, from the repository root
    shown: str           # the command as README shows it
    about: str           # how long it takes
    # "block": the command and its output as an indented block;
    # "plot": the sentence and the image (the run writes the file).
    kind: str = "block"


def _cli(*argv):
    return (sys.executable, "-m", "fastmig_tools.cli") + argv


SECTIONS = {s.name: s for s in (
    Section("rehearse", True, _cli("rehearse", "--quiet"),
            "xend-fastmig rehearse", "about ten seconds"),
    Section("blackout-plot", False,
            _cli("rehearse", "--sweep", "memory=1G,2G,4G,8G", "--plot",
                 "benchmarks/blackout.png", "--quiet"),
            "xend-fastmig rehearse --sweep memory=1G,2G,4G,8G --plot "
            "benchmarks/blackout.png", "about a minute", kind="plot"),
    Section("matrix", False, _cli("rehearse", "--matrix", "--quiet"),
            "xend-fastmig rehearse --matrix --quiet", "about 7 minutes"),
    Section("bench-policies", False,
            (sys.executable, "benchmarks/bench_policies.py", "--quiet"),
            "python3 benchmarks/bench_policies.py", "about 15 minutes"),
    Section("bench-xend", False,
            (sys.executable, "benchmarks/bench_xend.py", "--quiet"),
            "python3 benchmarks/bench_xend.py", "about 3 minutes"),
    Section("bench-drain", False,
            (sys.executable, "benchmarks/bench_drain.py", "--quiet"),
            "python3 benchmarks/bench_drain.py", "about 2 minutes"),
    Section("bench-early-release", False,
            (sys.executable, "benchmarks/bench_early_release.py",
             "--quiet"),
            "python3 benchmarks/bench_early_release.py", "about 10 minutes"),
    Section("bench-early-release-xend", False,
            (sys.executable, "benchmarks/bench_early_release.py",
             "--harness", "xend", "--quiet"),
            "python3 benchmarks/bench_early_release.py --harness xend",
            "about 15 minutes"),
    # The tree's real xend on the harness (fastmig_tools/xendharness).
    Section("xend-verify", False,
            _cli("verify", "--tree", "../shared/xen/3.1.0", "--quiet"),
            "xend-fastmig verify --tree ../shared/xen/3.1.0",
            "about a minute and a half"),
    Section("xend-rehearse", False,
            _cli("rehearse", "--xend", "../shared/xen/3.1.0", "--sweep",
                 "memory=1G,4G", "--slow-write", "1000", "--quiet"),
            "xend-fastmig rehearse --xend ../shared/xen/3.1.0 --sweep "
            "memory=1G,4G --slow-write 1000", "about a minute"),
)}


class FiguresError(Exception):
    """README's markers are missing or broken, or a run failed."""


# ---------------------------------------------------------------------------
# README's sections
# ---------------------------------------------------------------------------

def _markers(name):
    return "<!-- figures:%s -->" % name, "<!-- /figures:%s -->" % name


def read_sections(text: str) -> dict:
    """``{name: body}`` for every section of ``SECTIONS`` in ``text``;
    FiguresError when one is missing, doubled or unclosed."""
    found = {}
    for name in SECTIONS:
        start, end = _markers(name)
        if text.count(start) != 1 or text.count(end) != 1:
            raise FiguresError("README.md must hold %s ... %s exactly once"
                               % (start, end))
        head, _, rest = text.partition(start)
        body, _, _tail = rest.partition(end)
        if end in head:
            raise FiguresError("%s comes before %s" % (end, start))
        found[name] = body.strip("\n")
    return found


def replace_section(text: str, name: str, body: str) -> str:
    start, end = _markers(name)
    head, _, rest = text.partition(start)
    _old, _, tail = rest.partition(end)
    # Blank lines around the body: the markers are HTML blocks of their
    # own and never glue onto an indented code block.
    return "%s%s\n\n%s\n\n%s%s" % (head, start, body.strip("\n"), end,
                                     tail)


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------

def run_section(section: Section, timeout: float = 3600.0) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    proc = subprocess.run(list(section.argv), cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise FiguresError("%s failed (exit %d): %s" % (
            section.shown, proc.returncode, proc.stderr.strip()[-2000:]))
    return proc.stdout


def render(section: Section, output: str) -> str:
    """README's body of ``section`` for a run's ``output``."""
    if section.kind == "plot":
        return ("`%s` drew:\n\n![blackout against memory]"
                "(benchmarks/blackout.png)" % section.shown)
    if section.name == "matrix":
        output = fold_matrix(output)
    lines = [line for line in output.rstrip("\n").splitlines()
             if not line.startswith("plot written to")]
    if section.name == "rehearse":
        head = "%s$ %s          # %s" % (INDENT, section.shown, section.about)
        return "\n".join([head] + [INDENT + line if line else ""
                                   for line in lines])
    head = "%s%s      # %s" % (INDENT, section.shown, section.about)
    return "\n".join([head, ""] + [(INDENT + line).rstrip()
                                   for line in lines])


def fold_matrix(output: str) -> str:
    """Fold runs of three or more consecutive matrix rows whose cells are
    identical into one ``first .. last (N rows)`` row, and drop the
    violation list (the command prints it; README says so)."""
    lines = output.rstrip("\n").splitlines()
    try:
        top = next(i for i, line in enumerate(lines)
                   if line.startswith("fault "))
        rule = top + 1
        bottom = next(i for i in range(rule + 1, len(lines))
                      if lines[i].startswith("---"))
    except StopIteration:
        raise FiguresError("the matrix output has no table") from None
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[rule + 1:bottom]]
    header = re.split(r"\s{2,}", lines[top].strip())
    folded = []
    index = 0
    while index < len(rows):
        end = index
        while end + 1 < len(rows) and rows[end + 1][1:] == rows[index][1:]:
            end += 1
        if end - index >= 2:
            folded.append(["%s .. %s (%d rows)" % (rows[index][0],
                                                   rows[end][0],
                                                   end - index + 1)]
                          + rows[index][1:])
        else:
            folded.extend(rows[index:end + 1])
        index = end + 1
    total = re.split(r"\s{2,}", lines[bottom + 1].strip())
    table = [header] + folded + [total]
    widths = [max(len(row[i]) for row in table if i < len(row))
              for i in range(len(header))]

    def show(row):
        return "  ".join(cell.ljust(widths[i])
                         for i, cell in enumerate(row)).rstrip()
    rule_line = "  ".join("-" * w for w in widths)
    out = [show(header), rule_line] + [show(r) for r in folded]
    out += [rule_line, show(total), ""]
    # The per-policy summary lines at the end.
    out += [line for line in lines if re.match(r"^\S+: \d+ runs, ", line)]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# checking the rehearsal's table
# ---------------------------------------------------------------------------

_TIME = re.compile(r"^([+-]?\d+(?:\.\d+)?) (ms|s)$")
_EXACT = ("policy", "drain confirmed", "disk", "guest")
# The drain wait re-reads the backends on each wake-up, and how the watch
# events batch depends on scheduling: the same run makes 72 requests
# mostly, now and then 73 or 74.  A stale figure is further off than that.
XS_OPS_SLACK = 3
_TIMED = ("blackout", "gate", "after write")


def _table(body: str):
    """(scenario line, header cells, {policy: {column: cell}}, notes) of
    the rehearsal's table in ``body`` (README's block or fresh output)."""
    lines = [line[len(INDENT):] if line.startswith(INDENT) else line
             for line in body.splitlines()]
    lines = [line for line in lines if line and not line.startswith("$ ")]
    try:
        header_at = next(i for i, line in enumerate(lines)
                         if line.startswith("policy "))
    except StopIteration:
        raise FiguresError("no rehearsal table found") from None
    header = re.split(r"\s{2,}", lines[header_at].strip())
    rows = {}
    notes = []
    for line in lines[header_at + 2:]:
        if line.startswith("  "):
            notes.append(line.strip())
            continue
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = dict(zip(header, cells))
    return lines[header_at - 1], header, rows, notes


def _ms(cell: str):
    match = _TIME.match(cell)
    if match is None:
        return None
    value = float(match.group(1))
    return value * 1000.0 if match.group(2) == "s" else value


def _mask_times(note: str) -> str:
    return re.sub(r"[+-]?\d+(?:\.\d+)? ms", "<t>", note)


def check_rehearse(readme_body: str, fresh_output: str,
                   abs_ms: float = 50.0, rel: float = 0.50) -> list[str]:
    """What README's rehearsal block gets wrong against a fresh run (an
    empty list: it agrees)."""
    problems = []
    old_scene, old_header, old_rows, old_notes = _table(readme_body)
    new_scene, new_header, new_rows, new_notes = _table(fresh_output)
    if old_scene != new_scene:
        problems.append("scenario line: README %r, fresh run %r"
                        % (old_scene, new_scene))
    if old_header != new_header:
        problems.append("columns: README %s, fresh run %s"
                        % (old_header, new_header))
    if list(old_rows) != list(new_rows):
        problems.append("policies: README %s, fresh run %s"
                        % (list(old_rows), list(new_rows)))
    for policy, new in new_rows.items():
        old = old_rows.get(policy)
        if old is None:
            continue
        for column in _EXACT:
            if column in new and old.get(column) != new[column]:
                problems.append("%s %s: README %r, fresh run %r"
                                % (policy, column, old.get(column),
                                   new[column]))
        if "xs ops" in new:
            try:
                was, now = int(old.get("xs ops", "")), int(new["xs ops"])
            except ValueError:
                was, now = old.get("xs ops"), new["xs ops"]
            if not isinstance(was, int) or abs(was - now) > XS_OPS_SLACK:
                problems.append("%s xs ops: README %r, fresh run %r (more "
                                "than %d apart)" % (policy, old.get("xs ops"),
                                                    new["xs ops"],
                                                    XS_OPS_SLACK))
        for column in _TIMED:
            if column not in new:
                continue
            was, now = _ms(old.get(column, "")), _ms(new[column])
            if (was is None) != (now is None):
                problems.append("%s %s: README %r, fresh run %r"
                                % (policy, column, old.get(column),
                                   new[column]))
            elif was is not None and column == "after write" and \
                    (was < 0) != (now < 0):
                # Released before or after the last write: never noise.
                problems.append("%s %s: README %s, fresh run %s (the "
                                "other side of the last write)"
                                % (policy, column, old[column], new[column]))
            elif was is not None and \
                    abs(was - now) > max(abs_ms, rel * abs(now)):
                problems.append("%s %s: README %s, fresh run %s (more than "
                                "%g ms or %d%% apart)"
                                % (policy, column, old[column], new[column],
                                   abs_ms, rel * 100))
    if [_mask_times(n) for n in old_notes] != \
            [_mask_times(n) for n in new_notes]:
        problems.append("lines under the table: README %s, fresh run %s"
                        % (old_notes, new_notes))
    return problems


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------

def _chosen(args):
    if args.section:
        unknown = [n for n in args.section if n not in SECTIONS]
        if unknown:
            raise FiguresError("unknown section %s (one of %s)"
                               % (", ".join(unknown), ", ".join(SECTIONS)))
        return [SECTIONS[n] for n in args.section]
    return [s for s in SECTIONS.values() if s.cheap or args.all]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="readme_figures.py", description=__doc__.split("\n\n")[0],
        epilog="sections: " + ", ".join(
            "%s (%s)" % (s.name, "cheap" if s.cheap else
                         "expensive: --all or --section")
            for s in SECTIONS.values()))
    parser.add_argument("--check", action="store_true",
                        help="re-run the cheap sections and exit 1 if "
                        "README disagrees (writes nothing)")
    parser.add_argument("--all", action="store_true",
                        help="also the expensive sections (about an hour)")
    parser.add_argument("--section", action="append", metavar="NAME",
                        help="only this section (may be repeated)")
    parser.add_argument("--readme", default=str(README), metavar="FILE",
                        help="the README to regenerate or check")
    parser.add_argument("--tolerance-ms", type=float, default=50.0,
                        help="--check: timings may differ by this many ms "
                        "(default 50)...")
    parser.add_argument("--tolerance", type=float, default=0.50,
                        help="...or by this fraction of the fresh one, "
                        "whichever is more (default 0.5: the machine is "
                        "shared and loaded)")
    parser.add_argument("--list", action="store_true",
                        help="list the sections and exit")
    args = parser.parse_args(argv)
    if args.list:
        for s in SECTIONS.values():
            print("%-15s %-9s %-18s %s" % (s.name,
                                           "cheap" if s.cheap else "expensive",
                                           s.about, s.shown))
        return 0
    path = Path(args.readme)
    try:
        text = path.read_text()
        sections = read_sections(text)
        chosen = _chosen(args)
        if args.check:
            return _check(args, sections, chosen)
        for section in chosen:
            sys.stderr.write("readme_figures: running %s (%s)\n"
                             % (section.shown, section.about))
            text = replace_section(text, section.name,
                                   render(section, run_section(section)))
        path.write_text(text)
    except FiguresError as exc:
        sys.stderr.write("readme_figures: %s\n" % exc)
        return 2
    sys.stderr.write("readme_figures: %s: regenerated %s\n"
                     % (path.name, ", ".join(s.name for s in chosen)))
    return 0


def _check(args, sections, chosen) -> int:
    problems = []
    for section in chosen:
        if not section.cheap:
            sys.stderr.write("readme_figures: %s: expensive, present but "
                             "not re-run by --check\n" % section.name)
            continue
        fresh = run_section(section)
        if section.name == "rehearse":
            found = check_rehearse(sections[section.name], fresh,
                                   args.tolerance_ms, args.tolerance)
        else:
            found = [] if sections[section.name] == render(
                section, fresh) else ["differs from a fresh run"]
        problems.extend("%s: %s" % (section.name, p) for p in found)
    for problem in problems:
        print("README disagrees: " + problem)
    if problems:
        print("regenerate with: python3 benchmarks/readme_figures.py")
        return 1
    print("README's figures agree with a fresh run (%s)"
          % ", ".join(s.name for s in chosen if s.cheap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
