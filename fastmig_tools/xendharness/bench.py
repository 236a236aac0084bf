"""One early-release benchmark run on the real-xend harness
(``benchmarks/bench_early_release.py --harness xend``).

``run(policy, last_round_ms, slowest_ms, teardown_ms, seed)`` live-migrates
a fresh PV guest (256 MB, one disk) between two harness hosts running the
tree's real xend and returns a ``XendBenchRun`` with the fields of the
rehearsal's ``RunResult`` the benchmark reads, defined as that model
defines them (fastmig_tools/rehearse/runner.py):

* ``blackout_ms``: the guest's suspend at the source (its
  SCHEDOP_shutdown(suspend)) -> the target's domain_unpause of it;
* ``limit_ms`` = max(image sent, last drain confirmed) - suspend +
  ``restore_ms``, the target's work after its EOF (unpause - EOF);
  ``over_limit_ms`` = blackout - limit.  Both None unless the guest runs
  at the target and every source block backend confirmed its drain;
* image sent: the stand-in xc_save's ``sent`` (its last byte written);
  a drain confirmed: the source backend's ``shutdown-done``, or, for a
  classic blkback, its directory removed by the tree's
  ``xen-hotplug-cleanup``, stamped when the backend process's own watch
  event for it arrived (backend.py's ``gone``: as early as the source
  xend's watch can see it); the target's EOF:
  when its restore thread's ``os.read(fd, 1)`` met the end of the stream
  (the harness's ``Timings.gate_open``, stamped by hostd.py's
  ``_StreamEnds``; completeRestore's store writes come after it, in the
  target's work after its EOF).

Policies: ``fastmig`` (the series), ``fastmig-late`` (the series with
``(xend-fast-migration-early-release no)``) and ``stock`` (the tree as it
is); both hosts run the policy.

The cell's knobs:

* ``last_round_ms``: the stand-in xc_save spends at least this between
  xend's ``done`` (the guest suspended) and the end of the image
  (helpers.py's ``last_round_seconds``);
* ``slowest_ms``: the disk's in-flight write lands this long after the
  suspend (``arm_inflight``); 0 arms none.  Strictly, after its dispatch:
  the guest kernel puts it on the ring just before its suspend hypercall,
  typically a millisecond or less earlier, more on a loaded machine;
* ``teardown_ms`` is IGNORED: the teardown is the tree's own hotplug
  scripts (``block remove`` and ``xen-hotplug-cleanup``) as the backend
  runs them; what they took is reported as ``teardown_measured_ms``;
* ``seed`` only names the guest (nothing here is random).

The hosts are expensive (two xends and two xenstoreds per pair): one pair
per (tree, policy) is started on first use and reused for
``RUNS_PER_PAIR`` runs of that policy (see there why not more).  Each run creates its own guest, migrates it, destroys it at
the target and then waits until ``pair.leftovers()`` is empty; a run that
leaves anything behind records it in ``leftovers`` / ``violations`` and
its pair is stopped and replaced.  What the tree's own xend leaves
(/vm/<uuid> at the source, 3.1.0's console backend directories: see
``_xend_leaves``) is expected, so not counted, and removed after the run
so that the reused stores stay as small as fresh ones.  Both hosts' hypervisor-call logs are
cleared before each run so that their size does not grow with the runs.

``configure(tree=..., memory_mb=..., disks=..., destroy_seconds_per_gb=...,
precopy_seconds=...)``
changes the defaults (tree /work/shared/xen/3.1.0 or the one
$XEND_FASTMIG_BENCH_TREE names); ``close()`` stops every pair.
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from fastmig_tools.xendharness.disk import check_images

__all__ = ["POLICIES", "XendBenchRun", "run", "configure", "settings",
           "close"]

POLICIES = ("fastmig", "fastmig-late", "stock")
DEFAULT_TREE = os.environ.get("XEND_FASTMIG_BENCH_TREE", "/work/shared/xen/3.1.0")

AT_TARGET = "running at the target"
RESUMED = "resumed at the source"
LOST = "lost"
TWICE = "running twice"

_SETTINGS = {"tree": DEFAULT_TREE, "memory_mb": 256, "disks": 1,
             # stock's destroy of 256 MB: 154 ms (xen-devel 2014-12 msg00649)
             "destroy_seconds_per_gb": 0.6,
             # The rounds before the suspend.  The target creates the
             # guest's devices when the stream begins and its hotplug
             # scripts take 60-120 ms here; a real pre-copy of 256 MB
             # takes longer (2 s at 1 Gb/s, 0.2 s at 10 Gb/s), so the
             # target's devices are ready before the suspend.  Without
             # it, that setup would run into the blackout, where no
             # real live migration has it.
             "precopy_seconds": 0.3}
_pairs: dict = {}
# Runs on one pair before it is replaced: the stand-in hypervisor never
# tells xenstored that a guest died, so every guest stays in its domain
# table, and its trace (which live_watches reads) logs the write-rate
# credit of each of them on every tick: on a pair reused for 250 runs
# the traces grew by gigabytes and every run got slower than the last.
RUNS_PER_PAIR = 20
_runs_on: dict = {}
_patch_dir = None


@dataclasses.dataclass
class XendBenchRun:
    """One run; times in ms after the suspend unless named otherwise."""

    policy: str
    tree: str
    last_round_ms: float
    slowest_ms: float
    seed: int
    outcome: str
    error: str | None
    blackout_ms: float | None
    limit_ms: float | None
    over_limit_ms: float | None
    gate_ms: float | None                 # image sent -> target EOF
    image_sent_ms: float | None
    drains_confirmed: list                # [backend path, how, ms]
    backends_confirmed_ms: float | None   # the last of them
    last_write_ms: float | None           # the last in-flight write landed
    released_ms: float | None             # the target's EOF
    unpaused_ms: float | None
    restore_ms: float | None              # unpause - EOF
    devices_released_ms: float | None     # first source backend saw its teardown
    teardown_measured_ms: float | None    # the source's remove + cleanup scripts
    teardown_ms_requested: float | None   # ignored (see the module's docstring)
    disk_clean: bool
    stale_blocks: list
    leftovers: dict
    violations: list
    seconds: float                        # wall time of the run

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["stale_blocks"] = [str(s) for s in self.stale_blocks]
        return out


def configure(**settings) -> None:
    """Change the defaults (tree, memory_mb, disks, destroy_seconds_per_gb);
    pairs already started keep theirs."""
    unknown = set(settings) - set(_SETTINGS)
    if unknown:
        raise TypeError("unknown settings: %s" % ", ".join(sorted(unknown)))
    _SETTINGS.update((k, v) for k, v in settings.items() if v is not None)


def settings() -> dict:
    """The defaults runs use now (see ``configure``)."""
    return dict(_SETTINGS)


def close() -> None:
    """Stop every pair this module started."""
    global _patch_dir
    while _pairs:
        _key, pair = _pairs.popitem()
        pair.stop()
    if _patch_dir is not None:
        shutil.rmtree(_patch_dir, ignore_errors=True)
        _patch_dir = None


atexit.register(close)


def _pair(policy: str):
    global _patch_dir
    key = (str(_SETTINGS["tree"]), policy, _SETTINGS["destroy_seconds_per_gb"])
    pair = _pairs.get(key)
    if pair is not None and _runs_on.get(key, 0) >= RUNS_PER_PAIR:
        _drop(policy)
        pair = None
    if pair is not None:
        _runs_on[key] += 1
        return pair
    from fastmig_tools.verify.patchsets import harness_tree, variant_patches
    from fastmig_tools.xendharness.harness import TwoHosts
    if policy not in POLICIES:
        raise ValueError("unknown policy %r (one of %s)" % (policy, ", ".join(POLICIES)))
    if _patch_dir is None:
        _patch_dir = Path(tempfile.mkdtemp(prefix="xend-fastmig-bench-"))
    tree = harness_tree(Path(_SETTINGS["tree"]))
    patches = variant_patches("stock" if policy == "stock" else "fastmig", tree,
                              _patch_dir)
    config = {}
    if policy == "fastmig-late":
        config["xend-fast-migration-early-release"] = "no"
    pair = TwoHosts(str(tree), patches=patches, xend_config=config,
                    destroy_seconds_per_gb=_SETTINGS["destroy_seconds_per_gb"])
    pair.start()
    _pairs[key] = pair
    _runs_on[key] = 1
    return pair


def _drop(policy: str) -> None:
    for key in [k for k in _pairs if k[1] == policy]:
        pair = _pairs.pop(key)
        pair.stop()


def _ms(t, suspend):
    if t is None or suspend is None:
        return None
    return (t - suspend) * 1000.0


def _outcome(pair, result) -> str:
    at_target = result.target_domid is not None
    at_source = False
    if pair.source.xend_alive:
        at_source = any(not d["paused"] and not d["shutdown"] and not d["dying"]
                        for d in pair.domains(pair.source))
    if at_target and at_source:
        return TWICE
    return AT_TARGET if at_target else RESUMED if at_source else LOST


def _source_backends(events, domid: int) -> dict:
    """{backend path: [its events]} for the source domain's block devices."""
    prefixes = tuple("/local/domain/0/backend/%s/%d/" % (cls, domid)
                     for cls in ("vbd", "tap"))
    out: dict = {}
    for e in events:
        path = e.get("backend") or ""
        if path.startswith(prefixes):
            out.setdefault(path, []).append(e)
    return out


