"""The one oracle: what every migration must respect, whoever ran it.

The rehearsal (``fastmig_tools.rehearse``), the property tests
(``tests/properties``) and the real-xend harness
(``fastmig_tools.xendharness``) each describe what they saw in one run
as an ``Observation``; ``check(observation)`` judges it against the
invariants below, the same code for all three worlds.  Each invariant
has a stable ID, which ``docs/design.md`` ("Invariants") uses; a
violation names it, so a matrix cell, a failing property example and a
harness test all say which promise broke.

An ``Observation`` holds facts, not verdicts: times on one monotonic
clock (any origin; None for what never happened), and the few answers
only the world can give because they depend on how it was set up (what
stock 3.1 would have done under the same fault, the budget of its
deadlines).  The rules themselves live here only.
"""
from __future__ import annotations

import dataclasses

__all__ = ["Invariant", "INVARIANTS", "Violation", "Observation", "check",
           "SUSPENDED", "ERR_TRANSIT", "by_id", "AT_TARGET", "RESUMED",
           "LOST", "TWICE"]

# xend_fastmig.handover.UNKNOWN: the core's outcome without a verdict.
UNKNOWN = "unknown"
# Where a guest ends, in every world's report.
AT_TARGET = "running at the target"
RESUMED = "resumed at the source"
LOST = "lost"
TWICE = "running twice"

# xend_fastmig.handover.SUSPENDED: what the core reports for a source copy
# it could not resume (repeated so that the oracle imports no core code).
SUSPENDED = "suspended at the source, running nowhere"
# An (err ...) sent this long before the source copy's destroy began was
# there at the source's last peek (loopback delivers at once; the slack is
# the scheduling between that peek and the destroy on a loaded 2-CPU
# machine, seen above 50 ms in the 1000-example property runs).
ERR_TRANSIT = 0.25


@dataclasses.dataclass(frozen=True)
class Invariant:
    id: str
    name: str
    promise: str


INVARIANTS = (
    Invariant("I1", "one-copy",
              "never two running copies of the guest, not even for a "
              "moment"),
    Invariant("I2", "no-loss",
              "the guest ends with no running copy (destroyed or left "
              "suspended) only where stock 3.1 would too, and its source "
              "copy is never destroyed after the target said (err ...)"),
    Invariant("I3", "fresh-disk",
              "every block of every shared disk holds its newest data"),
    Invariant("I4", "release-gate",
              "the target is released only after every block backend "
              "confirmed its drain and every in-flight write landed, or "
              "after the source copy was destroyed (stock's order)"),
    Invariant("I5", "destroy-after-ok",
              "once the target said (ok), the source copy is destroyed"),
    Invariant("I6", "deadlines",
              "the source's part ends within its deadlines"),
    Invariant("I7", "nothing-left",
              "nothing is left behind: xenstore entries, watches, "
              "processes, threads, file descriptors, temporary files"),
    Invariant("I8", "no-fast-resume",
              "the source copy never resumes fast (SUSPEND_CANCEL) on "
              "block devices that were force-released"),
    Invariant("I9", "honest-outcome",
              "the outcome is reported as it is: the migration fails "
              "unless the guest runs at the target, succeeds once the "
              "target said (ok), and a source copy left suspended is "
              "reported as suspended"),
    Invariant("I10", "bystanders",
              "no other guest's devices are touched: their backend and "
              "frontend directories stay as they were, whatever the "
              "migrating guest wrote in its own frontends"),
)

_BY_ID = {inv.id: inv for inv in INVARIANTS}


def by_id(inv_id: str) -> Invariant:
    return _BY_ID[inv_id]


@dataclasses.dataclass(frozen=True)
class Violation:
    id: str
    detail: str

    def __str__(self) -> str:
        return "%s %s: %s" % (self.id, _BY_ID[self.id].name, self.detail)


