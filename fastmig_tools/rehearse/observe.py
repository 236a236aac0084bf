"""A rehearsal run as the one oracle sees it.

``observe(result)`` turns a ``RunResult`` (its timeline, in ms after the
suspend) into a ``fastmig_tools.invariants.Observation``, adding what only
the rehearsal knows: what stock 3.1 would do under the run's fault (the
catalogue's ``stock_loses``), which invariants the fault itself forbids
(its ``excuses``), and the run's deadlines.  ``violations(result)`` is the
oracle's verdict as the strings the rehearsal prints and its --json gives.
"""
from __future__ import annotations

from fastmig_tools.invariants import Observation, check
from fastmig_tools.rehearse.catalogue import FAULTS, HANDOVER_SLACK

__all__ = ["observe", "violations", "budget_seconds"]


def _s(ms):
    return None if ms is None else ms / 1000.0


def _waited_out_the_budget(result) -> bool:
    """Released no earlier than one drain timeout after the suspend, and
    only after the source copy was destroyed (stock's order)."""
    released = result.released_ms
    destroyed = result.source_destroyed_ms
    return (released is not None and destroyed is not None
            and destroyed <= released
            and released >= result.scenario["drain_timeout"] * 1000.0)


def budget_seconds(result) -> float:
    """The source's deadlines after the image: one drain timeout (the fast
    wait and the stock-order fallback's share it: docs/design.md, step 5),
    the verdict, the destroy, and, for a resume after a release, the grace
    for the old backends to go; plus the seconds in which the process
    could not run (``stalled_ms``: a loaded machine's, not the
    handover's)."""
    from xend_fastmig.handover import RESUME_GRACE
    scenario = result.scenario
    resume = 0.0
    if result.handover is not None and " resume " in result.handover:
        resume = RESUME_GRACE
    return (scenario["drain_timeout"] + scenario["verdict_timeout"]
            + scenario["memory_gb"] * scenario["destroy_per_gb"]
            + resume + HANDOVER_SLACK + result.stalled_ms / 1000.0)


def observe(result) -> Observation:
    scenario = result.scenario
    spec = FAULTS.get(scenario.get("fault") or "none", FAULTS["none"])
    destroyed = _s(result.source_destroy_started_ms)
    source_ran = []
    if result.resumed_ms is not None:
        end = None
        if destroyed is not None and destroyed >= _s(result.resumed_ms):
            end = destroyed
        source_ran.append((_s(result.resumed_ms), end))
    excused = dict((inv_id, "the fault %s forbids it" % spec.name)
                   for inv_id in spec.excuses)
    # xend's own destroyDomain failing under an injected xenstore fault
    # leaves what stock (running that same code) leaves too.
    if result.destroy_failed and spec.store is not None:
        excused["I7"] = "xend's own destroyDomain failed under the fault"
    stale_excuse = None
    if spec.beyond_budget and _waited_out_the_budget(result):
        stale_excuse = "the write landed after the whole drain budget, " \
                       "and the source copy was destroyed first"
    from xend_fastmig.handover import FAST
    return Observation(
        source_ran=source_ran,
        target_ran=[(_s(start), _s(end)) for start, end in result.target_ran],
        source_destroyed_at=destroyed,
        source_gone_at=_s(result.source_destroyed_ms),
        target_said=result.target_said,
        target_said_at=_s(result.target_said_ms),
        released_at=_s(result.released_ms),
        fast_path=result.handover_path == FAST,
        drains_confirmed=dict((device, _s(ms)) for device, ms
                              in result.backend_drains),
        writes_landed=dict((device, _s(ms)) for device, ms
                           in result.writes_landed),
        stock_ends_without_copy=spec.stock_loses,
        stale_blocks=list(result.stale_blocks),
        stale_excuse=stale_excuse,
        handover_seconds=_s(result.handover_ms),
        budget_seconds=(budget_seconds(result)
                        if result.handover_ms is not None else None),
        leftovers=list(result.leftovers),
        devices_released_at=_s(result.devices_force_released_ms),
        fast_resumed_at=[_s(ms) for ms in result.fast_resumes_ms],
        migration_failed=result.migration_failed,
        reported_outcome=result.handover_outcome,
        bystanders_touched=list(result.bystanders_touched),
        excused=excused,
    )


def violations(result) -> list:
    """The oracle's violations of this run, as strings (``I<n> name:
    detail``)."""
    return [str(v) for v in check(observe(result))]
