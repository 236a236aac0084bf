"""Failing examples the property tests found, kept as ordinary tests.

Each names the schedule hypothesis shrank it to and what was wrong.
"""
from __future__ import annotations

import errno
import time

import pytest

import xend_fastmig.handover as handover_module
from xend_fastmig.errors import TargetFailed
from xend_fastmig.handover import RESUMED, STOCK_ORDER

from tests.properties.harness import (Device, Schedule, StoreFault,
                                      TargetPlan, run_schedule, violations)


@pytest.mark.parametrize("devclass", ["vbd", "tap"])
def test_an_err_during_a_drain_that_times_out_resumes_the_source(devclass):
    """Found: a backend draining past the drain timeout while the target
    said ``(err ...)``: the stock-order fallback destroyed the source copy
    without looking at the connection, and the guest was lost although the
    target had failed before its release.  Fixed: ``_stock_order`` peeks
    before it destroys anything."""
    out = run_schedule(Schedule(
        devices=(Device(devclass, "slow", (0.22,)),),
        # The (err ...) comes while the backend drains (0.2 s timeout).
        target=TargetPlan("stream", "err", delay=0.05)))
    assert violations(out) == []
    assert out.report.path == STOCK_ORDER
    assert out.report.outcome == RESUMED
    assert out.dominfo.destroyed_domid is None
    assert out.target.eof_at is None  # never released
    # Devices were released: the resume re-created them.
    assert "domain_resume:0" in out.journal


def test_an_err_during_a_hung_drain_resumes_the_source():
    out = run_schedule(Schedule(
        devices=(Device("vbd", "hung", (0.01,)), Device("vbd", "normal")),
        target=TargetPlan("waitForDevices", "err"),
        shared_xenwatch=True))
    assert violations(out) == []


def test_an_err_when_capture_fails_goes_to_the_stock_failure_path(
        monkeypatch):
    """The stock-order fallback before anything was released: a target that
    already failed makes the handover raise ``TargetFailed``, so save's
    stock failure path resumes the source on its intact devices (fast for a
    SUSPEND_CANCEL guest)."""
    state = {}

    def failing_capture(store, domid, dompath):
        target = state["out"].target
        deadline = time.monotonic() + 5.0
        while target.err_sent_at is None and time.monotonic() < deadline:
            time.sleep(0.005)
        # Give the (err ...) the time to cross the loopback connection.
        time.sleep(0.05)
        raise RuntimeError(errno.EIO, "injected: reading the devices")

    monkeypatch.setattr(handover_module, "capture_block_devices",
                        failing_capture)
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.01,)),),
        suspend_cancel=True, target=TargetPlan("stream", "err")),
        before_save=lambda o: state.setdefault("out", o))
    assert violations(out) == []
    assert isinstance(out.save_error, TargetFailed)
    assert out.dominfo.resume_path == "fast"
    assert out.dominfo.destroyed_domid is None


@pytest.mark.parametrize("at", [0, 12, 30, 60])
def test_a_reset_of_xends_connection_is_safe(at):
    """A dead xenstore connection: whatever the handover cannot read it
    treats as unknown and takes stock's order; the target is released
    only after the source copy was destroyed."""
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.05,)),
                 Device("tap", "normal", (0.02,))),
        store_fault=StoreFault(who="reset-xend", at=at)))
    assert violations(out) == []
    assert out.xend_dead


# ---------------------------------------------------------------------------
# The checker has teeth: broken handovers are caught.
# ---------------------------------------------------------------------------

class _NoWait:
    def __init__(self, store, devices, timeout):
        pass

    def wait(self):
        return []


def test_the_checker_catches_a_release_before_the_drain(monkeypatch):
    monkeypatch.setattr(handover_module, "DrainWaiter", _NoWait)
    out = run_schedule(Schedule(devices=(Device("vbd", "normal", (0.1,)),)))
    found = violations(out)
    assert any("before an in-flight request completed" in v for v in found) \
        or any("pending" in v for v in found), found


def test_the_checker_catches_a_destroy_after_an_err(monkeypatch):
    # The handover no longer recognises (err ...): it destroys the source.
    monkeypatch.setattr(handover_module, "ERR", "not-err")
    out = run_schedule(Schedule(devices=(Device("vbd", "normal", (0.01,)),),
                                target=TargetPlan("unpause", "err")))
    assert "guest lost although the target said (err ...)" in \
        violations(out)


