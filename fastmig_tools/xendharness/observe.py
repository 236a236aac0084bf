"""A migration on the real-xend harness as the one oracle sees it.

``observe(pair, domid, result)`` reads what the two hosts recorded (each
stand-in hypervisor's calls, each dom0 block backend's events, the
helpers' events, xend's own log) and builds a
``fastmig_tools.invariants.Observation``; ``violations(...)`` is the
oracle's verdict on it.  What the harness cannot know by itself, what
stock 3.1 would do under the run's fault, the caller says
(``stock_ends_without_copy``): it knows which fault it armed, and the
tests prove it by running stock.

``outcome_of(pair, result)`` says where the guest ended, in the
words of every world's report (``fastmig_tools.invariants``' constants).
"""
from __future__ import annotations

import os
import re
import time

from fastmig_tools.invariants import (AT_TARGET, LOST, RESUMED, TWICE,
                                      Observation, check)

__all__ = ["observe", "violations", "outcome_of", "stock_leftovers",
           "LOUD"]

# The outcomes as reports for administrators print them: what must never
# happen stands out.
LOUD = {AT_TARGET: AT_TARGET, RESUMED: RESUMED,
        LOST: "LOST (no copy runs)", TWICE: "RUNNING TWICE"}

_OUTCOME = re.compile(r"fastmig: domain \d+ (fast|stock-order) handover: "
                      r".*; outcome ([^;\n]+)")


def outcome_of(pair, result) -> str:
    """Where the guest runs once the migration settled."""
    at_target = result is not None and result.target_domid is not None
    at_source = False
    if pair.source.xend_alive:
        at_source = any(not d["paused"] and not d["shutdown"]
                        and not d["dying"] for d in pair.domains(pair.source))
    if at_target and at_source:
        return TWICE
    if at_target:
        return AT_TARGET
    if at_source:
        return RESUMED
    return LOST


_HUNG_KEEPS = re.compile(r"^(backend /local/domain/0/backend/(vbd|tap)/|"
                         r"watch /local/domain/\d+/device/(vbd|tap)/)")
_CONSOLE = re.compile(r"^backend /local/domain/0/backend/console/\d+/0$")


def stock_leftovers(tree):
    """Whether a ``TwoHosts.leftovers`` string is what the tree's stock
    xend itself leaves after a guest left a host (a predicate): 3.1's
    ``destroyDomain`` never removes ``/vm/<uuid>``; 3.1.0 also keeps the
    console backend directory (be422ace19, in the 2007-06-08 tree, removes
    devices at save)."""
    is_310 = os.path.basename(str(tree).rstrip("/")) == "3.1.0"

    def stocks_own(problem):
        if problem.startswith("vm dir /vm/"):
            return True
        return is_310 and _CONSOLE.match(problem) is not None
    return stocks_own


def _leftovers(pair, keep, stocks_own, settle=5.0):
    """The leftovers, once the hotplug scripts still running for a kept
    domain's re-created devices had ``settle`` seconds to end."""
    deadline = time.time() + settle
    while True:
        found = ["%s: %s" % (host, p)
                 for host, problems in sorted(pair.leftovers(keep).items())
                 for p in problems if not stocks_own(p)]
        if not any(": process " in f for f in found) or \
                time.time() > deadline:
            return found
        time.sleep(0.1)


def _ok(call) -> bool:
    return "error" not in call


def _ran(calls, domid, after):
    """(start, end) intervals in which ``domid`` ran on a host after
    ``after``: from a successful resume or unpause to its destroy."""
    intervals = []
    start = None
    for c in calls:
        if c["t"] < after or not c["args"] or c["args"][0] != domid:
            continue
        if c["call"] in ("domain_resume", "domain_unpause") and _ok(c) \
                and start is None:
            start = c["t"]
        elif c["call"] == "domain_destroy" and start is not None:
            intervals.append((start, c["t"]))
            start = None
    if start is not None:
        intervals.append((start, None))
    return intervals


