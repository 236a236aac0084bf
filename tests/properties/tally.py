"""How many handovers the property tests ran, and how many broke an
invariant (printed at the end of the pytest run); ``run_judged`` runs one
schedule, judges it and counts it.  Also how long the process could not
run after the runs' images (the deadlines' budget adds it), so that a
summary shows when the machine, not a handover, was slow."""

RUNS = 0
VIOLATING = 0
# Of those, the handovers with the early release on (issue 12 asks for
# at least 1000 of them, none violating).
EARLY = 0
EARLY_VIOLATING = 0
STALLED_SECONDS = 0.0
MOST_STALLED = 0.0


def count(violations: list[str], out=None) -> None:
    global RUNS, VIOLATING, STALLED_SECONDS, MOST_STALLED
    global EARLY, EARLY_VIOLATING
    RUNS += 1
    if violations:
        VIOLATING += 1
    if out is not None and out.schedule.early_release:
        EARLY += 1
        if violations:
            EARLY_VIOLATING += 1
    if out is not None:
        STALLED_SECONDS += out.stalled
        MOST_STALLED = max(MOST_STALLED, out.stalled)


def run_judged(schedule, say):
    """``(outcome, found)``: one run of ``schedule``, and its harness
    errors and oracle violations (empty: safe); ``say`` hears what to
    show of it (hypothesis' ``note`` in a property)."""
    from tests.properties.harness import run_schedule
    from tests.properties.observe import findings
    say(repr(schedule))
    out = run_schedule(schedule)
    found = findings(out)
    count(found, out)
    if out.report is not None:
        say(out.report.summary())
    say("save error: %r" % (out.save_error,))
    return out, found
