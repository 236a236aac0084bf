"""Several runs and sweeps of the rehearsal, with a progress bar
(``progress.Progress``, importable from here too)."""
from __future__ import annotations

import itertools

from fastmig_tools.rehearse.progress import Progress
from fastmig_tools.rehearse.runner import run_once
from fastmig_tools.rehearse.scenario import (
    BACKENDS, LIMITS, Scenario, ScenarioError, parse_count, parse_memory,
    parse_milliseconds, parse_number)
from fastmig_tools.rehearse.stores import open_host_stores

__all__ = ["SWEEPABLE", "parse_sweep", "sweep_points", "run_matrix",
           "Progress"]


def _slow(text):
    ms = parse_milliseconds(text, *LIMITS["slow_write_ms"])
    return ms if ms > 0 else None


def _count(knob):
    return lambda text: parse_count(text, *LIMITS[knob])


def _number(knob):
    return lambda text: parse_number(text, *LIMITS[knob])


def _ms(knob):
    return lambda text: parse_milliseconds(text, *LIMITS[knob])


def _backend(text):
    if text not in BACKENDS:
        raise ScenarioError("unknown backend %r (one of %s)"
                            % (text, ", ".join(BACKENDS)))
    return text


# knob name on the command line → (Scenario field, parser)
SWEEPABLE = {
    "memory": ("memory_gb", parse_memory),
    "destroy-per-gb": ("destroy_per_gb", _number("destroy_per_gb")),
    "devices": ("devices", _count("devices")),
    "inflight": ("inflight", _count("inflight")),
    "slow-write": ("slow_write_ms", _slow),
    "backend": ("backend", _backend),
    "delay-median": ("delay_median_ms", _ms("delay_median_ms")),
}


def parse_sweep(spec: str) -> tuple[str, list]:
    """``memory=1G,2G`` → ("memory", [1.0, 2.0]); ScenarioError if bad."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not values.strip():
        raise ScenarioError("--sweep wants KNOB=V1,V2,... (got %r)" % spec)
    if name not in SWEEPABLE:
        raise ScenarioError("cannot sweep %r; sweepable knobs: %s"
                            % (name, ", ".join(sorted(SWEEPABLE))))
    parser = SWEEPABLE[name][1]
    try:
        parsed = [parser(v.strip()) for v in values.split(",") if v.strip()]
    except ScenarioError as exc:
        raise ScenarioError("--sweep %s: %s" % (name, exc)) from None
    if not parsed:
        raise ScenarioError("--sweep %s has no values" % name)
    return name, parsed


def sweep_points(base: Scenario, sweep: list[tuple[str, list]]):
    """Every combination: [(changes for display, scenario without policy)]."""
    names = [name for name, _ in sweep]
    points = []
    for combo in itertools.product(*[values for _, values in sweep]):
        changes = dict(zip(names, combo))
        fields = {SWEEPABLE[n][0]: v for n, v in changes.items()}
        scenario = base.replace(**fields)
        scenario.validate()
        points.append((changes, scenario))
    return points


def run_matrix(base: Scenario, policies, sweep, runs: int,
               progress: Progress | None = None, on_result=None):
    """Run every point × run × policy; returns [(changes, scenario,
    {policy: [RunResult]})].  Each run index uses its own seed, shared by
    the policies, so they see the same in-flight requests."""
    points = sweep_points(base, sweep)
    stores = None
    if base.xenstored == "real":
        stores = open_host_stores("real")
    try:
        out = []
        for changes, scenario in points:
            by_policy = {p: [] for p in policies}
            label = " ".join("%s=%s" % (k, _show(v))
                             for k, v in changes.items())
            for index in range(runs):
                for policy in policies:
                    if progress is not None:
                        progress.update(("%s %s" % (label, policy)).strip())
                    result = run_once(scenario.replace(
                        policy=policy, seed=base.seed + index), stores=stores)
                    by_policy[policy].append(result)
                    if on_result is not None:
                        on_result(result)
                    if progress is not None:
                        progress.step(("%s %s" % (label, policy)).strip())
            out.append((changes, scenario, by_policy))
        return out
    finally:
        if progress is not None:
            progress.close()
        if stores is not None:
            for store in stores:
                store.close()


def _show(value):
    if isinstance(value, float):
        return "%g" % value
    return str(value)
