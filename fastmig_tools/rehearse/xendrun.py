"""``rehearse --xend PATH``: the rehearsal with the hosts running the
tree's real xend (``fastmig_tools.xendharness``) instead of the models.

Policies are what each host's xend runs: ``stock`` the tree as it is;
``fastmig`` the tree patched by the series; ``patch2008`` the tree with
the 2008 patch as ported in patches/compare/; ``xen41`` the tree with Xen
4.1's order (patches/compare/xen41-order-*.diff).  Both hosts of a run
run the same policy.

What differs from the model rehearsal: the xenstore is always two real
xenstored daemons; each disk has one write in flight at the suspend,
landing --slow-write after it (5 ms with --slow-write 0); xs ops and drain
confirmed are not measured (-); the faults are the ones the harness can
inject (``XEND_FAULTS``).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastmig_tools.invariants import AT_TARGET, LOST, RESUMED, TWICE

__all__ = ["XEND_FAULTS", "XEND_SWEEPABLE", "XendPoint", "XendRun",
           "run_xend_command", "run_point", "format_xend_point",
           "run_xend_matrix", "format_xend_matrix", "SCHEMA"]

SCHEMA = "xend-fastmig-rehearse-xend/1"
QUICK_WRITE_S = 0.005



@dataclasses.dataclass(frozen=True)
class XendPoint:
    """One scenario (the model's Scenario fields that apply here)."""

    memory_gb: float = 2.0
    destroy_per_gb: float = 0.6
    devices: int = 2
    slow_write_ms: float | None = 200.0
    backend: str = "classic"
    fault: str | None = None
    drain_timeout: float | None = None

    def replace(self, **changes) -> "XendPoint":
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        write = ("one write per disk landing %s after the suspend"
                 % _ms(self.slow_write_ms) if self.slow_write_ms
                 else "one quick write per disk")
        return ("real xend of the tree, memory %g GB, destroy %.2f s/GB (%s), "
                "%d disk(s), %s, %s blkback, real xenstored%s"
                % (self.memory_gb, self.destroy_per_gb,
                   _ms(self.memory_gb * self.destroy_per_gb * 1000),
                   self.devices, write, self.backend,
                   ", fault " + self.fault if self.fault else ""))

    def knobs(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class XendRun:
    policy: str
    blackout_ms: float | None
    gate_ms: float | None
    release_after_last_write_ms: float | None
    disk_clean: bool
    stale_blocks: list
    outcome: str
    error: str | None
    seconds: float
    # The one oracle's verdict (fastmig_tools.xendharness.observe).
    violations: list = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["stale_blocks"] = [str(s) for s in self.stale_blocks]
        return out


# name -> (what it does, how: {"backend": ..., "write": s, "call": f(pair),
# "stock_loses": stock 3.1 ends with no running copy under it})
XEND_FAULTS = {
    "slow-write": ("every disk's in-flight write lands 2.5 s after the suspend "
                   "(storage failing over)", {"write": 2.5}),
    "target-restore-fails": ("the target's xc_restore fails after reading the "
                             "whole image",
                             {"call": lambda p: p.fail_in_stream(),
                              "stock_loses": True}),
    "target-completeRestore-fails": ("the target's xenstored cannot map the "
                                     "restored guest's store page, so "
                                     "completeRestore's introduce fails",
                                     {"call": lambda p: p.fail_complete_restore(),
                                      "stock_loses": True}),
    "target-unpause-fails": ("the target's hypervisor refuses to unpause the "
                             "restored guest",
                             {"call": lambda p: p.fail_unpause(),
                              "stock_loses": True}),
    "target-dies": ("the target's xend is killed once it has the whole image",
                    {"call": lambda p: p.kill_target_after_image(),
                     "stock_loses": True}),
    "target-hotplug-fails": ("the target's block hotplug script fails "
                             "(waitForDevices raises)",
                             {"call": lambda p: p.fail_hotplug(),
                              "stock_loses": True}),
    "source-save-fails": ("the source's xc_save fails after the suspend",
                          {"call": lambda p: p.fail_save_after_suspend()}),
    "hung-backend": ("the source's blkback never drains or tears down (the "
                     "target's is classic)", {"backend": "hung"}),
}

# Knobs --sweep may vary with --xend (the model's names).
XEND_SWEEPABLE = ("memory", "destroy-per-gb", "devices", "slow-write", "backend")
_FIELDS = {"memory": "memory_gb", "destroy-per-gb": "destroy_per_gb",
           "devices": "devices", "slow-write": "slow_write_ms", "backend": "backend"}
XEND_BACKENDS = ("classic", "shutdown-request", "hung")


def _ms(value) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return "%.2f s" % (value / 1000.0)
    return "%.1f ms" % value


def run_point(tree: Path, policy: str, point: XendPoint, patch_dir: Path) -> XendRun:
    """One live migration of a PV guest between two hosts running
    ``policy``'s xend of ``tree``."""
    from fastmig_tools.verify.patchsets import variant_patches
    from fastmig_tools.xendharness.harness import TwoHosts
    from fastmig_tools.xendharness.observe import (
        outcome_of, stock_leftovers, violations as oracle_violations)
    started = time.time()
    patches = variant_patches(policy, tree, patch_dir)
    fault = XEND_FAULTS[point.fault][1] if point.fault else {}
    write = fault.get("write", (point.slow_write_ms or 0) / 1000.0 or QUICK_WRITE_S)
    backend = fault.get("backend", point.backend)
    config = {}
    if policy == "fastmig" and point.drain_timeout is not None:
        config["xend-fast-migration-drain-timeout"] = "%g" % point.drain_timeout
    pair = TwoHosts(str(tree), patches=patches, xend_config=config,
                    backend=backend,
                    target_backend="classic" if backend == "hung" else None,
                    destroy_seconds_per_gb=point.destroy_per_gb)
    try:
        pair.start()
        guest = pair.create_guest(disks=point.devices,
                                  memory_mb=int(point.memory_gb * 1024))
        domid = guest.domid
        if point.devices:
            pair.arm_inflight(guest, delay=write)
        if "call" in fault:
            fault["call"](pair)
        result = pair.migrate(guest, live=True, settle_timeout=45 + 2 * point.memory_gb
                              * point.destroy_per_gb)
        t = result.timings
        landed = [e["t"] for e in pair.source.backend_events()
                  if e.get("event") == "landed"]
        after = None
        if t.gate_open is not None and landed:
            after = (t.gate_open - max(landed)) * 1000.0
        verdict = pair.disk_verdict()
        outcome = outcome_of(pair, result)
        found = oracle_violations(
            pair, domid, result,
            stock_ends_without_copy=fault.get("stock_loses", False),
            stocks_own=stock_leftovers(tree))
        blackout = t.blackout
        if outcome == RESUMED:
            blackout = None          # resumed at the source: not measured here
        return XendRun(policy, None if blackout is None else blackout * 1000.0,
                       None if t.gate is None else t.gate * 1000.0, after,
                       verdict.clean, list(verdict.stale), outcome,
                       result.error.strip().splitlines()[0][-240:]
                       if result.error else None, time.time() - started,
                       found)
    finally:
        pair.stop()


# -- the table ---------------------------------------------------------------

COLUMNS = ("policy", "blackout", "gate", "after write", "xs ops",
           "drain confirmed", "disk", "guest")


def _stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values)}