@dataclasses.dataclass
class Observation:
    """What one run showed (see the module's docstring)."""

    # The two copies.  ``source_ran`` and ``target_ran``: (start, end)
    # intervals in which that copy ran after the suspend (end None: still
    # running when the run ended).
    source_ran: list = dataclasses.field(default_factory=list)
    target_ran: list = dataclasses.field(default_factory=list)
    # The source copy's destroy began (None: never), and returned: the
    # domain gone and its backends told, as stock 3.1 has it before it
    # releases the target (None: it never returned).
    source_destroyed_at: float | None = None
    source_gone_at: float | None = None
    # The target's verdict as sent: "ok", "err" or None, and when.
    target_said: str | None = None
    target_said_at: float | None = None
    # The target's EOF gate opened (its copy may run from here on).
    released_at: float | None = None
    # Did the source release it on the fast path (after its drain wait)?
    fast_path: bool = False
    # Per block device: when its backend confirmed the drain (None: it
    # never did) and when its in-flight writes had all landed (None: one
    # never landed).
    drains_confirmed: dict = dataclasses.field(default_factory=dict)
    writes_landed: dict = dataclasses.field(default_factory=dict)
    # What stock 3.1 would have done under the same setup and fault: it
    # would end with no running copy (it destroys the source copy once the
    # image is out, so any failure of the target's copy loses the guest;
    # 3.1 cannot resume an HVM guest without its cooperation).
    stock_ends_without_copy: bool = False
    # The disk check: stale blocks, and why they may be no one's fault
    # (None: they count) -- e.g. a write landing after the whole drain
    # budget, which every bounded wait (stock's too) lets through once
    # the source copy was destroyed.
    stale_blocks: list = dataclasses.field(default_factory=list)
    stale_excuse: str | None = None
    # The deadlines: seconds the source spent after the image, and its
    # budget (None: not measured).
    handover_seconds: float | None = None
    budget_seconds: float | None = None
    # Whatever of the guest or the run was left behind.
    leftovers: list = dataclasses.field(default_factory=list)
    # When the block devices were force-released, and when the source copy
    # was resumed fast (SUSPEND_CANCEL, devices kept).
    devices_released_at: float | None = None
    fast_resumed_at: list = dataclasses.field(default_factory=list)
    # What was reported: did the migration (save) raise, and the core's
    # outcome (None: the world has no core report).
    migration_failed: bool | None = None
    reported_outcome: str | None = None
    # What happened to other guests' devices on the same host: one line
    # per change (a directory removed, a key written, a backend
    # unregistered); empty when none was touched or none was watched.
    bystanders_touched: list = dataclasses.field(default_factory=list)
    # Invariants the setup itself forbids (a fault that kills xend's
    # xenstore connection forbids its cleanup): id -> why.
    excused: dict = dataclasses.field(default_factory=dict)

    # -- derived ---------------------------------------------------------

    def runs_at_end(self, intervals) -> bool:
        return any(end is None for _start, end in intervals)

    @property
    def at_target(self) -> bool:
        return self.runs_at_end(self.target_ran)

    @property
    def at_source(self) -> bool:
        return self.runs_at_end(self.source_ran)


def _overlap(first, second):
    """The first moment at which an interval of ``first`` and one of
    ``second`` both run, or None."""
    inf = float("inf")
    found = None
    for a_start, a_end in first:
        for b_start, b_end in second:
            start = max(a_start, b_start)
            end = min(inf if a_end is None else a_end,
                      inf if b_end is None else b_end)
            if start < end and (found is None or start < found):
                found = start
    return found


def _one_copy(obs):
    when = _overlap(obs.source_ran, obs.target_ran)
    if when is not None:
        yield "both copies ran from t=%.3f s" % when


