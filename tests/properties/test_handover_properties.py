"""Random schedules against the real handover: the invariants of
docs/design.md ("Invariants").

Each example runs the model of the patched save
(``fastmig_tools.models.patched_save.save``, and so the real handover),
with the early release on or off, against an embedded xenstore, modelled
3.1 block backends and a modelled 3.1 target over a real TCP connection,
with the faults the schedule draws; the one oracle
(``observe.violations``) must find nothing, nor the world any error of its
own (``observe.harness_errors``).
"""
from __future__ import annotations

from hypothesis import given, note, settings
from hypothesis import strategies as st

from tests.properties import tally
from tests.properties.harness import run_schedules
from tests.properties.observe import findings, stock_would_lose
from tests.properties.strategies import clean_schedules, schedules
from xend_fastmig.handover import AT_TARGET, FAST


def _run(schedule):
    return tally.run_judged(schedule, note)


@given(schedules())
def test_no_schedule_breaks_an_invariant(schedule):
    out, found = _run(schedule)
    assert found == [], found


@given(clean_schedules())
def test_without_faults_the_fast_path_always_completes(schedule):
    out, found = _run(schedule)
    assert found == [], found
    assert out.save_error is None
    assert out.report.path == FAST, out.report.summary()
    assert out.report.outcome == AT_TARGET
    assert out.target.running and not stock_would_lose(out)
    # The go came after every in-flight request, and promptly after the
    # last backend confirmed (event driven, not a 100 ms poll; loose for a
    # loaded 2-core machine).
    completions = [c for c in out.completions if c is not None]
    if completions:
        assert out.unleashed_at >= max(completions)
    confirmed = [getattr(a, "shutdown_done_at", None) or a.removed_at
                 for a in out.backends if a.devclass != "vif"]
    if confirmed:
        assert None not in confirmed
        assert 0 <= out.unleashed_at - max(confirmed) < 0.25


# Several handovers per example: a quarter of the profile's examples.
@settings(max_examples=max(5, settings.default.max_examples // 4))
@given(st.lists(schedules(), min_size=2, max_size=3))
def test_guests_migrating_at_once_keep_the_invariants(batch):
    """Two or three guests leave the same host at once: one xenstore, one
    xend connection and watcher thread, one dom0 xenwatch."""
    note(repr(batch))
    outs = run_schedules(batch)
    for out in outs:
        found = findings(out)
        tally.count(found, out)
        if out.report is not None:
            note(out.report.summary())
        assert found == [], (out.schedule, found)
