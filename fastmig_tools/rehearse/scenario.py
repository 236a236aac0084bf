"""What one rehearsal run is made of: every knob, with its stated default.

The defaults and where they come from:

* ``destroy_per_gb`` = 0.6 s/GB: the time ``xc.domain_destroy`` takes to
  relinquish (and scrub) a domain's memory, as measured on later Xen
  (xen-devel, December 2014, msg00649: about ten minutes for a 1 TB
  guest).  Xen 3.1 itself was not measured; its hypercall was not
  preemptible, so it was no faster.
* ``precopy_seconds`` = 1.0 s: the live memory rounds while the guest still
  runs.  A fixed, modest figure on purpose: it never counts towards the
  blackout, and what the rehearsal compares is the handover after the
  image, so the rest of the migration is a fixed cost rather than a model
  of dirty-page rates.
* ``last_round_seconds`` = 30 ms: the stop-and-copy round after the suspend
  (inside the blackout for every policy alike).
* ``restore_seconds`` = 20 ms: the target's ``completeRestore`` and
  ``waitForDevices`` after its gate opened (inside the blackout alike).
* ``teardown_ms`` = 30 ms: from a classic backend's drain to udev's hotplug
  cleanup removing its directory (the classic drain signal).  Xen 3.1's own
  ``tools/examples/xen-hotplug-cleanup`` took 29-39 ms per run against a
  real xenstored here (5 runs: bash, its lock, several ``xenstore-*``
  processes; /work/shared/reference/xen31-handover-facts.md, section 10);
  a real dom0 adds udev's own latency on top, so 30 ms is a low estimate.
  A shutdown-request backend's ``shutdown-done`` is written by the kernel
  itself and does not wait for it.
* In-flight request delays: lognormal with a 5 ms median and sigma 0.8,
  capped at 50 ms, per request, from a seeded generator; ``slow_write_ms``
  adds one request that completes that long after the suspend (slow or
  failing-over storage).  ``Scenario`` has no slow write; the command's
  default adds one of 200 ms (see ``cli.DEFAULT_SLOW_WRITE_MS``).
"""
from __future__ import annotations

import dataclasses
import math
import random
import re

__all__ = [
    "POLICIES", "DEFAULT_POLICIES", "FASTMIG_POLICIES", "TEARDOWN_MS",
    "BACKENDS", "XENSTOREDS", "Scenario", "ScenarioError",
    "parse_memory", "parse_milliseconds", "InflightSpec",
    "MEMORY_LIMITS_GB", "MAX_DESTROY_SECONDS", "LIMITS", "format_size",
    "parse_number", "parse_count",
]

POLICIES = ("stock", "patch2008", "xen41", "fastmig", "fastmig-late")
# What the command runs unless --policies says otherwise: fastmig-late
# (fastmig with (xend-fast-migration-early-release no)) is there to be
# compared with fastmig, by name.
DEFAULT_POLICIES = ("stock", "patch2008", "xen41", "fastmig")
# The policies that run the project's own handover (the patched save).
FASTMIG_POLICIES = ("fastmig", "fastmig-late")
# Where Xen 3.1's hotplug cleanup took 29-39 ms per run (facts, section
# 10): the classic drain signal trails the drain by this much.
TEARDOWN_MS = 30.0
# "buggy": a kernel whose hotplug cleanup runs before its drain (the
# remove-before-drain fault; nothing can detect it).
BACKENDS = ("classic", "shutdown-request", "hung", "buggy")
DISK_CLASSES = ("vbd", "tap")
XENSTOREDS = ("embedded", "real")

DELAY_MEDIAN_MS = 5.0
DELAY_SIGMA = 0.8
DELAY_CAP_MS = 50.0


class ScenarioError(ValueError):
    """A knob has a value the rehearsal cannot run with."""


# Guest memory the command accepts.  16 MB: less than any PV Linux guest
# boots with.  1 TB: the largest guest whose destroy time was measured
# (about ten minutes, xen-devel 2014-12 msg00649); at 0.6 s/GB stock's
# run then lasts as long as that destroy.
MEMORY_LIMITS_GB = (16.0 / 1024, 1024.0)
# The command's bounds on its other numbers (--help states each):
# destroy-per-gb up to 10 s/GB (16x the 0.6 measured); devices 1..16
# (xvda..xvdp); in flight 0..32 (a 3.1 blkif ring holds 32 requests);
# a slow write or a precopy up to 5 minutes and a drain timeout of
# 10 ms..5 minutes (a run's own deadline is 5 minutes); request delays'
# median up to 1 s; runs 1..100 per policy and point (more is a
# benchmark's job: benchmarks/bench_policies.py).
LIMITS = {
    "destroy_per_gb": (0.0, 10.0),
    "devices": (1, 16),
    "inflight": (0, 32),
    "slow_write_ms": (0.0, 300000.0),
    "precopy_ms": (0.0, 300000.0),
    "drain_timeout_ms": (10.0, 300000.0),
    "delay_median_ms": (0.0, 1000.0),
    "teardown_ms": (0.0, 10000.0),
    "last_round_ms": (0.0, 300000.0),
    "runs": (1, 100),
}
# One destroy (memory x destroy-per-gb) may take at most an hour: a run
# waits for it, and a run's deadline grows with it (runner).
MAX_DESTROY_SECONDS = 3600.0


