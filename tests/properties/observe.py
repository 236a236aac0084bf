"""A property run as the one oracle sees it.

``observe(outcome)`` turns a harness ``Outcome`` into a
``fastmig_tools.invariants.Observation`` (times on the monotonic clock),
adding what only the property world knows: what stock 3.1 would do under
the drawn schedule, which invariants the drawn fault itself forbids, and
the run's budget.  ``violations(outcome)`` is the oracle's verdict as
strings (``I<n> name: detail``).

``harness_errors(outcome)`` is apart: the world failing itself (a model
raised, a save never ended, the core's report contradicting what the
target saw).  Those are not invariants of the handover, but a run with
one proves nothing, so the property tests require both lists empty.
"""
from __future__ import annotations

from fastmig_tools.invariants import Observation, check
from fastmig_tools.models.netback import ClassicNetback
from tests.properties.harness import (MIGRATE_TIMEOUT, RESUME_GRACE, SLACK,
                                      VERDICT_TIMEOUT)
from fastmig_tools.rehearse.target import READY_REPLY
from xend_fastmig.handover import FAST, RESUMED, SUSPENDED

__all__ = ["observe", "violations", "harness_errors", "findings", "ids",
           "target_said",
           "stock_would_lose", "stock_would_resume_hvm", "budget_seconds"]


def target_said(target) -> str | None:
    """"ok", "err" or None: the verdict the target host sent."""
    if target.reply is None:
        return None
    verdict = target.reply.replace(READY_REPLY, "", 1).lstrip()
    for word in ("ok", "err"):
        if verdict.startswith("(" + word):
            return word
    return None


def ids(found) -> list[str]:
    """The invariant IDs of ``violations()``' strings, in order."""
    return [text.split(" ", 1)[0] for text in found]


# ---------------------------------------------------------------------------
# what stock 3.1 would do under the same schedule
# ---------------------------------------------------------------------------

def stock_would_lose(out) -> bool:
    """Stock 3.1 destroys the source copy once the image is out, then lets
    the target go: the guest is lost whenever the target's copy does not
    end up running (unless xc_save itself failed: stock then resumes)."""
    return out.schedule.source_fault != "save" and not out.target.running


def stock_would_resume_hvm(out) -> bool:
    """Xen 3.1 resumes an HVM guest only cooperatively (SUSPEND_CANCEL, on
    its devices as they are), and stock's save resumes only when xc_save
    failed; an HVM guest stuck where stock could not resume it either is
    no regression (facts section 10).  True for every PV guest."""
    s = out.schedule
    if not s.hvm:
        return True
    return s.suspend_cancel and s.source_fault == "save"


def _released(out) -> bool:
    return out.report is not None and \
        out.report.phase_seconds("release") is not None


def _hung(out) -> bool:
    """A backend of this guest hangs: its own storage hung, or another
    guest's hung backend holds the dom0 xenwatch thread they share (as on
    a real 3.1 dom0)."""
    return out.xenwatch_held or any(d.kind == "hung"
                                    for d in out.schedule.devices)


def _stuck_like_stock(out) -> bool:
    """A source copy left suspended where stock would leave none running.

    A hung backend's old directory never goes, and 3.1's createDevice
    refuses to re-create the device while it stands: where stock would
    have lost the guest, or would have had to re-create its devices (no
    SUSPEND_CANCEL), suspended (and said so) is no worse.  With nothing
    released, a guest without SUSPEND_CANCEL comes back through stock's
    own re-creating resumeDomain, with stock's limits (it waits
    MIGRATE_TIMEOUT, for vbds only): exactly what stock's failure path
    runs, so its failing is stock's.
    """
    s = out.schedule
    hung = _hung(out)
    stock_resume = not _released(out) and not s.suspend_cancel
    return (hung and (stock_would_lose(out) or not s.suspend_cancel)) \
        or not stock_would_resume_hvm(out) or stock_resume