def _backend_facts(events, domid):
    """Per source backend of ``domid``: its drain confirmation and when its
    in-flight writes had all landed.

    The classic signal is the backend directory vanishing, inside the
    tree's ``xen-hotplug-cleanup``; the harness logs the script when it
    ends, so the confirmation is taken at the script's start, the earliest
    the directory can have gone (a release before it is certainly early).
    A ``shutdown-done`` is written right after the backend's drain: taken
    at the drain's end, for the same reason."""
    marker = "/%d/" % domid
    confirmed: dict = {}
    drained: dict = {}
    dispatched: dict = {}
    landed: dict = {}
    for e in events:
        path = e.get("backend") or ""
        if "/backend/" not in path or marker not in path:
            continue
        event = e["event"]
        if event == "probe":
            confirmed.setdefault(path, None)
        elif event == "drained":
            drained[path] = e["t"]
        elif event == "script" and e.get("script") == "xen-hotplug-cleanup" \
                and confirmed.get(path) is None:
            confirmed[path] = e["t"] - e.get("seconds", 0.0)
        elif event == "shutdown-done" and confirmed.get(path) is None:
            confirmed[path] = drained.get(path, e["t"])
        elif event == "dispatch":
            dispatched[path] = dispatched.get(path, 0) + 1
        elif event == "landed":
            landed.setdefault(path, []).append(e["t"])
    writes = {}
    for path, count in dispatched.items():
        times = landed.get(path, [])
        writes[path] = max(times) if len(times) >= count else None
    return confirmed, writes


def observe(pair, domid, result, *, stock_ends_without_copy=False,
            excused=None, stocks_own=None) -> Observation:
    """The Observation of migrating the source's ``domid`` (its domid
    before the migration) with ``result`` (``TwoHosts.migrate``'s).

    ``stocks_own``: a predicate on ``TwoHosts.leftovers``' strings, true
    for what the tree's own stock xend leaves too (``stock_leftovers``):
    not held against the run."""
    timings = result.timings
    suspended = timings.suspended or 0.0
    source_calls = pair.source.call("xc_calls") if pair.source.xend_alive \
        else []
    target_calls = pair.target.call("xc_calls") if pair.target.xend_alive \
        else []
    source_ran = [iv for iv in _ran(source_calls, domid, suspended)]
    target_ran = []
    for c in target_calls:
        if c["call"] == "domain_unpause" and _ok(c) and c["args"] \
                and c["args"][0] != 0:
            target_ran.extend(_ran(target_calls, c["args"][0], c["t"]))
            break
    destroyed = gone = None
    for c in source_calls:
        if c["call"] == "domain_destroy" and c["args"] and \
                c["args"][0] == domid:
            destroyed = c["t"]
            if _ok(c):
                gone = c["end"]
            break
    backend_events = pair.source.backend_events()
    confirmed, writes = _backend_facts(backend_events, domid)
    released_devices = [e["t"] for e in backend_events
                        if e["event"] in ("unregister", "shutdown-request")
                        and "/%d/" % domid in (e.get("backend") or "")]
    fast_resumes = [c["t"] for c in source_calls
                    if c["call"] == "domain_resume" and _ok(c)
                    and c["args"] and c["args"][0] == domid
                    and len(c["args"]) > 1 and c["args"][1]]
    log = pair.source.xend_log()
    reports = _OUTCOME.findall(log)
    target_log = pair.target.xend_log()
    said = None
    if "Restore failed" in target_log:
        said = "err"
    elif result.target_domid is not None:
        said = "ok"
    disk = pair.disk_verdict()
    keep = {}
    if result.target_domid is not None:
        keep[pair.target.name] = [result.target_domid]
    if any(end is None for _s, end in source_ran):
        keep[pair.source.name] = [domid]
    leftovers = _leftovers(pair, keep, stocks_own or (lambda _p: False))
    if pair.source.backend_flavour == "hung":
        # A hung kernel keeps its backend directory and its watch on the
        # frontend, under every toolstack: the kernel's, not xend's.
        leftovers = [f for f in leftovers
                     if not _HUNG_KEEPS.match(f.split(": ", 1)[1])
                     or not f.startswith(pair.source.name + ":")]
    return Observation(
        source_ran=source_ran,
        target_ran=target_ran,
        source_destroyed_at=destroyed,
        source_gone_at=gone,
        target_said=said,
        # Not recorded by the harness: the rule for stock's order then
        # assumes the (err ...) came too late to be seen.
        target_said_at=None,
        released_at=timings.gate_open,
        fast_path=bool(reports) and reports[-1][0] == "fast",
        drains_confirmed=confirmed,
        writes_landed=writes,
        stock_ends_without_copy=stock_ends_without_copy,
        stale_blocks=["%s block %d: newest v%s, found %s"
                      % (path, slot, want, got)
                      for path, slot, want, got, _landings in disk.stale],
        leftovers=leftovers,
        devices_released_at=min(released_devices) if released_devices
        else None,
        fast_resumed_at=fast_resumes,
        migration_failed=result.error is not None,
        reported_outcome=reports[-1][1].strip() if reports else None,
        excused=dict(excused or {}),
    )


def violations(pair, domid, result, **facts) -> list:
    """The oracle's violations of this migration, as strings."""
    return [str(v) for v in check(observe(pair, domid, result, **facts))]