def summarize(runs) -> dict:
    return {"runs": len(runs),
            "blackout_ms": _stat(r.blackout_ms for r in runs),
            "gate_ms": _stat(r.gate_ms for r in runs),
            "release_after_last_write_ms": _stat(r.release_after_last_write_ms
                                                 for r in runs),
            "corrupt_runs": sum(1 for r in runs if not r.disk_clean),
            "stale_blocks": sum(len(r.stale_blocks) for r in runs),
            "outcomes": dict(collections.Counter(r.outcome for r in runs)),
            "errors": [r.error for r in runs if r.error]}


def _cell(stats, signed=False) -> str:
    if stats is None:
        return "-"
    fmt = (lambda v: ("+" if v >= 0 else "") + _ms(v)) if signed else _ms
    if stats["n"] == 1:
        return fmt(stats["median"])
    return "%s (%s..%s)" % (fmt(stats["median"]), fmt(stats["min"]), fmt(stats["max"]))


def format_xend_point(point: XendPoint, by_policy: dict, runs: int) -> str:
    rows = [list(COLUMNS)]
    notes = []
    for policy, results in by_policy.items():
        s = summarize(results)
        if s["corrupt_runs"] == 0:
            disk = "clean"
        elif s["runs"] == 1:
            disk = "CORRUPT (%d stale)" % s["stale_blocks"]
        else:
            disk = "CORRUPT in %d/%d runs" % (s["corrupt_runs"], s["runs"])
        outcomes = s["outcomes"]
        guest = ", ".join(name if s["runs"] == 1 else "%s %d/%d" % (name, n, s["runs"])
                          for name, n in sorted(outcomes.items()))
        rows.append([policy,
                     _cell(s["blackout_ms"]) if s["blackout_ms"] else "never back"
                     if all(r.outcome == LOST for r in results) else "-",
                     _cell(s["gate_ms"]), _cell(s["release_after_last_write_ms"], True),
                     "-", "-", disk, guest])
        for error in dict.fromkeys(s["errors"]):
            notes.append("  %s: xm migrate: %s" % (policy, error))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [point.describe() + ("; %d runs each, median (min..max)" % runs
                                 if runs > 1 else "")]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) for j, c in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + notes)


