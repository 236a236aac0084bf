"""The stall meter: the time a deadlines budget must not charge to the
handover (fastmig_tools.rehearse.stall), and the budgets that add it."""
from __future__ import annotations

import sys
import time
import types

import pytest

from fastmig_tools.rehearse import observe as rehearse_observe
from fastmig_tools.rehearse.stall import StallMeter
from tests.properties import observe as property_observe
from tests.properties.harness import Schedule

pytestmark = pytest.mark.timeout(60)


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_thread_holding_the_gil_is_measured_as_a_stall():
    # With a long switch interval this thread keeps the GIL while it
    # spins: the meter cannot run, as on a machine with no CPU to spare.
    meter = StallMeter().start()
    old = sys.getswitchinterval()
    try:
        time.sleep(0.05)
        sys.setswitchinterval(1.0)
        start = time.monotonic()
        _spin(0.3)
        end = time.monotonic()
    finally:
        sys.setswitchinterval(old)
        time.sleep(0.05)
        meter.stop()
    stalled = meter.stalled(start, end)
    assert 0.2 < stalled <= end - start + 0.001


def test_a_process_that_sleeps_has_next_to_no_stall():
    meter = StallMeter().start()
    try:
        start = time.monotonic()
        time.sleep(0.3)
        end = time.monotonic()
    finally:
        meter.stop()
    assert meter.stalled(start, end) < 0.1


def test_only_the_part_of_a_gap_inside_the_window_counts():
    meter = StallMeter()
    meter._gaps = [(1.0, 2.0), (3.0, 3.5), (5.0, 6.0)]
    assert meter.stalled(1.5, 5.5) == pytest.approx(0.5 + 0.5 + 0.5)
    assert meter.stalled(2.0, 3.0) == 0.0
    assert meter.stalled(0.0, 10.0) == pytest.approx(2.5)


def test_the_properties_deadline_budget_adds_the_stall():
    out = types.SimpleNamespace(schedule=Schedule(devices=()), report=None,
                                stalled=0.0)
    quiet = property_observe.budget_seconds(out)
    out.stalled = 1.25
    assert property_observe.budget_seconds(out) == pytest.approx(quiet + 1.25)


def test_the_rehearsals_deadline_budget_adds_the_stall():
    result = types.SimpleNamespace(
        scenario=dict(drain_timeout=0.5, verdict_timeout=1.0, memory_gb=1.0,
                      destroy_per_gb=0.5),
        handover=None, stalled_ms=0.0)
    quiet = rehearse_observe.budget_seconds(result)
    result.stalled_ms = 700.0
    assert rehearse_observe.budget_seconds(result) == \
        pytest.approx(quiet + 0.7)