def _drain_confirmations(backends: dict, suspend):
    """[path, how, ms] per backend, and the last one's time (None unless
    every backend confirmed)."""
    drains, times = [], []
    for path, events in sorted(backends.items()):
        done = [e["t"] for e in events if e["event"] == "shutdown-done"]
        # "gone": the backend's own watch saw its directory go; "removed"
        # (the scripts exited) only if that watch event was missed.
        gone = [e["seen"] for e in events if e["event"] == "gone"] or \
            [e["t"] for e in events if e["event"] == "removed" and not e.get("present")]
        if done:
            drains.append([path, "shutdown-done", _ms(min(done), suspend)])
            times.append(min(done))
        elif gone:
            drains.append([path, "backend-gone", _ms(min(gone), suspend)])
            times.append(min(gone))
        else:
            times.append(None)
    last = max(times) if times and None not in times else None
    return drains, last


def _teardown_seconds(backends: dict):
    """The longest backend's remove + cleanup script time."""
    per = [sum(e["seconds"] for e in events if e["event"] == "script"
               and (e.get("command") == "remove"
                    or e.get("script") == "xen-hotplug-cleanup"))
           for events in backends.values()]
    return max(per) if per else None


def _violations(outcome, error, verdict, leftovers) -> list:
    out = []
    if not verdict.clean:
        out.append("disk CORRUPT (%d stale)" % len(verdict.stale))
    if outcome == LOST:
        out.append("guest lost")
    if outcome == TWICE:
        out.append("guest running twice")
    if error is None and outcome != AT_TARGET:
        out.append("xm migrate reported success, the guest is not at the target")
    if error is not None and outcome == AT_TARGET:
        out.append("xm migrate failed, the guest runs at the target")
    if leftovers:
        out.append("leftovers: %s" % leftovers)
    return out