# -- sweeps and the command --------------------------------------------------

def points_of(base: XendPoint, sweep) -> list:
    import itertools
    names = [n for n, _ in sweep]
    out = []
    for combo in itertools.product(*[values for _, values in sweep]):
        changes = dict(zip(names, combo))
        out.append((changes, base.replace(**{_FIELDS[n]: v for n, v in changes.items()})))
    return out or [({}, base)]


def run_points(tree: Path, policies, points, runs: int, progress=None):
    from fastmig_tools.verify.patchsets import harness_tree
    tree = harness_tree(tree)
    workdir = Path(tempfile.mkdtemp(prefix="xend-fastmig-rehearse-"))
    try:
        out = []
        for changes, point in points:
            by_policy = {p: [] for p in policies}
            label = " ".join("%s=%s" % (k, "%g" % v if isinstance(v, float) else v)
                             for k, v in changes.items())
            for _ in range(runs):
                for policy in policies:
                    if progress is not None:
                        progress.update(("%s %s" % (label, policy)).strip())
                    by_policy[policy].append(run_point(tree, policy, point, workdir))
                    if progress is not None:
                        progress.step(("%s %s" % (label, policy)).strip())
            out.append((changes, point, by_policy))
        return out
    finally:
        if progress is not None:
            progress.close()
        shutil.rmtree(workdir, ignore_errors=True)


def violations(run: XendRun) -> list:
    """The one oracle's violations of the run (docs/design.md,
    "Invariants")."""
    return list(run.violations)


def run_xend_matrix(tree: Path, faults, policies, runs: int, base: XendPoint,
                    progress=None) -> dict:
    from fastmig_tools.verify.patchsets import harness_tree
    tree = harness_tree(tree)
    workdir = Path(tempfile.mkdtemp(prefix="xend-fastmig-matrix-"))
    cells = {}
    try:
        for fault in faults:
            for policy in policies:
                label = "%s %s" % (fault, policy)
                results = []
                for _ in range(runs):
                    if progress is not None:
                        progress.update(label)
                    results.append(run_point(tree, policy, base.replace(fault=fault),
                                             workdir))
                    if progress is not None:
                        progress.step(label)
                cells[(fault, policy)] = results
        return cells
    finally:
        if progress is not None:
            progress.close()
        shutil.rmtree(workdir, ignore_errors=True)


