#!/usr/bin/env python3
"""How soon after the last in-flight write the source lets the target go.

For 1, 2, 4 and 8 block devices, on the real xenstored: the time from the
last in-flight write completing (in the blkback model) to the source's
half-close of the relocation connection, when the source waits with

* ``fastmig``: the core's own release (``release_block_device`` on each
  captured device, what ``_releaseDevices(force=True)`` runs) and
  ``DrainWaiter`` (xenstore watches waking a pipe), and
* ``poll100``: the same release, then a polling wait like the 2008
  patch's and 3.1's ``testDeviceComplete``: list the backend directories
  still there, sleep 100 ms for each, until none is left.

Each run is a fresh domain written by ``fastmig_tools.models.layout`` with
one classic 3.1 blkback actor per disk (``fastmig_tools.models.blkback``,
each on its own xenstore connection, as dom0's kernel and udev are), one
request in flight per disk completing 20-40 ms after the "suspend".

    python3 benchmarks/bench_drain.py              # 50 runs per cell
    python3 benchmarks/bench_drain.py --runs 3     # CI
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fastmig_tools.models.blkback import (  # noqa: E402
    ClassicBlkback, InflightRequest)
from fastmig_tools.models.domain import ModelDomainInfo  # noqa: E402
from fastmig_tools.rehearse.stores import (  # noqa: E402
    HostStore, StoreUnavailable)
from fastmig_tools.rehearse.sweep import Progress  # noqa: E402
from xend_fastmig.blockdevs import capture_block_devices  # noqa: E402
from dom0_backends import Dom0Backends  # noqa: E402
from xend_fastmig.drain import DrainWaiter  # noqa: E402
from xend_fastmig.release import release_block_device  # noqa: E402

METHODS = ("fastmig", "poll100")
_domids = itertools.count(100)


def poll100(store, devices, timeout=30.0):
    """Sleep 100 ms per backend directory still present, until none is."""
    started = time.monotonic()
    while True:
        present = [d for d in devices
                   if store.xstransact.Read(d.backend) is not None]
        for _device in present:
            time.sleep(0.1)
        if not present or time.monotonic() - started >= timeout:
            return


def one_run(host, ndev, method, rng, dom0=None):
    """One drain; backends in ``dom0`` (a Dom0Backends) or in threads."""
    api = host.api(thread_name="xend-watcher")
    store = api.store()
    domid = next(_domids)
    dominfo = ModelDomainInfo(
        store, domid, "bench%d" % domid,
        vbds=[{"dev": "xvd%s" % chr(ord("a") + i), "uname": "phy:/dev/null"}
              for i in range(ndev)], memory_gb=0.1)
    delays = [(device.backend, rng.uniform(0.020, 0.040))
              for device in dominfo.layout.block_devices]
    actors = []
    a, b = socket.socketpair()
    try:
        if dom0 is not None:
            dom0.start(delays)
        else:
            for backend, delay in delays:
                actor_api = host.api(thread_name="blkback-watcher")
                actor = ClassicBlkback(actor_api.store(), backend,
                                       requests=[InflightRequest(
                                           sector=0, delay=delay)])
                actors.append((actor, actor_api))
                actor.start()
        devices, problems = capture_block_devices(store, domid,
                                                  dominfo.dompath)
        assert not problems and len(devices) == ndev, problems
        suspended = time.monotonic()
        if dom0 is not None:
            dom0.suspend(suspended)
        for actor, _ in actors:
            actor.set_suspend_time(suspended)
        for device in devices:
            assert release_block_device(store, device), device
        if method == "fastmig":
            DrainWaiter(store, devices, 30.0).wait()
        else:
            poll100(store, devices)
        a.shutdown(socket.SHUT_WR)
        half_closed = time.monotonic()
        if dom0 is not None:
            last, gone = dom0.collect()
        else:
            last = max(r.completed_at for actor, _ in actors
                       for r in actor.requests)
            gone = [actor.removed_at for actor, _ in actors]
        # The part of the delay that is the waiting itself, after the
        # backend model's own teardown (drain + udev's hotplug cleanup).
        backend = None
        if None not in gone:
            backend = (half_closed - max(gone)) * 1000.0
        return (half_closed - last) * 1000.0, backend
    finally:
        a.close()
        b.close()
        for actor, actor_api in actors:
            actor.stop()
            host.release(actor_api)
        store.xstransact.Remove(dominfo.dompath)
        store.xstransact.Remove(dominfo.vmpath)
        store.xstransact.Remove("/local/domain/0/backend/vbd/%d" % domid)
        host.release(api)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50,
                        help="runs per method and device count (default 50)")
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--xenstored", choices=("real", "embedded"),
                        default="real")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--backends", choices=("process", "threads"), default="process",
        help="run the blkback models in a process of their own, as dom0's "
        "kernel is (default), or in threads of the benchmark's process")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        counts = [int(n) for n in args.devices.split(",")]
    except ValueError:
        parser.error("--devices wants numbers like 1,2,4,8")
    if args.runs < 1 or not all(1 <= n <= 16 for n in counts):
        parser.error("--runs must be at least 1, devices 1..16")
    try:
        host = HostStore("bench-drain", args.xenstored).start()
    except StoreUnavailable as exc:
        sys.stderr.write("bench_drain: %s\n" % exc)
        return 2
    dom0 = None
    if args.backends == "process":
        if host.daemon is None:
            parser.error("--backends process needs --xenstored real")
        dom0 = Dom0Backends(host.daemon.env())
    rng = random.Random(args.seed)
    progress = Progress(len(counts) * len(METHODS) * args.runs, sys.stderr,
                        enabled=not args.quiet)
    figures = {}
    started = time.monotonic()
    try:
        for ndev in counts:
            for method in METHODS:
                for _ in range(args.runs):
                    label = "%d disks %s" % (ndev, method)
                    progress.update(label)
                    figures.setdefault((ndev, method), []).append(
                        one_run(host, ndev, method, rng, dom0))
                    progress.step(label)
    except KeyboardInterrupt:
        sys.stderr.write("\nbench_drain: interrupted\n")
        return 130
    finally:
        progress.close()
        if dom0 is not None:
            dom0.close()
        host.close()
    print("bench_drain: last in-flight write -> half-close (last "
          "column: from the model backend's directory going instead), "
          "%d runs per "
          "cell, %s xenstored, backends in %s; %s, %d CPUs, Python %s; "
          "%.0f s"
          % (args.runs, args.xenstored, args.backends, platform.platform(),
             os.cpu_count(),
             platform.python_version(), time.monotonic() - started))
    rows = [("block devices", "fastmig median", "fastmig worst",
             "poll100 median", "poll100 worst",
             "fastmig after the last backend dir went (median)")]
    for ndev in counts:
        row = ["%d" % ndev]
        for method in METHODS:
            values = [total for total, _ in figures[(ndev, method)]]
            row += ["%.1f ms" % statistics.median(values),
                    "%.1f ms" % max(values)]
        teardown = [b for _, b in figures[(ndev, "fastmig")] if b is not None]
        row.append("%.1f ms" % statistics.median(teardown)
                   if teardown else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
