"""``xend-fastmig``: one command, one subcommand per job.

Each subcommand's module exposes ``add_parser(subparsers)`` (which sets
``func``) and ``run(args)`` returning the exit status.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from fastmig_tools import __version__

__all__ = ["main", "build_parser"]

# (module, required): a subcommand whose module is missing is left out,
# except the rehearsal, the tool's main job.
_SUBCOMMANDS = (
    ("fastmig_tools.rehearse.cli", True),
    ("fastmig_tools.patchtool.command", True),
    ("fastmig_tools.verify.command", True),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xend-fastmig",
        description="Fast, safe live migration for Xen 3.1's xend: tools.")
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + __version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, required in _SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            if required:
                raise
            continue
        parser_ = module.add_parser(subparsers)
        if parser_.get_default("func") is None:
            parser_.set_defaults(func=module.run)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("\nxend-fastmig: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
