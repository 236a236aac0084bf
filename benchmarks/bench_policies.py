#!/usr/bin/env python3
"""The four policies side by side on the real xenstored, 1 to 8 GB.

For each memory size: the median blackout of every policy, the ratios
stock/fastmig and patch2008/fastmig, fastmig's release delay after the
last in-flight write (median and worst), stale blocks per policy, and at
the end fastmig's blackout slope in ms per GB (least squares over every
fastmig run).

Each run is one full rehearsal (``xend-fastmig rehearse`` with the same
knobs): two hosts, each on its own real xenstored, a real TCP relocation
connection and a real disk image.  The guest has one slow write
(``--slow-write``, default 100 ms) so that the last in-flight write lands
after the image was sent: otherwise every policy's release would trail
the writes by the stop-and-copy round, and the release delay would
measure that round rather than the drain.

    python3 benchmarks/bench_policies.py                 # 50 fastmig runs per size
    python3 benchmarks/bench_policies.py --runs 2 --other-runs 1 --memory 1G,2G  # CI
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastmig_tools.rehearse.runner import run_once  # noqa: E402
from fastmig_tools.rehearse.scenario import (  # noqa: E402
    DEFAULT_POLICIES, Scenario, ScenarioError, parse_memory)

# The four policies README's table compares (fastmig-late has its own
# benchmark, bench_early_release.py).
POLICIES = DEFAULT_POLICIES
from fastmig_tools.rehearse.stores import (  # noqa: E402
    StoreUnavailable, open_host_stores)
from fastmig_tools.rehearse.sweep import Progress  # noqa: E402


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50,
                        help="fastmig runs per memory size (default 50)")
    parser.add_argument("--other-runs", type=int, default=10,
                        help="runs of each other policy per size (default "
                        "10; their blackout is the destroy, which varies "
                        "little)")
    parser.add_argument("--memory", default="1G,2G,4G,8G",
                        help="memory sizes (default 1G,2G,4G,8G)")
    parser.add_argument("--destroy-per-gb", type=float, default=0.6)
    parser.add_argument("--slow-write", type=float, default=100.0,
                        metavar="MS")
    parser.add_argument("--precopy", type=float, default=50.0, metavar="MS",
                        help="live rounds, outside every blackout "
                        "(default 50 ms, to keep the benchmark short)")
    parser.add_argument("--xenstored", choices=("real", "embedded"),
                        default="real")
    parser.add_argument("--json", metavar="FILE",
                        help="also write every run to FILE")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.other_runs < 1:
        parser.error("--runs and --other-runs must be at least 1")
    try:
        args.memory = [parse_memory(m) for m in args.memory.split(",")]
    except ScenarioError as exc:
        parser.error(str(exc))
    return args


def _slope(points):
    """Least-squares slope of (x, y) points; None with one x value."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return None
    mx = statistics.fmean(xs)
    my = statistics.fmean(y for _, y in points)
    num = sum((x - mx) * (y - my) for x, y in points)
    den = sum((x - mx) ** 2 for x in xs)
    return num / den


def _fmt(ms):
    if ms is None:
        return "-"
    if abs(ms) >= 1000:
        return "%.2f s" % (ms / 1000)
    return "%.1f ms" % ms


def main(argv=None) -> int:
    args = _args(argv)
    base = Scenario(destroy_per_gb=args.destroy_per_gb,
                    slow_write_ms=args.slow_write or None,
                    precopy_seconds=args.precopy / 1000.0,
                    xenstored=args.xenstored)
    counts = {p: (args.runs if p == "fastmig" else args.other_runs)
              for p in POLICIES}
    total = len(args.memory) * sum(counts.values())
    progress = Progress(total, sys.stderr, enabled=not args.quiet)
    try:
        stores = open_host_stores(args.xenstored)
    except StoreUnavailable as exc:
        sys.stderr.write("bench_policies: %s\n" % exc)
        return 2
    results = {}
    started = time.monotonic()
    try:
        for memory in args.memory:
            for index in range(max(counts.values())):
                for policy in POLICIES:
                    if index >= counts[policy]:
                        continue
                    label = "%gG %s" % (memory, policy)
                    progress.update(label)
                    result = run_once(base.replace(
                        policy=policy, memory_gb=memory,
                        seed=base.seed + index), stores=stores)
                    results.setdefault((memory, policy), []).append(result)
                    progress.step(label)
    except KeyboardInterrupt:
        sys.stderr.write("\nbench_policies: interrupted\n")
        return 130
    finally:
        progress.close()
        for store in stores:
            store.close()
    elapsed = time.monotonic() - started

    def med(memory, policy, key="blackout_ms"):
        values = [getattr(r, key) for r in results[(memory, policy)]
                  if getattr(r, key) is not None]
        return statistics.median(values) if values else None

    print("bench_policies: %s xenstored, destroy %.2f s/GB, %d disks x %d "
          "in flight + one %g ms write, %d fastmig / %d other runs per size;"
          " %s, %d CPUs, Python %s; %.0f s"
          % (args.xenstored, args.destroy_per_gb, base.devices,
             base.inflight, args.slow_write, args.runs, args.other_runs,
             platform.platform(), os.cpu_count(), platform.python_version(),
             elapsed))
    header = ("memory", "stock", "patch2008", "xen41", "fastmig",
              "stock/fastmig", "patch2008/fastmig",
              "fastmig release after last write: median", "worst",
              "stale blocks (stock/patch2008/xen41/fastmig)")
    rows = [header]
    fastmig_points = []
    fastmig_stale = 0
    for memory in args.memory:
        blackouts = {p: med(memory, p) for p in POLICIES}
        fast = blackouts["fastmig"]
        delays = [r.release_after_last_write_ms
                  for r in results[(memory, "fastmig")]
                  if r.release_after_last_write_ms is not None]
        stale = {p: sum(len(r.stale_blocks) for r in results[(memory, p)])
                 for p in POLICIES}
        fastmig_stale += stale["fastmig"]
        fastmig_points.extend((memory, r.blackout_ms)
                              for r in results[(memory, "fastmig")]
                              if r.blackout_ms is not None)
        rows.append((
            "%g GB" % memory,
            *[_fmt(blackouts[p]) for p in POLICIES],
            "%.1fx" % (blackouts["stock"] / fast) if fast else "-",
            "%.1fx" % (blackouts["patch2008"] / fast) if fast else "-",
            _fmt(statistics.median(delays)) if delays else "-",
            _fmt(max(delays)) if delays else "-",
            "/".join(str(stale[p]) for p in POLICIES),
        ))
    widths = [max(len(str(row[i])) for row in rows)
              for i in range(len(header))]
    for n, row in enumerate(rows):
        print("  ".join(str(c).ljust(widths[i])
                        for i, c in enumerate(row)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    slope = _slope(fastmig_points)
    print("fastmig blackout slope: %s ms/GB (least squares over %d runs); "
          "stale blocks in fastmig runs: %d"
          % ("%.2f" % slope if slope is not None else "-",
             len(fastmig_points), fastmig_stale))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"%g/%s" % key: [r.to_json() for r in value]
                       for key, value in results.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