_SHORT = {AT_TARGET: "target", RESUMED: "source", LOST: "LOST", TWICE: "TWICE"}


def format_xend_matrix(cells, faults, policies) -> str:
    rows = [["fault"] + list(policies)]
    for fault in faults:
        row = [fault]
        for policy in policies:
            results = cells[(fault, policy)]
            bad = sum(1 for r in results if violations(r))
            outcomes = ",".join(sorted(set(_SHORT[r.outcome] for r in results)))
            disk = "" if all(r.disk_clean for r in results) else " CORRUPT"
            row.append("%d/%d %s%s" % (bad, len(results), outcomes, disk))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["cell: runs breaking an invariant / runs, then the guest's outcome "
             "(target, source = resumed, LOST, TWICE) and CORRUPT if the disk is"]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) for j, c in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", "faults:"]
    lines += ["  %s: %s" % (f, XEND_FAULTS[f][0]) for f in faults]
    lines += ["", "violations:"]
    seen = False
    for fault in faults:
        for policy in policies:
            for why in dict.fromkeys(v for r in cells[(fault, policy)]
                                     for v in violations(r)):
                lines.append("  %s / %s: %s" % (fault, policy, why))
                seen = True
    if not seen:
        lines.append("  none")
    return "\n".join(lines)


def _fail(message: str) -> int:
    sys.stderr.write("xend-fastmig rehearse: error: %s\n" % message)
    return 2


def _defaults_only(args) -> str | None:
    """A model-only option given with --xend (its name), else None."""
    if args.fault:
        return "--fault (with --xend: --matrix --faults %s)" % ",".join(XEND_FAULTS)
    if args.xenstored != "embedded":
        return "--xenstored (with --xend the xenstore is always real)"
    if args.inflight != 4:
        return "--inflight (with --xend each disk has one write in flight)"
    if args.precopy != 1.0:
        return "--precopy (with --xend the harness's xc_save sends the image)"
    return None