def _xend_leaves(guest, source_domid, target_domid) -> dict:
    """What the tree's own xend leaves of a guest migrated and then
    destroyed at the target (tests/xend/test_migration.py's
    ``stock_leftovers``: save's destroyDomain never removes /vm/<uuid>;
    3.1.0 keeps the console backend directory, at both ends), as
    {(host name, leftovers() entry): store path}."""
    console = "/local/domain/0/backend/console/%d/0"
    leaves = {("source", "vm dir /vm/%s" % guest.uuid): "/vm/%s" % guest.uuid,
              ("source", "backend " + console % source_domid):
                  console % source_domid}
    if target_domid is not None:
        leaves[("target", "backend " + console % target_domid)] = \
            console % target_domid
    return leaves


def _clean_up(pair, expected: dict, timeout: float = 15.0) -> dict:
    """Destroy what is left of the run's guest, wait until both hosts are
    back to what the tree's xend itself leaves (``expected``, see
    ``_xend_leaves``), then remove that too, so that a reused store does
    not grow with the runs (``leftovers()`` walks it all).  The unexpected
    leftovers ({} when there are none)."""
    for host in pair.hosts():
        if not host.xend_alive:
            continue
        for d in pair.domains(host):
            if not d["dying"]:
                try:
                    host.call("destroy", domid=d["domid"])
                except Exception:
                    pass
    deadline = time.time() + timeout
    while True:
        found = pair.leftovers()
        left = {}
        for host, problems in found.items():
            problems = [p for p in problems if (host, p) not in expected]
            if problems:
                left[host] = problems
        busy = any(pair.domains(h) for h in pair.hosts() if h.xend_alive)
        if (not left and not busy) or time.time() > deadline:
            break
        time.sleep(0.05)
    for host in pair.hosts():
        if host.xenstored is None:
            continue
        present = set(found.get(host.name, []))
        paths = [path for (name, entry), path in expected.items()
                 if name == host.name and entry in present]
        if paths:
            h = host.xs()
            try:
                for path in paths:
                    h.rm("", path)
            finally:
                h.close()
    return left


