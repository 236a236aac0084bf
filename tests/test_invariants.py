"""The one oracle (fastmig_tools.invariants): each invariant holds a safe
run clean and catches the broken run it is there for."""
from __future__ import annotations

import dataclasses

import pytest

from fastmig_tools.invariants import (INVARIANTS, SUSPENDED, Observation,
                                      by_id, check)

pytestmark = pytest.mark.timeout(60)


def _safe(**changes) -> Observation:
    """A fast handover that went right: drained at 10 ms, released at 12,
    the target ran from 20, said (ok) at 25, the source destroyed at 30."""
    obs = Observation(
        target_ran=[(0.020, None)], source_destroyed_at=0.030,
        target_said="ok", target_said_at=0.025, released_at=0.012,
        fast_path=True, drains_confirmed={"vbd-1": 0.010, "vbd-2": 0.011},
        writes_landed={"vbd-1": 0.005, "vbd-2": 0.009},
        handover_seconds=0.5, budget_seconds=2.0,
        devices_released_at=0.001, migration_failed=False,
        reported_outcome="running at the target")
    return dataclasses.replace(obs, **changes)


def _ids(obs):
    return [v.id for v in check(obs)]


def test_a_safe_run_breaks_nothing():
    assert check(_safe()) == []


def test_ids_are_stable_and_documented():
    assert [i.id for i in INVARIANTS] == \
        ["I%d" % n for n in range(1, len(INVARIANTS) + 1)]
    assert len(INVARIANTS) >= 10
    with open("docs/design.md") as f:
        design = f.read()
    for inv in INVARIANTS:
        assert "| %s | %s |" % (inv.id, inv.name) in design


def test_two_copies_for_a_moment():
    # Resumed at 15 ms, destroyed at 30: the target ran from 20.
    obs = _safe(source_ran=[(0.015, 0.030)])
    assert _ids(obs) == ["I1"]
    assert "t=0.020" in str(check(obs)[0])
    # Resumed after the target copy was destroyed: one at a time.
    assert _ids(_safe(source_ran=[(0.050, None)],
                      target_ran=[(0.020, 0.040)], target_said="err",
                      source_destroyed_at=None, migration_failed=True,
                      reported_outcome=None)) == []


def test_lost_where_stock_would_not_lose_it():
    lost = _safe(target_ran=[(0.020, 0.022)], target_said=None,
                 migration_failed=True)
    assert _ids(lost) == ["I2"]
    assert _ids(dataclasses.replace(lost, stock_ends_without_copy=True)) \
        == []


def test_left_suspended_where_stock_would_resume():
    stranded = _safe(target_ran=[], source_destroyed_at=None,
                     target_said="err", migration_failed=True,
                     reported_outcome=SUSPENDED)
    assert _ids(stranded) == ["I2"]
    assert _ids(dataclasses.replace(stranded, stock_ends_without_copy=True)) \
        == []


def test_destroyed_after_an_err():
    # Fast path: the source waits for the verdict, so any (err ...) counts.
    err = _safe(target_ran=[], target_said="err", target_said_at=0.040,
                stock_ends_without_copy=True, migration_failed=True)
    assert _ids(err) == ["I2"]
    # Stock's order: an (err ...) after the destroy could not be seen...
    late = dataclasses.replace(err, fast_path=False, source_destroyed_at=0.6,
                               released_at=0.61, target_said_at=0.5)
    assert _ids(late) == []
    # ... one well before it could.
    assert _ids(dataclasses.replace(late, target_said_at=0.1)) == ["I2"]


def test_stale_blocks_unless_excused():
    assert _ids(_safe(stale_blocks=["block 3 of disk 0"])) == ["I3"]
    assert _ids(_safe(stale_blocks=["block 3"], stale_excuse="why")) == []


@pytest.mark.parametrize("changes", [
    {"drains_confirmed": {"vbd-1": 0.010, "vbd-2": 0.013}},
    {"drains_confirmed": {"vbd-1": 0.010, "vbd-2": None}},
    {"writes_landed": {"vbd-1": 0.005, "vbd-2": 0.019}},
    {"writes_landed": {"vbd-1": 0.005, "vbd-2": None}},
])
def test_released_before_a_drain_or_a_write(changes):
    assert _ids(_safe(**changes)) == ["I4"]


def test_released_after_the_destroy_is_stocks_order():
    assert _ids(_safe(fast_path=False, source_destroyed_at=0.008,
                      source_gone_at=0.011,
                      drains_confirmed={"vbd-1": None},
                      writes_landed={"vbd-1": 0.050})) == []


def test_released_while_the_destroy_runs_is_not_stocks_order():
    """Xen 4.1's order: close, then destroy; the target may take its EOF
    after the destroy began, with the source's writes still in flight."""
    assert _ids(_safe(fast_path=False, source_destroyed_at=0.008,
                      source_gone_at=0.200,
                      drains_confirmed={"vbd-1": None},
                      writes_landed={"vbd-1": 0.050})) == ["I4", "I4"]


def test_ok_without_a_destroy():
    assert _ids(_safe(source_destroyed_at=None)) == ["I5"]


def test_deadlines():
    assert _ids(_safe(handover_seconds=2.5)) == ["I6"]


def test_leftovers():
    assert _ids(_safe(leftovers=["/local/domain/7"])) == ["I7"]


def test_fast_resume_after_the_release():
    resumed = _safe(target_ran=[], target_said="err",
                    source_destroyed_at=None, source_ran=[(0.03, None)],
                    migration_failed=True, reported_outcome=None)
    assert _ids(resumed) == []
    assert _ids(dataclasses.replace(resumed, fast_resumed_at=[0.03])) \
        == ["I8"]
    # A fast resume before anything was released keeps its devices.
    assert _ids(dataclasses.replace(resumed, fast_resumed_at=[0.03],
                                    devices_released_at=0.04)) == []


def test_honest_outcome():
    assert _ids(_safe(migration_failed=True)) == ["I9"]
    # Without a verdict the source cannot know: failing is honest.
    assert _ids(_safe(migration_failed=True, target_said=None)) == []
    # Nor with an (ok) that came after its verdict deadline.
    assert _ids(_safe(migration_failed=True,
                      reported_outcome="unknown")) == []
    assert _ids(_safe(target_ran=[], target_said="err",
                      source_destroyed_at=None, source_ran=[(0.03, None)],
                      reported_outcome=None)) == ["I9"]
    assert _ids(_safe(target_ran=[], target_said="err",
                      source_destroyed_at=None, migration_failed=True,
                      stock_ends_without_copy=True,
                      reported_outcome="resumed at the source")) == ["I9"]


def test_bystanders():
    touched = _safe(bystanders_touched=[
        "/local/domain/0/backend/vbd/900/51712: removed"])
    assert _ids(touched) == ["I10"]
    assert "vbd/900/51712: removed" in str(check(touched)[0])
    assert str(check(touched)[0]).startswith("I10 bystanders:")


def test_an_excused_invariant_is_not_held():
    obs = _safe(leftovers=["/x"], excused={"I7": "xend lost xenstore"})
    assert check(obs) == []


def test_violations_name_their_invariant():
    v = check(_safe(leftovers=["/x"]))[0]
    assert str(v).startswith("I7 nothing-left: left behind: /x")
    assert by_id("I7").name == "nothing-left"