def run_xend_command(args, progress_factory) -> int:
    """``rehearse --xend PATH``: ``args`` as parsed by rehearse's parser;
    ``progress_factory(args, total)`` makes its progress line."""
    from fastmig_tools.verify import preflight
    from fastmig_tools.verify.patchsets import UnknownTree, compare_patch
    from fastmig_tools.rehearse.sweep import parse_sweep
    from fastmig_tools.rehearse.scenario import ScenarioError
    tree = Path(args.xend).resolve()
    if args.list_faults:
        if args.json:
            json.dump({name: what for name, (what, _how) in XEND_FAULTS.items()},
                      sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write("".join("%-22s %s\n" % (name, what) for name, (what, _h)
                                     in XEND_FAULTS.items()))
        return 0
    problem = _defaults_only(args)
    if problem:
        return _fail("%s does not apply to the real xend" % problem)
    try:
        preflight.check_tree(tree)
        preflight.check_environment()
    except preflight.Unavailable as exc:
        return _fail(str(exc))
    policies = args.policies
    try:
        for policy in policies:
            if policy in ("patch2008", "xen41"):
                compare_patch(policy, tree)
        sweep = [parse_sweep(spec) for spec in args.sweep]
    except (UnknownTree, ScenarioError) as exc:
        return _fail(str(exc))
    for name, values in sweep:
        if name not in XEND_SWEEPABLE:
            return _fail("--sweep %s: with --xend only %s" % (name, ", ".join(XEND_SWEEPABLE)))
        if name == "backend" and not set(values) <= set(XEND_BACKENDS):
            return _fail("--sweep backend: the harness has %s" % ", ".join(XEND_BACKENDS))
    if args.backend not in XEND_BACKENDS:
        return _fail("--backend %s: the harness has %s" % (args.backend,
                                                          ", ".join(XEND_BACKENDS)))
    base = XendPoint(memory_gb=args.memory, destroy_per_gb=args.destroy_per_gb,
                     devices=args.devices, slow_write_ms=args.slow_write or None,
                     backend=args.backend,
                     fault="target-unpause-fails" if args.target_fails_after_image
                     else None,
                     drain_timeout=None if args.drain_timeout == 30.0
                     else args.drain_timeout)
    if args.matrix:
        return _matrix(args, tree, policies, base, progress_factory)
    if args.plot:
        from fastmig_tools.rehearse.plot import PlotUnavailable, check_plot_target
        try:
            check_plot_target(args.plot)
        except PlotUnavailable as exc:
            return _fail(str(exc))
    points = points_of(base, sweep)
    progress = progress_factory(args, args.runs * len(policies) * len(points))
    try:
        done = run_points(tree, policies, points, args.runs, progress)
    except KeyboardInterrupt:
        sys.stderr.write("\nxend-fastmig rehearse: interrupted; hosts stopped, "
                         "temporary files removed\n")
        return 130
    except Exception as exc:  # the harness could not run (HostError, ...)
        return _fail("the xend harness failed: %s" % str(exc).strip().splitlines()[0])
    if args.json:
        doc = {"schema": SCHEMA, "tree": str(tree), "scenario": base.knobs(),
               "runs": args.runs, "sweep": {n: list(v) for n, v in sweep},
               "points": [{"knobs": dict(changes), "policies": [
                   {"policy": p, "summary": summarize(rs),
                    "runs": [r.to_json() for r in rs]} for p, rs in by.items()]}
                   for changes, _point, by in done]}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("tree: %s\n" % tree)
        sys.stdout.write("\n\n".join(format_xend_point(point, by, args.runs)
                                     for _c, point, by in done) + "\n")
    if args.plot:
        from fastmig_tools.rehearse.plot import PlotUnavailable, plot_blackout
        try:
            plot_blackout(done, policies, args.plot, knobs=[n for n, _ in sweep],
                          title="Blackout on %s's real xend" % tree.name)
        except PlotUnavailable as exc:
            return _fail(str(exc))
        if not args.json:
            sys.stdout.write("plot written to %s\n" % args.plot)
    return 0


def _matrix(args, tree, policies, base, progress_factory) -> int:
    if args.sweep or args.plot:
        return _fail("--matrix runs its own scenarios: no --sweep or --plot with it")
    faults = args.faults or list(XEND_FAULTS)
    unknown = [f for f in faults if f not in XEND_FAULTS]
    if unknown:
        return _fail("--faults %s: with --xend the harness injects %s"
                     % (",".join(unknown), ", ".join(XEND_FAULTS)))
    # A small fixed scenario, as the model's matrix: 1 GB, one disk, a
    # quick write; fastmig's drain deadline short enough for hung-backend.
    base = base.replace(memory_gb=1.0, devices=1, slow_write_ms=None,
                        drain_timeout=base.drain_timeout or 3.0)
    progress = progress_factory(args, args.runs * len(policies) * len(faults))
    try:
        cells = run_xend_matrix(tree, faults, policies, args.runs, base, progress)
    except KeyboardInterrupt:
        sys.stderr.write("\nxend-fastmig rehearse: interrupted\n")
        return 130
    if args.json:
        doc = {"schema": SCHEMA + "+matrix", "tree": str(tree), "scenario": base.knobs(),
               "runs": args.runs,
               "faults": {f: XEND_FAULTS[f][0] for f in faults},
               "cells": [{"fault": f, "policy": p,
                          "violating_runs": sum(1 for r in cells[(f, p)] if violations(r)),
                          "runs": [dict(r.to_json(), violations=violations(r))
                                   for r in cells[(f, p)]]}
                         for f in faults for p in policies]}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("tree: %s; %s\n" % (tree, base.describe()))
        sys.stdout.write(format_xend_matrix(cells, faults, policies) + "\n")
    return 0
