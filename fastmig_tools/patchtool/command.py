"""``xend-fastmig patches ...``: check, apply, revert, export.

Mounted by ``fastmig_tools.cli`` through ``add_parser(subparsers)``; the
parsed arguments come back to ``run(args)``, which returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import engine, export

__all__ = ["add_parser", "run"]

_STATUS_HELP = """exit status:
  0  done (check: the series is not applied and applies with fuzz 0)
  1  unexpected error (e.g. GNU patch missing)
  3  not a Xen tree with xend (nothing changed)
  4  the series is already applied (apply refuses; check reports it)
  5  the series is partly applied (nothing changed)
  6  a hunk does not match the tree (nothing changed)
  7  the series is not applied (revert refuses)
  8  the result does not compile on Python 2 (nothing changed)
  9  quilt manages the series in this tree: use quilt (nothing changed)
 10  export --check: patches/ differ from a fresh export
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``patches`` and its subcommands to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "patches", help="check, apply, revert or export the Xen 3.1 patch series",
        description="The quilt series in patches/ that carries xend-fastmig "
                    "into a Xen 3.1 tree.",
        epilog=_STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="patches_command", metavar="COMMAND")
    sub.required = True

    def tree_command(name: str, helptext: str, changes: bool) -> None:
        p = sub.add_parser(name, help=helptext, description=helptext, epilog=_STATUS_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--tree", required=True, type=Path, metavar="DIR",
                       help="top of a Xen source tree (the directory holding tools/)")
        p.add_argument("--patches", type=Path, metavar="DIR",
                       help="a series directory (default: this checkout's patches/, "
                            "else the series generated from the installed package)")
        if changes:
            p.add_argument("--python2", metavar="PATH",
                           help="the Python 2 to byte-compile with (default: "
                                "python2.7, python2, then pyenv's 2.7.*)")
            p.add_argument("--no-compile", action="store_true",
                           help="do not byte-compile the result")

    tree_command("check", "say whether DIR is a Xen 3.1 tree and how much of the "
                 "series it holds; name any hunk that would fail, and why", False)
    tree_command("apply", "apply the whole series to DIR, or change nothing", True)
    tree_command("revert", "revert the whole series from DIR, or change nothing", True)

    p = sub.add_parser("export", help="regenerate patches/ from xend_fastmig/ and "
                                      "fastmig_tools/patchtool/series.py")
    p.add_argument("--dest", type=Path, metavar="DIR",
                   help="where to write (default: this checkout's patches/)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 10 if the files differ from a fresh export")
    parser.set_defaults(func=run)
    return parser


def _default_patches() -> Path | None:
    candidate = export.patches_dir()
    return candidate if (candidate / export.SERIES_FILE).is_file() else None


def _say(lines: list[str], stream=None) -> None:
    stream = stream or sys.stdout
    for line in lines:
        print(line, file=stream)


def run(args: argparse.Namespace) -> int:
    """Run one ``patches`` subcommand; returns the exit status."""
    command = args.patches_command
    try:
        if command == "export":
            return _export(args)
        patches_dir = args.patches if args.patches is not None else _default_patches()
        if command == "check":
            report = engine.inspect(args.tree, engine.load_series(patches_dir))
            _say(report.lines())
            return report.status
        action = engine.apply if command == "apply" else engine.revert
        outcome = action(args.tree, patches_dir, python2=args.python2,
                         compile_=not args.no_compile)
        _say(outcome.lines, sys.stdout if outcome.status == engine.EXIT_OK else sys.stderr)
        return outcome.status
    except (OSError, RuntimeError, ValueError) as exc:
        print("xend-fastmig patches %s: %s" % (command, exc), file=sys.stderr)
        return engine.EXIT_ERROR


def _export(args: argparse.Namespace) -> int:
    dest = args.dest or export.patches_dir()
    if args.check:
        problems = export.drift(dest)
        if problems:
            _say(problems + ["run `xend-fastmig patches export` and commit the result"],
                 sys.stderr)
            return engine.EXIT_DRIFT
        print("patches/ match a fresh export")
        return engine.EXIT_OK
    changed = export.write(dest)
    _say(["wrote %s" % (dest / name) for name in changed] or
         ["%s is up to date" % dest])
    return engine.EXIT_OK
