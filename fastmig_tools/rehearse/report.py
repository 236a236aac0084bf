"""Summaries, the per-policy table, and the --json document."""
from __future__ import annotations

import collections
import statistics

from fastmig_tools.rehearse.scenario import FASTMIG_POLICIES
from fastmig_tools.rehearse.stores import STORE_NAMES

__all__ = ["summarize", "format_point", "json_document", "SCHEMA",
           "COLUMNS", "describe_knobs"]

SCHEMA = "xend-fastmig-rehearse/1"

COLUMNS = (
    ("policy", "policy"),
    ("blackout", "blackout"),
    ("gate", "gate"),
    ("after write", "release after last write"),
    ("xs ops", "xenstore ops"),
    ("drain confirmed", "how the source learnt the backends drained"),
    ("disk", "disk"),
    ("guest", "guest outcome"),
)


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "n": len(values)}


def summarize(results) -> dict:
    """Medians and extremes of a policy's runs at one point."""
    outcomes = collections.Counter(r.outcome for r in results)
    return {
        "runs": len(results),
        "blackout_ms": _stats(r.blackout_ms for r in results),
        "gate_ms": _stats(r.gate_ms for r in results),
        "release_after_last_write_ms": _stats(
            r.release_after_last_write_ms for r in results),
        "xs_ops": _stats(r.xs_ops for r in results),
        "corrupt_runs": sum(1 for r in results if not r.disk_clean),
        "stale_blocks": sum(len(r.stale_blocks) for r in results),
        "outcomes": dict(outcomes),
        "errors": [r.error for r in results if r.error],
        "drain": _drain(results),
    }


def _ms(value: float) -> str:
    if abs(value) >= 1000:
        return "%.2f s" % (value / 1000.0)
    return "%.1f ms" % value


def _cell(stats, runs, signed=False) -> str:
    if stats is None:
        return "-"
    fmt = (lambda v: ("+" if v >= 0 else "") + _ms(v)) if signed else _ms
    if runs == 1 or stats["n"] == 1:
        return fmt(stats["median"])
    return "%s (%s..%s)" % (fmt(stats["median"]), fmt(stats["min"]),
                            fmt(stats["max"]))


def _count_cell(stats, runs) -> str:
    if stats is None:
        return "-"
    if runs == 1 or stats["n"] == 1:
        return "%d" % stats["median"]
    return "%g (%d..%d)" % (stats["median"], stats["min"], stats["max"])


def drain_text(result) -> str:
    """How one run's source learnt that the block backends drained."""
    if result.policy not in FASTMIG_POLICIES:
        return "not waited for"
    if result.handover_path is None:
        return "-"                    # no handover (the run failed before)
    hows = collections.Counter(how for _dev, how, _ms
                               in result.drain_confirmations)
    confirmed = ", ".join("%s x%d" % (how, count) if count > 1 else how
                          for how, count in sorted(hows.items()))
    if result.handover_path == "fast":
        if not hows:
            return "no block devices" if not result.scenario.get(
                "devices") else "-"
        return confirmed
    return "stock order, " + (confirmed or "none confirmed")


def _drain(results) -> str:
    texts = collections.Counter(drain_text(r) for r in results)
    if len(texts) == 1:
        return next(iter(texts))
    return ", ".join("%s (%d/%d)" % (text, count, len(results))
                     for text, count in texts.most_common())


def _disk(summary) -> str:
    if summary["corrupt_runs"] == 0:
        return "clean"
    if summary["runs"] == 1:
        return "CORRUPT (%d stale)" % summary["stale_blocks"]
    return "CORRUPT in %d/%d runs" % (summary["corrupt_runs"],
                                       summary["runs"])


def _outcome(summary) -> str:
    outcomes = summary["outcomes"]
    if len(outcomes) == 1:
        (name, count), = outcomes.items()
        return name if summary["runs"] == 1 else "%s (%d/%d)" % (
            name, count, summary["runs"])
    return ", ".join("%s %d/%d" % (name, count, summary["runs"])
                     for name, count in sorted(outcomes.items()))


def describe_knobs(scenario) -> str:
    slow = ("one slow write of %s" % _ms(scenario.slow_write_ms)
            if scenario.slow_write_ms else "no slow write")
    return ("memory %s GB, destroy %.2f s/GB (%s), %d disk(s) x %d "
            "in flight + %s, %s blkback, %s%s"
            % (("%g" % scenario.memory_gb), scenario.destroy_per_gb,
               _ms(scenario.destroy_seconds * 1000), scenario.devices,
               scenario.inflight, slow, scenario.backend,
               STORE_NAMES[scenario.xenstored],
               ", target fails after the image"
               if scenario.target_fails_after_image else ""))


def format_point(scenario, by_policy, runs: int) -> str:
    """The table for one sweep point: one row per policy."""
    rows = [[title for title, _ in COLUMNS]]
    for policy, results in by_policy.items():
        summary = summarize(results)
        rows.append([
            policy,
            _cell(summary["blackout_ms"], runs) if summary["blackout_ms"]
            else "never back",
            _cell(summary["gate_ms"], runs),
            _cell(summary["release_after_last_write_ms"], runs, signed=True),
            _count_cell(summary["xs_ops"], runs),
            summary["drain"],
            _disk(summary),
            _outcome(summary),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [describe_knobs(scenario)
             + ("; %d runs each, median (min..max)" % runs if runs > 1
                else "")]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i])
                               for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    errors = []
    for policy, results in by_policy.items():
        for result in results:
            for problem in result.stale_blocks[:3]:
                errors.append("  %s: stale: %s" % (policy, problem))
            if result.error:
                errors.append("  %s: source error: %s" % (policy, result.error))
    seen = set()
    for line in errors:
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def json_document(base, sweep, runs, points) -> dict:
    """``points``: [(knob changes, scenario, {policy: [RunResult]})]."""
    return {
        "schema": SCHEMA,
        "scenario": base.knobs(),
        "runs": runs,
        "sweep": {name: list(values) for name, values in sweep},
        "points": [
            {"knobs": dict(changes),
             "policies": [
                 {"policy": policy, "summary": summarize(results),
                  "runs": [r.to_json() for r in results]}
                 for policy, results in by_policy.items()]}
            for changes, _scenario, by_policy in points],
    }