def test_the_checker_catches_two_running_copies(monkeypatch):
    # The handover resumes the source whatever the verdict.
    monkeypatch.setattr(handover_module, "OK", "not-ok")

    def resume_always(self):
        handover_module.resume_domain(self.dominfo, self.env.platform,
                                      allow_fast=False)
        self.report.outcome = RESUMED
    monkeypatch.setattr(handover_module.Handover, "_destroy", resume_always)
    out = run_schedule(Schedule(devices=(Device("vbd", "normal", (0.01,)),)))
    assert "two running copies" in violations(out)


def test_a_backend_removing_its_directory_before_its_drain_is_not_detected():
    """A buggy kernel (hotplug cleanup before the drain) looks drained: the
    handover releases the target while a request is still in flight.  No
    xenstore-only toolstack can see this; stock 3.1 kernels never do it
    (docs/design.md, "What cannot be detected").  The checker sees it."""
    out = run_schedule(Schedule(devices=(Device("vbd", "buggy", (0.15,)),)))
    found = violations(out)
    assert any("before an in-flight request completed" in v for v in found), \
        found


def test_an_exception_while_reading_the_verdict_never_resumes_the_source(
        monkeypatch):
    """Found by the rehearsal's source-side faults: an unexpected exception
    while reading the verdict escaped ``Handover.run`` after the target was
    released, and save's failure path resumed the source copy while the
    target ran its own: two running copies.  Fixed: after the release,
    whatever goes wrong in reading the verdict makes it UNKNOWN."""
    def broken(sock, timeout, already=""):
        raise MemoryError("injected")
    monkeypatch.setattr(handover_module, "read_verdict", broken)
    out = run_schedule(Schedule(devices=(Device("vbd", "normal", (0.01,)),)))
    assert violations(out) == []
    assert out.report.outcome == handover_module.UNKNOWN
    assert out.target.running


def test_a_failed_remove_in_xends_own_destroy_is_not_counted_as_ours():
    """Found by the 1000-run profile: an ``rm`` fault armed for anyone was
    taken by xend's own destroyDomain, which then left the domain's
    directory; that is stock code failing (stock leaves it too), not the
    handover, and the checker must say so instead of flagging it."""
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.01,)),), protocol=True,
        target=TargetPlan("completeRestore", "hangup"),
        store_fault=StoreFault(who="any", op="rm", err=errno.EAGAIN,
                               count=2, path_index=0)))
    assert violations(out) == []


def test_a_fault_that_breaks_the_resume_is_not_blamed_on_the_handover():
    """Found by the 1000-run profile: a write fault (count 2) armed for
    anyone was half taken by the re-creating resume, which then failed and
    left the source suspended; the checker missed that the fault was taken
    at all because half of it was still pending."""
    out = run_schedule(Schedule(
        target=TargetPlan("stream", "err"),
        store_fault=StoreFault(who="any", op="write", err=errno.EAGAIN,
                               count=2, path_index=0)))
    assert violations(out) == []


def test_an_exception_while_releasing_takes_the_stock_order(monkeypatch):
    """Found by the rehearsal's source-release fault: an exception out of
    the release (its listing of the non-block devices was not guarded)
    escaped ``Handover.run`` after block devices were already released,
    and save's failure path then fast-resumed a SUSPEND_CANCEL guest on
    torn-down devices.  Fixed: release_devices guards that listing, and
    the handover takes any exception there as "released, unconfirmed"
    (stock order, or a re-creating resume if the target failed)."""
    real = handover_module.release_devices
    state = {}

    def release_then_raise(dominfo, store, **kwargs):
        real(dominfo, store, **kwargs)
        # The target's (err ...) arrives meanwhile.
        target = state["out"].target
        deadline = time.monotonic() + 5.0
        while target.err_sent_at is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
        raise RuntimeError(errno.EIO, "injected after the release")
    monkeypatch.setattr(handover_module, "release_devices",
                        release_then_raise)
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.01,)),), suspend_cancel=True,
        target=TargetPlan("stream", "err", delay=0.05)),
        before_save=lambda o: state.setdefault("out", o))
    assert violations(out) == []
    assert out.save_error is None
    assert out.report.path == STOCK_ORDER
    assert out.report.outcome == RESUMED
    assert "domain_resume:0" in out.journal   # devices re-created


def test_a_watch_fault_never_reaches_the_harness_teardown():
    """Found by the 1000-run profile: a fault meant for xend's second
    watch, never reached by the handover, hit XendApi.close()'s own watch
    and left its watcher thread running.  Teardown now runs unarmed."""
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", ()),),
        target=TargetPlan("stream", "err"),
        store_fault=StoreFault(who="xend", op="watch", err=errno.EAGAIN,
                               at=1)))
    assert violations(out) == []