def format_size(gb: float) -> str:
    """1024.0 → "1T", 0.015625 → "16M", 2.0 → "2G"."""
    if gb >= 1024:
        return "%gT" % (gb / 1024)
    if gb < 1:
        return "%gM" % (gb * 1024)
    return "%gG" % gb


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.I)
_SCALE_GB = {"": 1.0, "K": 1.0 / 1024 ** 2, "M": 1.0 / 1024, "G": 1.0,
             "T": 1024.0}


def parse_memory(text: str) -> float:
    """``"2G"``, ``"512M"``, ``"1.5"`` (GB) → gigabytes (float, > 0)."""
    match = _MEMORY.match(str(text))
    if match is None:
        raise ScenarioError("memory %r is not a size like 512M, 2G or 1.5G"
                            % text)
    gb = float(match.group(1)) * _SCALE_GB[match.group(2).upper()]
    if gb <= 0:
        raise ScenarioError("memory must be more than zero, not %r" % text)
    low, high = MEMORY_LIMITS_GB
    if not low <= gb <= high:
        raise ScenarioError("memory %s is outside %s..%s (below: no guest "
                            "boots; above: no measured destroy time)"
                            % (str(text).strip(), format_size(low),
                               format_size(high)))
    return gb


def parse_milliseconds(text: str, low: float = 0.0,
                       high: float | None = None) -> float:
    """``"250"``, ``"250ms"``, ``"2.5s"`` → milliseconds (float, >= 0,
    and within ``low``..``high`` when given; 0 is always allowed where it
    means "none")."""
    value = str(text).strip().lower()
    scale = 1.0
    if value.endswith("ms"):
        value = value[:-2]
    elif value.endswith("s"):
        value, scale = value[:-1], 1000.0
    try:
        ms = float(value) * scale
    except ValueError:
        raise ScenarioError("%r is not a duration like 250, 250ms or 2.5s"
                            % text) from None
    if not ms >= 0 or math.isinf(ms):
        raise ScenarioError("a duration must be zero or more, not %r" % text)
    if (ms < low and ms != 0) or (high is not None and ms > high):
        raise ScenarioError("%s is outside %s..%s" % (
            str(text).strip(), _duration(low), _duration(high)))
    return ms


def parse_number(text: str, low: float, high: float) -> float:
    """A plain number within ``low``..``high``; ScenarioError if not."""
    try:
        value = float(text)
    except ValueError:
        raise ScenarioError("%r is not a number" % text) from None
    if not low <= value <= high:
        raise ScenarioError("%s is outside %g..%g" % (str(text).strip(),
                                                      low, high))
    return value


def parse_count(text: str, low: int, high: int) -> int:
    """A whole number within ``low``..``high``; ScenarioError if not."""
    try:
        value = int(text)
    except ValueError:
        raise ScenarioError("%r is not a whole number" % text) from None
    if not low <= value <= high:
        raise ScenarioError("%d is not between %d and %d"
                            % (value, low, high))
    return value


def _duration(ms: float | None) -> str:
    if ms is None:
        return "any"
    if ms >= 1000:
        return "%gs" % (ms / 1000.0)
    return "%gms" % ms


@dataclasses.dataclass(frozen=True)
class InflightSpec:
    """One request in flight at the suspend: device index, slot, delay."""

    device: int
    slot: int
    delay: float       # seconds after the suspend it completes

    @property
    def name(self) -> str:
        return "dev%d/req%d" % (self.device, self.slot)


