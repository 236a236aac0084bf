"""The patch series for Xen 3.1 trees: check, apply, revert and export.

``add_parser(subparsers)`` / ``run(args)`` mount it as
``xend-fastmig patches ...``; ``engine`` and ``export`` are the library.
"""

from fastmig_tools.patchtool.command import add_parser, run

__all__ = ["add_parser", "run"]
