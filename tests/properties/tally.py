"""How many handovers the property tests ran, and how many broke an
invariant (printed at the end of the pytest run); ``run_judged`` runs one
schedule, judges it and counts it."""

RUNS = 0
VIOLATING = 0


def count(violations: list[str]) -> None:
    global RUNS, VIOLATING
    RUNS += 1
    if violations:
        VIOLATING += 1


def run_judged(schedule, say):
    """``(outcome, found)``: one run of ``schedule``, and its harness
    errors and oracle violations (empty: safe); ``say`` hears what to
    show of it (hypothesis' ``note`` in a property)."""
    from tests.properties.harness import run_schedule
    from tests.properties.observe import findings
    say(repr(schedule))
    out = run_schedule(schedule)
    found = findings(out)
    count(found)
    if out.report is not None:
        say(out.report.summary())
    say("save error: %r" % (out.save_error,))
    return out, found