@dataclasses.dataclass
class Scenario:
    """Every knob of one run.  ``validate()`` says what is wrong, if any."""

    policy: str = "fastmig"
    memory_gb: float = 2.0
    destroy_per_gb: float = 0.6
    devices: int = 2
    inflight: int = 4
    slow_write_ms: float | None = None
    backend: str = "classic"
    xenstored: str = "embedded"
    target_fails_after_image: bool = False
    precopy_seconds: float = 1.0
    last_round_seconds: float = 0.030
    restore_seconds: float = 0.020
    image_kib: int = 256
    delay_median_ms: float = DELAY_MEDIAN_MS
    delay_sigma: float = DELAY_SIGMA
    delay_cap_ms: float = DELAY_CAP_MS
    drain_timeout: float = 30.0
    verdict_timeout: float = 120.0
    seed: int = 1
    # Deadline for a whole run (every wait inside has its own, shorter).
    run_timeout: float = 300.0
    # catalogue.FAULTS name (None: no fault) and its @when value.
    fault: str | None = None
    fault_when: float | None = None
    disk_class: str = "vbd"
    suspend_cancel: bool = False
    hvm: bool = False
    # From a classic backend's drain to its directory's removal (udev's
    # hotplug cleanup); see the module's docstring.
    teardown_ms: float = TEARDOWN_MS
    # The source's xc_save fails in the last memory round (after the
    # suspend, half-way through the round): save's failure path runs.
    xc_save_fails: bool = False

    @property
    def early_release(self) -> bool:
        """(xend-fast-migration-early-release): off for fastmig-late."""
        return self.policy != "fastmig-late"

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise ScenarioError("unknown policy %r (one of %s)"
                                % (self.policy, ", ".join(POLICIES)))
        if self.backend not in BACKENDS:
            raise ScenarioError("unknown backend %r (one of %s)"
                                % (self.backend, ", ".join(BACKENDS)))
        if self.xenstored not in XENSTOREDS:
            raise ScenarioError("unknown xenstored %r (one of %s)"
                                % (self.xenstored, ", ".join(XENSTOREDS)))
        if not self.memory_gb > 0:
            raise ScenarioError("memory must be more than zero")
        if self.destroy_per_gb < 0:
            raise ScenarioError("--destroy-per-gb must be zero or more")
        if self.destroy_seconds > MAX_DESTROY_SECONDS:
            raise ScenarioError(
                "destroying %s at %g s/GB would take %.0f s per run; at "
                "most %.0f s (lower --memory or --destroy-per-gb)"
                % (format_size(self.memory_gb), self.destroy_per_gb,
                   self.destroy_seconds, MAX_DESTROY_SECONDS))
        if not 0 <= self.devices <= 16:
            raise ScenarioError("--devices must be between 0 and 16")
        if self.disk_class not in DISK_CLASSES:
            raise ScenarioError("unknown disk class %r" % self.disk_class)
        if self.fault is not None:
            from fastmig_tools.rehearse.catalogue import FAULTS
            if self.fault not in FAULTS:
                raise ScenarioError("unknown fault %r" % self.fault)
        if not 0 <= self.inflight <= 32:
            raise ScenarioError("--inflight must be between 0 and 32 "
                                "(a 3.1 blkif ring holds 32 requests)")
        for name in ("precopy_seconds", "last_round_seconds",
                     "restore_seconds", "delay_median_ms", "delay_cap_ms",
                     "teardown_ms"):
            if getattr(self, name) < 0:
                raise ScenarioError("%s must be zero or more" % name)
        if self.slow_write_ms is not None and self.slow_write_ms < 0:
            raise ScenarioError("--slow-write must be zero or more")
        if not self.drain_timeout > 0 or not self.verdict_timeout > 0:
            raise ScenarioError("timeouts must be more than zero")
        if not 1 <= self.image_kib <= 65536:
            raise ScenarioError("image size must be 1 KiB .. 64 MiB")

    @property
    def destroy_seconds(self) -> float:
        return self.memory_gb * self.destroy_per_gb

    def inflight_requests(self) -> list[InflightSpec]:
        """The requests in flight at the suspend, drawn from ``seed``.

        Each device has ``inflight`` requests with delays lognormal around
        ``delay_median_ms`` (capped at ``delay_cap_ms``); the slow write, if
        any, is one more request on device 0.
        """
        rng = random.Random(self.seed)
        mu = math.log(max(self.delay_median_ms, 1e-6) / 1000.0)
        cap = self.delay_cap_ms / 1000.0
        specs = []
        for device in range(self.devices):
            for slot in range(self.inflight):
                delay = min(rng.lognormvariate(mu, self.delay_sigma), cap)
                specs.append(InflightSpec(device, slot, delay))
        if self.slow_write_ms is not None and self.devices > 0:
            # On a device drawn from the seed: a drain that waits for the
            # first device only must not pass.
            specs.append(InflightSpec(rng.randrange(self.devices),
                                      self.inflight,
                                      self.slow_write_ms / 1000.0))
        return specs

    def knobs(self) -> dict:
        """The scenario as plain data (for --json)."""
        knobs = dataclasses.asdict(self)
        knobs["early_release"] = self.early_release
        return knobs

    def replace(self, **changes) -> "Scenario":
        return dataclasses.replace(self, **changes)
