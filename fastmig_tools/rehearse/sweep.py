"""Several runs and sweeps of the rehearsal, with a progress bar."""
from __future__ import annotations

import itertools
import sys
import time

from fastmig_tools.rehearse.runner import run_once
from fastmig_tools.rehearse.scenario import (
    BACKENDS, Scenario, ScenarioError, parse_memory, parse_milliseconds)
from fastmig_tools.rehearse.stores import open_host_stores

__all__ = ["SWEEPABLE", "parse_sweep", "sweep_points", "run_matrix",
           "Progress"]


def _slow(text):
    ms = parse_milliseconds(text)
    return ms if ms > 0 else None


def _int(low, high):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise ScenarioError("%r is not a whole number" % text) from None
        if not low <= value <= high:
            raise ScenarioError("%d is not between %d and %d"
                                % (value, low, high))
        return value
    return parse


def _float(text):
    try:
        value = float(text)
    except ValueError:
        raise ScenarioError("%r is not a number" % text) from None
    if value < 0:
        raise ScenarioError("%r must be zero or more" % text)
    return value


def _backend(text):
    if text not in BACKENDS:
        raise ScenarioError("unknown backend %r (one of %s)"
                            % (text, ", ".join(BACKENDS)))
    return text


# knob name on the command line → (Scenario field, parser)
SWEEPABLE = {
    "memory": ("memory_gb", parse_memory),
    "destroy-per-gb": ("destroy_per_gb", _float),
    "devices": ("devices", _int(1, 16)),
    "inflight": ("inflight", _int(0, 32)),
    "slow-write": ("slow_write_ms", _slow),
    "backend": ("backend", _backend),
    "delay-median": ("delay_median_ms", parse_milliseconds),
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
    parsed = [parser(v.strip()) for v in values.split(",") if v.strip()]
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


class Progress:
    """A one-line progress bar on ``stream`` (stderr); silent if disabled."""

    def __init__(self, total: int, stream=None, enabled: bool = True,
                 width: int = 30):
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 0
        self.width = width
        self.started = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, label: str, final: bool = False) -> None:
        """Redraw the bar; off a terminal only completed steps are shown,
        one line each."""
        if not self.enabled or (not self.tty and not final):
            return
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = "rehearse [%s] %d/%d %5.1fs %s" % (
            bar, self.done, self.total, time.monotonic() - self.started, label)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def step(self, label: str) -> None:
        self.done += 1
        self.update(label, final=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


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