def _known_early_release_gap(out) -> bool:
    """With the early release, xc_save failing after the suspend finds the
    block devices released, so only the re-creating resume is left, and a
    hung backend never lets it run, where stock resumes a SUSPEND_CANCEL
    guest on its devices.  Pinned by test_regressions'
    test_early_release_then_xc_save_failure_with_a_hung_backend and
    test_early_release_properties; the lead decides."""
    s = out.schedule
    return s.early_release and not s.hvm and s.source_fault == "save" \
        and s.suspend_cancel and _released(out) and _hung(out)


def budget_seconds(out) -> float:
    """The deadlines of the handover plus the stock waits of a resume.

    One drain timeout: the fast wait and the stock-order fallback's share
    it (issue 11, defect 8).  A resume after a release may wait up to the
    grace for the old backends to go.  Plus the seconds in which the
    process could not run (``Outcome.stalled``): a loaded machine's, not
    the handover's.
    """
    s = out.schedule
    ndev = len(s.devices) + 1
    resume = 2 * (MIGRATE_TIMEOUT + 0.1 * ndev + 0.1)
    if out.report is not None and out.report.outcome in (RESUMED,
                                                         SUSPENDED):
        resume = resume + RESUME_GRACE
    return (s.drain_timeout + VERDICT_TIMEOUT + s.destroy_cost + resume
            + SLACK + out.stalled)


# ---------------------------------------------------------------------------
# the facts
# ---------------------------------------------------------------------------

def _source_ran(dominfo) -> list:
    destroyed = dominfo.times.get("destroy_started")
    start = None
    if dominfo.times.get("suspended") is None:
        start = dominfo.times["running"]   # never suspended
    elif dominfo.resume_error is None:
        resumes = dominfo.called("xc.domain_resume")
        if resumes:
            start = resumes[-1][0]
    if start is None:
        return []
    end = destroyed if destroyed is not None and destroyed >= start \
        else None
    return [(start, end)]


def _block_backends(out) -> list:
    return [a for a in out.backends if not isinstance(a, ClassicNetback)]


def _confirmed_at(actor):
    return getattr(actor, "shutdown_done_at", None) or actor.removed_at


def _landed_at(actor):
    landed = [r.completed_at for r in actor.requests]
    if actor.pending() or None in landed:
        return None
    return max(landed)


def _why_left_suspended(out) -> str | None:
    """Why a source copy left suspended is no fault of the handover (None:
    it is)."""
    reasons = (
        (out.xend_dead, "xend's xenstore connection died: no resume can "
         "read or write the domain's devices"),
        (out.fault_fired, "an injected xenstore fault hit the source, and "
         "stock's own resume code runs under it"),
        (out.schedule.source_fault == "resume",
         "the resume itself was made to raise"),
        (_known_early_release_gap(out), "the early release's known "
         "trade-off (a hung backend, xc_save failing after the release)"))
    for holds, why in reasons:
        if holds:
            return why
    return None


def _excused(out, stranded: bool) -> dict:
    excused = {}
    # Only a source copy left suspended is excused (its (err ...) rule
    # needs a destroyed copy, which these never have).
    why = _why_left_suspended(out) if stranded else None
    if why is not None:
        excused["I2"] = why
    if out.xend_dead:
        excused["I9"] = "xend's xenstore connection died before it could " \
                        "report"
    elif out.fault_fired and out.leftover_paths and all(
            "/backend/" in path for path in out.leftover_paths) and \
            not out.leaked_threads and not out.xend_watches_left:
        # xend's own cleanup (destroyDomain's device removal, stock code)
        # took the injected xenstore error: stock leaves the same.
        excused["I7"] = "an injected xenstore fault hit the source's own " \
                        "cleanup of its devices"
    if out.schedule.source_fault == "verdict" and not out.xend_dead:
        excused["I9"] = "the (ok) was sent but its read was made to fail: " \
                        "the source must say UNKNOWN"
        if "I2" not in excused and out.schedule.target.action != "ok":
            # The same for an (err ...) that came after the last peek:
            # unread, the outcome is unknown, and the source copy goes
            # (it may be running at the target, as far as the source
            # can tell).
            excused["I2"] = "the target's (err ...) was made unreadable: " \
                            "the outcome was unknown to the source"
    return excused