def run(policy: str, last_round_ms: float, slowest_ms: float,
        teardown_ms: float | None = None, seed: int = 1) -> XendBenchRun:
    """One live migration of a fresh guest under ``policy`` (see the
    module's docstring)."""
    started = time.time()
    pair = _pair(policy)
    source = pair.source
    source.call("forget_xc_calls")
    pair.target.call("forget_xc_calls")
    source.set_helper_faults(last_round_seconds=last_round_ms / 1000.0,
                             precopy_seconds=_SETTINGS["precopy_seconds"])
    guest = pair.create_guest(disks=_SETTINGS["disks"],
                              memory_mb=_SETTINGS["memory_mb"],
                              name="bench-%s-%d-%s" % (policy, seed,
                                                       os.urandom(3).hex()))
    source_domid = guest.domid
    images = list(guest.disks)
    if slowest_ms and _SETTINGS["disks"]:
        pair.arm_inflight(guest, delay=slowest_ms / 1000.0)
    destroy = _SETTINGS["memory_mb"] / 1024.0 * _SETTINGS["destroy_seconds_per_gb"]
    result = pair.migrate(guest, live=True, settle_timeout=45 + 2 * destroy)
    t = result.timings
    outcome = _outcome(pair, result)
    events = source.backend_events()
    target_events = pair.target.backend_events()
    backends = _source_backends(events, source_domid)
    suspend = t.suspended
    drains, confirmed = _drain_confirmations(backends, suspend)
    landed = [e["t"] for es in backends.values() for e in es if e["event"] == "landed"]
    seen = [e["t"] for es in backends.values() for e in es
            if e["event"] in ("unregister", "shutdown-done")]
    restore = None
    if t.unpaused is not None and t.gate_open is not None:
        restore = (t.unpaused - t.gate_open) * 1000.0
    blackout = _ms(t.unpaused, suspend) if outcome in (AT_TARGET, TWICE) else None
    limit = over = None
    if (outcome == AT_TARGET and restore is not None and suspend is not None
            and t.image_sent is not None
            and (confirmed is not None or not backends)):
        ready = t.image_sent if confirmed is None else max(t.image_sent, confirmed)
        limit = (ready - suspend) * 1000.0 + restore
        over = blackout - limit
    verdict = check_images(images, events + target_events)
    teardown = _teardown_seconds(backends)
    error = result.error.strip().splitlines()[0][-240:] if result.error else None
    leftovers = _clean_up(pair, _xend_leaves(guest, source_domid,
                                             result.target_domid))
    if leftovers or not (source.xend_alive and pair.target.xend_alive):
        _drop(policy)          # the next run starts on a fresh pair
    return XendBenchRun(
        policy=policy, tree=str(_SETTINGS["tree"]), last_round_ms=last_round_ms,
        slowest_ms=slowest_ms, seed=seed, outcome=outcome, error=error,
        blackout_ms=blackout, limit_ms=limit, over_limit_ms=over,
        gate_ms=None if t.gate is None else t.gate * 1000.0,
        image_sent_ms=_ms(t.image_sent, suspend), drains_confirmed=drains,
        backends_confirmed_ms=_ms(confirmed, suspend),
        last_write_ms=_ms(max(landed), suspend) if landed else None,
        released_ms=_ms(t.gate_open, suspend), unpaused_ms=_ms(t.unpaused, suspend),
        restore_ms=restore,
        devices_released_ms=_ms(min(seen), suspend) if seen else None,
        teardown_measured_ms=None if teardown is None else teardown * 1000.0,
        teardown_ms_requested=teardown_ms,
        disk_clean=verdict.clean, stale_blocks=list(verdict.stale),
        leftovers=leftovers,
        violations=_violations(outcome, error, verdict, leftovers),
        seconds=time.time() - started)
