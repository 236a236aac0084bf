"""Deadlines end whatever the clock does (defect 9)."""

import os

import pytest

from tests.unit.clocks import SteppedClock, clock_t
from xend_fastmig import clock as clock_module
from xend_fastmig.clock import MAX_STEP, SLICE, Deadline, Stopwatch

WRAP = 2 ** 31 / 100.0


def test_clock_t_wraps_as_on_an_i386_dom0():
    assert clock_t(WRAP - 0.01) == pytest.approx(WRAP - 0.01)
    assert clock_t(WRAP) == -WRAP


def test_a_deadline_counts_the_steps_of_a_steady_clock():
    deadline = Deadline(1.0, SteppedClock(100.0, 0.25))
    assert deadline.remaining() == pytest.approx(0.75)
    assert deadline.remaining() == pytest.approx(0.5)
    assert not deadline.expired()
    assert deadline.expired()


def test_a_deadline_across_the_wrap_ends():
    """Regression: ``reading + timeout`` before the wrap is never reached
    by readings after it (about -2**31 ticks)."""
    clock = SteppedClock(WRAP - 0.5, 0.2, wrap=True)
    deadline = Deadline(2.0, clock)
    readings = 0
    while not deadline.expired():
        readings = readings + 1
        assert readings < 100
    # The step across the wrap counts as nothing: one step late at most.
    assert readings <= 2.0 / 0.2 + 1
    assert clock.reading > WRAP


def test_the_old_arithmetic_never_ends_across_the_wrap():
    """What the test above guards against, spelt out."""
    clock = SteppedClock(WRAP - 0.5, 0.2, wrap=True)
    deadline = clock() + 2.0
    for _ in range(100):
        assert deadline - clock() > 0


def test_a_wall_clock_set_back_counts_as_no_time():
    clock = SteppedClock(1000.0, 0.5, jumps={2: -3600.0})
    deadline = Deadline(2.0, clock)
    assert deadline.remaining() == pytest.approx(2.0)
    assert deadline.remaining() == pytest.approx(1.5)


def test_a_wall_clock_set_forward_counts_at_most_max_step():
    clock = SteppedClock(1000.0, 0.5, jumps={2: 3600.0})
    deadline = Deadline(600.0, clock)
    assert deadline.remaining() == pytest.approx(600.0 - MAX_STEP)
    assert deadline.remaining() == pytest.approx(600.0 - MAX_STEP - 0.5)


def test_an_unreadable_clock_counts_as_no_time():
    readings = iter([10.0, None, 11.0, None, None, 12.0])
    watch = Stopwatch(lambda: next(readings))
    assert [watch.elapsed() for _ in range(5)] == [0.0, 1.0, 1.0, 1.0, 2.0]


def test_a_nan_reading_counts_as_no_time():
    nan = float("nan")
    readings = iter([10.0, nan, 11.0, 12.0])
    watch = Stopwatch(lambda: next(readings))
    assert watch.elapsed() == 0.0
    assert watch.elapsed() == 0.0
    assert watch.elapsed() == 1.0


def test_a_deadline_never_reports_negative_time():
    deadline = Deadline(0.5, SteppedClock(0.0, 1.0))
    assert deadline.remaining() == 0.0
    assert deadline.sleep_for() == 0.0


def test_sleeps_are_sliced_so_a_wrap_costs_at_most_one_slice():
    deadline = Deadline(100.0, SteppedClock(0.0, 0.0))
    assert SLICE == 1.0
    assert deadline.sleep_for() == 1.0
    assert deadline.sleep_for(0.02) == 0.02
    assert deadline.sleep_for(30.0) == 1.0
    assert Deadline(0.25, SteppedClock(0.0, 0.0)).sleep_for() == 0.25


def test_a_step_forward_counts_at_most_five_seconds():
    assert MAX_STEP == 5.0
    watch = Stopwatch(SteppedClock(0.0, 5.5))
    assert watch.elapsed() == 5.0
    watch = Stopwatch(SteppedClock(0.0, 4.5))
    assert watch.elapsed() == 4.5


def test_python3_deadlines_read_time_monotonic():
    import time
    if getattr(time, "monotonic", None) is None:
        pytest.skip("Python 2: see the next test")
    assert clock_module.monotonic is time.monotonic
    assert clock_module.now is time.monotonic
    assert clock_module.source is time.monotonic


def test_python2_deadlines_read_os_times():
    class Python2Time(object):
        def time(self):
            return 42.0
    monotonic, now = clock_module._clocks(Python2Time())
    assert monotonic is clock_module._python2_monotonic
    assert now() == 42.0


def test_the_default_source_is_read_at_each_deadline(monkeypatch):
    monkeypatch.setattr(clock_module, "source", SteppedClock(0.0, 0.3))
    deadline = Deadline(1.0)
    assert deadline.remaining() == pytest.approx(0.7)


def test_python2s_clock_reading_minus_one_is_not_an_error(monkeypatch):
    """times() returning -1 makes Python 2's os.times() raise OSError."""
    def times():
        raise OSError(0, "times")
    monkeypatch.setattr(os, "times", times)
    assert clock_module._python2_monotonic() is None


def test_python2s_clock_is_os_times_elapsed():
    assert clock_module._python2_monotonic() == pytest.approx(
        os.times()[4], abs=0.05)


def test_the_last_tick_of_a_coarse_clock_is_slept_not_spun():
    """Python 2's clock moves in jiffies: a deadline whose float sum of
    steps leaves a few nanoseconds must not be slept for nanoseconds."""
    readings = [0.0, 0.29999999999, 0.29999999999]
    deadline = Deadline(0.3, clock=lambda: readings.pop(0))
    left = deadline.sleep_for()
    assert left == clock_module.GRAIN
    expired = Deadline(0.0, clock=lambda: 0.0)
    assert expired.sleep_for() == 0.0
    # Far from its end, a deadline sleeps what remains, capped.
    assert Deadline(0.5, clock=lambda: 0.0).sleep_for(0.2) == 0.2