def _no_loss(obs):
    if obs.at_target or obs.at_source:
        return
    destroyed = obs.source_destroyed_at
    if not obs.stock_ends_without_copy:
        if destroyed is not None:
            yield "lost where stock 3.1 would not lose it"
        else:
            yield "source copy left suspended with nothing running, " \
                  "where stock 3.1 would not leave it so"
    if destroyed is not None and obs.target_said == "err":
        # On the fast path the source waits for the verdict before it
        # destroys; on stock's order it destroys first, and only an
        # (err ...) sent well before could have been seen.
        seen = obs.target_said_at is not None and \
            obs.target_said_at + ERR_TRANSIT < destroyed
        if obs.fast_path or seen:
            yield "source copy destroyed although the target said (err ...)"


def _fresh_disk(obs):
    if obs.stale_blocks and obs.stale_excuse is None:
        yield "%d stale block(s): %s" % (len(obs.stale_blocks),
                                         ", ".join(obs.stale_blocks[:3]))


def _release_gate(obs):
    released = obs.released_at
    if released is None:
        return
    # Stock's order: released once the destroy has returned.  Not once it
    # began: Xen 4.1's order closes the socket and then destroys, and its
    # target runs while the source's backends still hold the writes.
    gone = obs.source_gone_at
    if gone is not None and gone <= released:
        return
    waiting = sorted(dev for dev, t in obs.drains_confirmed.items()
                     if t is None or t > released)
    landing = sorted(dev for dev, t in obs.writes_landed.items()
                     if t is None or t > released)
    if waiting:
        yield "released before %s confirmed its drain, with the source " \
              "copy not destroyed" % ", ".join(waiting)
    if landing:
        yield "released before the writes of %s landed, with the source " \
              "copy not destroyed" % ", ".join(landing)


def _destroy_after_ok(obs):
    if obs.target_said == "ok" and obs.source_destroyed_at is None:
        yield "the target said (ok) and the source copy was not destroyed"


def _deadlines(obs):
    if obs.handover_seconds is None or obs.budget_seconds is None:
        return
    if obs.handover_seconds > obs.budget_seconds:
        yield "the source took %.2f s after the image, over its %.2f s" \
              % (obs.handover_seconds, obs.budget_seconds)


def _nothing_left(obs):
    if obs.leftovers:
        yield "left behind: %s" % ", ".join(str(x) for x in
                                           obs.leftovers[:5])


def _no_fast_resume(obs):
    released = obs.devices_released_at
    if released is None:
        return
    late = [t for t in obs.fast_resumed_at if t >= released]
    if late:
        yield "resumed fast (SUSPEND_CANCEL) on torn-down devices"


def _honest_outcome(obs):
    if obs.migration_failed is False and not obs.at_target:
        yield "the migration reported success, the guest does not run " \
              "at the target"
    # Without a verdict the source cannot know where the guest runs: a
    # failure saying UNKNOWN is honest then, also when the (ok) came after
    # the source's verdict deadline.
    if obs.migration_failed is True and obs.at_target and \
            not obs.at_source and obs.target_said == "ok" and \
            obs.reported_outcome != UNKNOWN:
        yield "the migration reported failure after the target said (ok)"
    stranded = not obs.at_target and not obs.at_source and \
        obs.source_destroyed_at is None
    if stranded and obs.reported_outcome is not None and \
            obs.reported_outcome != SUSPENDED:
        yield "source copy left suspended but reported as %s" \
              % obs.reported_outcome


def _bystanders(obs):
    if obs.bystanders_touched:
        yield "another guest's devices were touched: %s" % ", ".join(
            str(x) for x in obs.bystanders_touched[:5])


_RULES = (("I1", _one_copy), ("I2", _no_loss), ("I3", _fresh_disk),
          ("I4", _release_gate), ("I5", _destroy_after_ok),
          ("I6", _deadlines), ("I7", _nothing_left),
          ("I8", _no_fast_resume), ("I9", _honest_outcome),
          ("I10", _bystanders))


def check(obs: Observation) -> list:
    """Every ``Violation`` of ``INVARIANTS`` in ``obs`` (empty: safe)."""
    found = []
    for inv_id, rule in _RULES:
        if inv_id in obs.excused:
            continue
        found.extend(Violation(inv_id, detail) for detail in rule(obs))
    return found
