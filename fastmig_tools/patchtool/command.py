"""``xend-fastmig patches ...``: check, apply, revert, export.

Mounted by ``fastmig_tools.cli`` through ``add_parser(subparsers)``; the
parsed arguments come back to ``run(args)``, which returns the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import engine, export, series
from .python2 import ENV_PYTHON2, check_python2

__all__ = ["add_parser", "run"]

_STATUS_HELP = """exit status:
  0  done (check: the series is not applied and applies with fuzz 0)
  1  unexpected error (e.g. GNU patch missing)
  2  bad usage (e.g. --tree '', a --patches folder that is not a series,
     a --python2 that is not Python 2)
  3  not a Xen tree with xend (nothing changed)
  4  the series is already applied (apply refuses; check reports it)
  5  the series is partly applied (nothing changed)
  6  a hunk does not match the tree (nothing changed)
  7  the series is not applied (revert refuses)
  8  the result does not compile on Python 2 (nothing changed)
  9  quilt manages the series in this tree: use quilt (nothing changed)
 10  export --check: patches/ differ from a fresh export
 11  a write into DIR failed; everything written was put back (nothing changed)
 12  a write failed and putting back failed too: DIR is partly changed
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
        p.add_argument("--tree", required=True, metavar="DIR",
                       help="top of a Xen source tree (the directory holding tools/)")
        p.add_argument("--patches", metavar="DIR",
                       help="the series directory: a patches/ folder of an xend-fastmig "
                            "release (default: this checkout's patches/)")
        if changes:
            p.add_argument("--python2", metavar="PATH",
                           help="the Python 2 to byte-compile with; an error if it is "
                                "not one (default: $%s, else python2.7, python2, "
                                "then pyenv's 2.7.*)" % ENV_PYTHON2)
            p.add_argument("--no-compile", action="store_true",
                           help="do not byte-compile the result")

    tree_command("check", "say whether DIR is a Xen 3.1 tree and how much of the "
                 "series it holds; name any hunk that would fail, and why", False)
    tree_command("apply", "apply the whole series to DIR, or change nothing", True)
    tree_command("revert", "revert the whole series from DIR, or change nothing", True)

    p = sub.add_parser("export", help="regenerate the series' package patch (%s) from "
                                      "xend_fastmig/" % series.PACKAGE_PATCH)
    p.add_argument("--dest", type=Path, metavar="DIR",
                   help="where to write (default: this checkout's patches/)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 10 if the package patch differs from a "
                        "fresh export or patches/series does not list it")
    parser.set_defaults(func=run)
    return parser


class UsageError(ValueError):
    """A bad argument: one line, exit status 2."""


def _tree(value: str) -> Path:
    if not value.strip():
        raise UsageError("--tree: empty path (name the top of a Xen tree, the "
                         "directory holding tools/)")
    return Path(value)


def _patches(value: str | None) -> Path:
    if value is not None and not value.strip():
        raise UsageError("--patches: empty path")
    path = Path(value) if value is not None else export.patches_dir()
    if not path.is_dir():
        if value is None:
            raise UsageError("no patches/ folder beside this installation (%s); "
                             "pass --patches DIR, the patches/ folder of the "
                             "xend-fastmig release" % path)
        raise UsageError("--patches %s: %s" % (value, "not a directory" if path.exists()
                                               else "no such directory"))
    if not (path / export.SERIES_FILE).is_file():
        raise UsageError("--patches %s: no %s file in it, so not a patch series"
                         % (value if value is not None else path, export.SERIES_FILE))
    return path


def _python2(args: argparse.Namespace) -> str | None:
    """The interpreter the user named, checked now: naming one that is not
    a Python 2 must not turn into a silently skipped compile."""
    named = args.python2 if args.python2 is not None else os.environ.get(ENV_PYTHON2)
    where = "--python2" if args.python2 is not None else "$" + ENV_PYTHON2
    if named is None:
        return None
    if not named.strip():
        raise UsageError("%s: empty path" % where)
    try:
        return check_python2(named)[0]
    except ValueError as error:
        raise UsageError("%s %s" % (where, error)) from None


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
        tree = _tree(args.tree)
        patches_dir = _patches(args.patches)
        if command == "check":
            report = engine.inspect(tree, engine.load_series(patches_dir))
            _say(report.lines())
            return report.status
        python2 = _python2(args)
        action = engine.apply if command == "apply" else engine.revert
        outcome = action(tree, patches_dir, python2=python2, compile_=not args.no_compile)
        _say(outcome.lines, sys.stdout if outcome.status == engine.EXIT_OK else sys.stderr)
        return outcome.status
    except (UsageError, engine.SeriesError) as exc:
        print("xend-fastmig patches %s: %s" % (command, exc), file=sys.stderr)
        return engine.EXIT_USAGE
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
        print("%s matches a fresh export" % (dest / series.PACKAGE_PATCH))
        return engine.EXIT_OK
    changed = export.write(dest)
    _say(["wrote %s" % (dest / name) for name in changed] or
         ["%s is up to date" % dest])
    return engine.EXIT_OK
