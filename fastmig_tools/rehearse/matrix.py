"""``xend-fastmig rehearse --matrix``: every named fault against every
policy, each run checked against the invariants of docs/design.md
("Invariants"; ``fastmig_tools.invariants``).

A cell is one (fault, policy): ``V/R outcome`` says that V of its R runs
broke at least one invariant, and how the guest ended (target = running at
the target, source = resumed at the source, LOST, TWICE = running twice).
The lines under the table name each violation.  The base scenario is small
on purpose (``MATRIX_BASE``): every cell takes well under a second unless a
policy itself waits (patch2008's 30 s loop).
"""
from __future__ import annotations

import collections
import dataclasses

from fastmig_tools.invariants import by_id

from fastmig_tools.rehearse.catalogue import (
    FAULTS, FaultError, apply_fault, faults_json)
from fastmig_tools.rehearse.runner import (AT_TARGET, LOST, RESUMED, TWICE,
                                           run_once)
from fastmig_tools.rehearse.scenario import DEFAULT_POLICIES, Scenario
from fastmig_tools.rehearse.stores import open_host_stores

__all__ = ["MATRIX_BASE", "Cell", "run_fault_matrix", "format_matrix",
           "matrix_json", "MATRIX_SCHEMA"]

MATRIX_SCHEMA = "xend-fastmig-matrix/1"

# 0.5 GB at 0.6 s/GB: a 300 ms destroy; short live rounds; drain and
# verdict deadlines of 1 s and 2 s, so that the fallbacks show quickly.
MATRIX_BASE = dict(memory_gb=0.5, destroy_per_gb=0.6, precopy_seconds=0.02,
                   devices=2, inflight=2, slow_write_ms=None,
                   drain_timeout=1.0, verdict_timeout=2.0, run_timeout=60.0)

_SHORT = {AT_TARGET: "target", RESUMED: "source", LOST: "LOST",
          TWICE: "TWICE"}


@dataclasses.dataclass
class Cell:
    fault: str
    policy: str
    runs: int = 0
    violating: int = 0
    outcomes: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)
    kinds: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)
    skipped: str | None = None

    def text(self) -> str:
        if self.skipped:
            return "n/a"
        outcome = "/".join(_SHORT.get(o, o) for o, _ in
                           self.outcomes.most_common())
        return "%d/%d %s" % (self.violating, self.runs, outcome)

    def to_json(self) -> dict:
        return {"fault": self.fault, "policy": self.policy,
                "runs": self.runs, "violating_runs": self.violating,
                "outcomes": dict(self.outcomes),
                "violations": dict(self.kinds), "skipped": self.skipped}


def run_fault_matrix(faults=None, policies=DEFAULT_POLICIES, runs: int = 1,
                     base: Scenario | None = None, seed: int = 1,
                     xenstored: str = "embedded", progress=None):
    """Run the matrix; returns ``{(fault, policy): Cell}`` in order."""
    faults = list(faults or FAULTS)
    if base is None:
        base = Scenario(**MATRIX_BASE)
    base = base.replace(seed=seed, xenstored=xenstored)
    stores = open_host_stores("real") if xenstored == "real" else None
    cells = {}
    try:
        for fault in faults:
            for policy in policies:
                cell = Cell(fault, policy)
                cells[(fault, policy)] = cell
                try:
                    scenario = apply_fault(base.replace(policy=policy),
                                           fault)
                    scenario.validate()
                except FaultError as exc:
                    cell.skipped = str(exc)
                    if progress is not None:
                        for _ in range(runs):
                            progress.step("%s %s (n/a)" % (fault, policy))
                    continue
                for index in range(runs):
                    if progress is not None:
                        progress.update("%s %s" % (fault, policy))
                    result = run_once(scenario.replace(seed=seed + index),
                                      stores=stores)
                    cell.runs += 1
                    cell.outcomes[result.outcome] += 1
                    if result.violations:
                        cell.violating += 1
                    for kind in result.violations:
                        cell.kinds[kind.split(":")[0]] += 1
                    if progress is not None:
                        progress.step("%s %s" % (fault, policy))
    finally:
        if progress is not None:
            progress.close()
        if stores is not None:
            for store in stores:
                store.close()
    return cells


def _totals(cells, policies):
    totals = {}
    for policy in policies:
        runs = violating = hidden = 0
        for (fault, p), cell in cells.items():
            if p != policy:
                continue
            if FAULTS[fault].undetectable:
                hidden += cell.violating
                continue
            runs += cell.runs
            violating += cell.violating
        totals[policy] = {"runs": runs, "violating_runs": violating,
                          "undetectable_violating_runs": hidden}
    return totals


def _id_number(inv_id):
    """I2 before I10."""
    return int(inv_id[1:])


def _by_id(item):
    return _id_number(item[0].split(" ")[0])


def format_matrix(cells, policies) -> str:
    faults = []
    for fault, _policy in cells:
        if fault not in faults:
            faults.append(fault)
    header = ["fault"] + list(policies)
    rows = [header]
    for fault in faults:
        name = fault + (" (undetectable)" if FAULTS[fault].undetectable
                        else "")
        rows.append([name] + [cells[(fault, p)].text() for p in policies])
    totals = _totals(cells, policies)
    rows.append(["violating runs / runs"] + [
        "%d/%d" % (totals[p]["violating_runs"], totals[p]["runs"])
        for p in policies])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["cell: runs breaking an invariant / runs, then the guest's "
             "outcome (target, source = resumed, LOST, TWICE)"]
    for index, row in enumerate(rows):
        if index == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.ljust(widths[i])
                               for i, c in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("violations:")
    seen = False
    name_width = max([22] + [len(fault) for fault in faults])
    for fault in faults:
        for policy in policies:
            cell = cells[(fault, policy)]
            for kind, count in sorted(cell.kinds.items(), key=_by_id):
                seen = True
                lines.append("  %-*s %-9s %dx %s" % (name_width, fault,
                                                     policy, count, kind))
    if not seen:
        lines.append("  none")
    broken = sorted(set(kind.split(" ")[0] for cell in cells.values()
                        for kind in cell.kinds), key=_id_number)
    if broken:
        lines.append("")
        lines.append("invariants broken (docs/design.md, \"Invariants\"):")
        for inv_id in broken:
            inv = by_id(inv_id)
            lines.append("  %s %s: %s" % (inv.id, inv.name, inv.promise))
    lines.append("")
    for policy in policies:
        t = totals[policy]
        lines.append("%s: %d runs, %d with invariant violations%s"
                     % (policy, t["runs"], t["violating_runs"],
                        " (+%d under the undetectable remove-before-drain)"
                        % t["undetectable_violating_runs"]
                        if t["undetectable_violating_runs"] else ""))
    return "\n".join(lines)


def matrix_json(cells, policies, runs, base_knobs) -> dict:
    return {
        "schema": MATRIX_SCHEMA,
        "scenario": base_knobs,
        "runs_per_cell": runs,
        "policies": list(policies),
        "faults": {name: entry for name, entry in faults_json().items()
                   if any(f == name for f, _ in cells)},
        "cells": [cell.to_json() for cell in cells.values()],
        "totals": _totals(cells, policies),
    }
