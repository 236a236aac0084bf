"""``xend-fastmig verify --tree PATH [--json]``.

Exit status: 0 when every check holds; 1 when one does not (the first
failing check and its reason are the last line); 2 when verify cannot run
(not a 3.1-like tree, no Python 2.7, no xenstored, no libxen-dev: one
line saying what to install).  PATH is only read: the series is applied
to a scratch copy, and the harness copies what it runs.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fastmig_tools.verify import checks, patchsets, preflight

__all__ = ["add_parser", "run", "SCHEMA", "format_report"]

SCHEMA = "xend-fastmig-verify/1"
EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE = 0, 1, 2

DESCRIPTION = """\
Check the series on your own Xen 3.1 tree before deploying it.  On a
scratch copy of PATH (PATH is never written) the series must apply with
fuzz 0 and byte-compile on Python 2.7; then the tree's real xend, stock
and patched, runs on two harness hosts on this machine (a real xenstored
each, the tree's hotplug scripts, a stand-in for the hypervisor and
blkback) through: migration stock and patched at two memory sizes (gate
and blackout), a slow in-flight write, patched->stock and
stock->patched, save and restore, the option off and the package
deleted behaving as stock (same hypervisor calls), a target failing
after the image (patched: resumed at the source and xm migrate raising
an error that says so; stock: lost), an HVM guest, tap devices, and a
shutdown-request backend.

gate = the source's xc_save sent the image -> the target's restore went
past its EOF gate; blackout = the guest suspended at the source -> it
unpaused at the target.  Destroying a domain costs --destroy-per-gb
times its memory (the stand-in sleeps it).  Exit 0 only when every check
holds; 1 with the reason otherwise; 2 when it cannot run here.
"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "verify", help="check the series on a Xen 3.1 tree, on its real xend",
        description=DESCRIPTION,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    parser.add_argument("--tree", required=True, type=Path, metavar="PATH",
                        help="the Xen 3.1 source tree (only read)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout")
    parser.add_argument("--destroy-per-gb", type=float, default=0.5, metavar="S",
                        help="seconds the hypervisor stand-in takes to destroy "
                        "each GB (default 0.5: visible, and the run short)")
    parser.add_argument("--sizes", default="1,4", metavar="GB,GB",
                        help="the two memory sizes of the figures (default 1,4)")
    parser.add_argument("--patches", type=Path, default=patchsets.REPO_PATCHES,
                        metavar="DIR", help="the series folder (default: the "
                        "project's patches/)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=run)
    return parser


class _Progress:
    """One line on stderr: rewritten in place on a terminal, else a line per
    step."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.n = total, enabled, 0
        self.tty = enabled and sys.stderr.isatty()
        self.start = time.time()

    def __call__(self, title: str) -> None:
        self.n += 1
        if not self.enabled:
            return
        line = "verify: [%d/%d] %s (%.0f s)" % (self.n, self.total, title,
                                               time.time() - self.start)
        if self.tty:
            sys.stderr.write("\r\033[K" + line[:150])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _fail(message: str) -> int:
    sys.stderr.write("xend-fastmig verify: error: %s\n" % message)
    return EXIT_UNAVAILABLE


def _sizes(text: str) -> tuple:
    try:
        sizes = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        sizes = ()
    if len(sizes) != 2 or not all(0.25 <= s <= 64 for s in sizes) or sizes[0] >= sizes[1]:
        raise ValueError("--sizes wants two sizes in GB, smaller first, "
                         "0.25..64 (got %r)" % text)
    return sizes


def run(args) -> int:
    tree = args.tree.resolve() if args.tree.exists() else args.tree
    try:
        sizes = _sizes(args.sizes)
        if not 0.05 <= args.destroy_per_gb <= 5:
            raise ValueError("--destroy-per-gb wants 0.05..5 s (a full run "
                             "should stay short)")
        version = preflight.check_tree(tree)
        py27 = preflight.check_environment()
    except (preflight.Unavailable, ValueError) as exc:
        return _fail(str(exc))
    workdir = Path(tempfile.mkdtemp(prefix="xend-fastmig-verify-"))
    started = time.time()
    results = []
    progress = _Progress(1 + checks.run_count(sizes), enabled=not args.quiet)
    try:
        progress("the series on a scratch copy")
        results.append(checks.series_check(tree, args.patches, py27, workdir))
        if results[0].ok:
            setup = checks.Setup(
                patchsets.harness_tree(tree), patchsets.harness_series(workdir / "harness-patches", args.patches),
                patchsets.harness_series(workdir / "harness-patches", args.patches,
                                         without_package=True),
                args.destroy_per_gb, sizes, workdir, note=progress)
            for title, step, _count in checks.plan(setup):
                step_start = time.time()
                try:
                    results.extend(step())
                except Exception as exc:  # HostError, HarnessUnavailable
                    results.append(checks.CheckResult(
                        title, False, "the harness failed: %s"
                        % str(exc).strip().splitlines()[0][:300],
                        time.time() - step_start))
    except KeyboardInterrupt:
        progress.close()
        sys.stderr.write("\nxend-fastmig verify: interrupted; hosts stopped, "
                         "temporary files removed\n")
        return 130
    finally:
        progress.close()
        shutil.rmtree(workdir, ignore_errors=True)
    ok = all(r.ok for r in results)
    seconds = time.time() - started
    if args.json:
        doc = {"schema": SCHEMA, "tree": str(tree), "version": version, "ok": ok,
               "destroy_seconds_per_gb": args.destroy_per_gb,
               "sizes_gb": list(sizes), "seconds": round(seconds, 1),
               "reason": _reason(results),
               "checks": [r.to_json() for r in results]}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_report(tree, version, args.destroy_per_gb,
                                       results, seconds) + "\n")
    return EXIT_OK if ok else EXIT_FAILED


def _reason(results) -> str | None:
    for r in results:
        if not r.ok:
            return "%s: %s" % (r.name, r.detail)
    return None


def _s(value) -> str:
    return "-" if value is None else "%.2f s" % value


def format_report(tree, version, per_gb, results, seconds) -> str:
    lines = ["verify %s (%s)" % (tree, version),
             "harness: the tree's real xend on two hosts, destroy %.2f s/GB, PV "
             "guest with 1 disk unless named, live" % per_gb, ""]
    rows = [("tree", "run", "memory", "write", "gate", "blackout", "disk", "guest")]
    for r in results:
        for f in r.figures:
            rows.append((f.variant, f.what, "%g GB" % f.memory_gb,
                         _s(f.write), _s(f.gate), _s(f.blackout), f.disk, f.guest))
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(widths[j]) for j, c in enumerate(row)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    lines.append("checks:")
    for r in results:
        lines.append("  %-4s %s: %s" % ("ok" if r.ok else "FAIL", r.name, r.detail))
    failed = [r for r in results if not r.ok]
    lines.append("")
    if failed:
        lines.append("verify: FAILED (%d of %d checks, %.0f s): %s"
                     % (len(failed), len(results), seconds, _reason(results)))
    else:
        lines.append("verify: all %d checks hold (%.0f s)" % (len(results), seconds))
    return "\n".join(lines)
