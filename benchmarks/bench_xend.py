#!/usr/bin/env python3
"""Migration figures from each Xen tree's real xend on two harness hosts.

For every tree in ../shared/xen and every configuration in CONFIGS it
migrates a PV guest (live) and prints:

* gate: the source's xc_save finished sending the image -> the target's
  restore went past its EOF gate (``os.read(fd, 1)`` returned);
* blackout: the guest suspended at the source -> unpaused at the target;

at 1, 4 and 16 GB with the hypervisor stand-in's destroy taking
``--seconds-per-gb`` (0.6 s/GB: xen-devel 2014-12 msg00649),
then the disk verdict with one write in flight at the suspend (``--write``
seconds, and a slow ``--slow-write``), and what happens to the VM when the
target fails after the whole image arrived (its unpause fails).

Run: ``PYTHONPATH=. python3 benchmarks/bench_xend.py`` (about a minute per
tree and configuration with the defaults; ``--runs`` repeats and reports
medians).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastmig_tools.xendharness.harness import TwoHosts  # noqa: E402
from fastmig_tools.xendharness.observe import LOUD, outcome_of  # noqa: E402

TREES_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "xen"
TREES = ("3.1.0", "unstable-2007-06-08")

PATCHES = Path(__file__).resolve().parent.parent / "patches"


def series():
    """The project's series, in its order (patches/series)."""
    from fastmig_tools.patchtool.engine import series_paths
    return series_paths(PATCHES)


# (label, patches applied to the source's tree, to the target's tree,
#  extra xend-config.sxp options).
CONFIGS = [
    ("stock->stock", [], [], {}),
    ("patched->stock", series(), [], {}),
]

SIZES_GB = (1, 4, 16)


def migrate_once(tree, config, memory_gb, seconds_per_gb, write_delay=None,
                 fault=None):
    label, src_patches, dst_patches, xend_config = config
    pair = TwoHosts(tree, patches=src_patches, target_patches=dst_patches,
                    xend_config=xend_config,
                    destroy_seconds_per_gb=seconds_per_gb)
    try:
        pair.start()
        guest = pair.create_guest(disks=1, memory_mb=int(memory_gb * 1024))
        if write_delay is not None:
            pair.arm_inflight(guest, delay=write_delay)
        if fault:
            getattr(pair, fault)()
        result = pair.migrate(guest, live=True, settle_timeout=60 + 2 * memory_gb * seconds_per_gb)
        outcome = LOUD[outcome_of(pair, result)]
        return result, pair.disk_verdict(), outcome
    finally:
        pair.stop()


def fmt(seconds) -> str:
    return "   n/a" if seconds is None else "%6.3f" % seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds-per-gb", type=float, default=0.6)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--write", type=float, default=0.05,
                    help="in-flight write completing this long after the suspend")
    ap.add_argument("--slow-write", type=float, default=2.5,
                    help="a slow (failing-over) storage write, seconds")
    ap.add_argument("--trees", nargs="*", default=list(TREES))
    ap.add_argument("--sizes", default=",".join(str(g) for g in SIZES_GB),
                    help="memory sizes in GB, comma separated")
    ap.add_argument("--quiet", action="store_true",
                    help="accepted for the benchmark tests' common command line")
    args = ap.parse_args()
    print("xend harness: real xend of each tree, hypervisor stand-in destroy "
          "%.2f s/GB, %d run(s) each (medians), PV guest, 1 disk, live"
          % (args.seconds_per_gb, args.runs))
    for name in args.trees:
        tree = TREES_DIR / name
        for config in CONFIGS:
            label = config[0]
            print()
            print("== %s, %s" % (name, label))
            print("   memory    gate(s)  blackout(s)")
            for gb in [float(g) for g in args.sizes.split(",")]:
                gates, blackouts = [], []
                for _ in range(args.runs):
                    r, _v, _o = migrate_once(tree, config, gb, args.seconds_per_gb)
                    gates.append(r.timings.gate)
                    blackouts.append(r.timings.blackout)
                med = lambda xs: None if None in xs else statistics.median(xs)
                print("   %3g GB    %s   %s" % (gb, fmt(med(gates)), fmt(med(blackouts))))
            for delay in (args.write, args.slow_write):
                r, verdict, _o = migrate_once(tree, config, 1, args.seconds_per_gb,
                                              write_delay=delay)
                print("   disk, write landing %.2f s after the suspend (1 GB): %s"
                      % (delay, verdict.summary()))
            r, _v, outcome = migrate_once(tree, config, 1, args.seconds_per_gb,
                                          fault="fail_unpause")
            print("   target fails after the image (unpause fails): %s; "
                  "xm migrate reported %s" % (outcome, "success" if r.ok else r.error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