def observe(out) -> Observation:
    dominfo = out.dominfo
    target = out.target
    report = out.report
    destroyed = dominfo.times.get("destroy_started")
    source_ran = _source_ran(dominfo)
    target_ran = []
    if target.unpaused_at is not None:
        target_ran.append((target.unpaused_at, target.destroyed_at))
    said = target_said(target)
    released = None
    if target.released_at is not None:
        released = out.unleashed_at if out.unleashed_at is not None \
            else target.released_at
    stranded = destroyed is None and not target_ran and not any(
        end is None for _start, end in source_ran)
    stock_without_copy = stock_would_lose(out)
    if destroyed is None:
        stock_without_copy = _stuck_like_stock(out)
    leftovers = list(out.leftover_paths)
    if out.xend_watches_left:
        leftovers.append("%d xenstore watches of xend"
                         % out.xend_watches_left)
    leftovers.extend("thread %s" % name for name in out.leaked_threads)
    if out.leaked_fds:
        leftovers.append("%d file descriptors" % out.leaked_fds)
    forced = dominfo.force_releases()
    fast = dominfo.fast_resumes()
    backends = _block_backends(out)
    return Observation(
        source_ran=source_ran,
        target_ran=target_ran,
        source_destroyed_at=destroyed,
        source_gone_at=dominfo.times.get("domid_cleared"),
        target_said=said,
        target_said_at=target.replied_at if said is not None else None,
        released_at=released,
        fast_path=report is not None and report.path == FAST,
        drains_confirmed=dict((a.name, _confirmed_at(a)) for a in backends),
        writes_landed=dict((a.name, _landed_at(a)) for a in backends
                           if a.requests),
        stock_ends_without_copy=stock_without_copy,
        handover_seconds=(out.ended - out.image_sent_at
                          if out.image_sent_at is not None else None),
        budget_seconds=budget_seconds(out),
        leftovers=leftovers,
        devices_released_at=min(forced) if forced else None,
        fast_resumed_at=fast,
        migration_failed=out.save_error is not None,
        reported_outcome=report.outcome if report is not None else None,
        excused=_excused(out, stranded),
    )


def violations(out) -> list[str]:
    """The oracle's violations of this run (empty when safe)."""
    if out.target is None or out.dominfo is None:
        return []
    return [str(v) for v in check(observe(out))]


# How a target's restore may fail in a run: as its fault says, or because
# the source sent no (whole) stream or went away (a failed save, a reset).
_TARGET_FAILS_AS_TOLD = ("InjectedFailure", "target hang-up", "target reset",
                         "StreamError", "ConnectionResetError",
                         "BrokenPipeError", "TimeoutError")


def harness_errors(out) -> list[str]:
    """What went wrong with the world itself, or with the core's report
    as the target saw it (empty when the run can be trusted)."""
    found = list(out.problems)
    target = out.target
    if target is None or out.dominfo is None:
        return found or ["the run did not start"]
    if target.error is not None and \
            not target.error.startswith(_TARGET_FAILS_AS_TOLD):
        found.append("the target host failed on its own: %s"
                     % target.error)
    if target.released_at is not None and out.unleashed_at is None \
            and target.release_how == "EOF":
        found.append("the target saw EOF but the report says the source "
                     "never released it")
    if target.released_at is not None and out.unleashed_at is not None \
            and target.released_at < out.unleashed_at:
        found.append("the target saw EOF before the reported release")
    if out.report is None and out.save_error is None:
        found.append("save returned no report on the handover path")
    return found


def findings(out) -> list[str]:
    """The world's errors, then the oracle's violations: a run proves
    something only when both are empty."""
    return harness_errors(out) + violations(out)
