"""Failing examples the property tests found, kept as ordinary tests.

Each names the schedule hypothesis shrank it to and what was wrong.  A
safe run has neither an oracle violation nor a harness error
(``_found``); the checker's own teeth are asserted by invariant ID.
"""
from __future__ import annotations

import errno
import time

import pytest

import xend_fastmig.handover as handover_module
from fastmig_tools.models.patched_save import MigrationFailed
from fastmig_tools.rehearse.injection import break_release, step_matcher
from xend_fastmig.handover import (AT_TARGET, FAST, RESUMED, STOCK_ORDER,
                                   SUSPENDED)

from tests.properties.harness import (Device, Schedule, StoreFault,
                                      TargetPlan, run_schedule)
from tests.properties.observe import findings as _found
from tests.properties.observe import ids, violations


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
    assert _found(out) == []
    assert out.report.path == STOCK_ORDER
    assert out.report.outcome == RESUMED
    assert out.dominfo.destroyed_domid is None
    assert out.target.released_at is None  # never released
    # Devices were released: the resume re-created them.
    assert out.dominfo.resume_path == "recreate"
    assert isinstance(out.save_error, MigrationFailed)
    assert "resumed at the source" in str(out.save_error)


def test_an_err_during_a_hung_drain_resumes_the_source():
    out = run_schedule(Schedule(
        devices=(Device("vbd", "hung", (0.01,)), Device("vbd", "normal")),
        target=TargetPlan("waitForDevices", "err"),
        shared_xenwatch=True))
    assert _found(out) == []


def _after_the_targets_answer(out):
    """Wait (bounded) until the target answered, and give the answer the
    time to cross the loopback connection."""
    deadline = time.monotonic() + 5.0
    while out.target.replied_at is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)


def _raise_in(step, exc, nth=1):
    """A ``before_save``: the ``nth`` request of the handover's ``step``
    on xend's connection raises ``exc`` once the target answered (the one
    fault injector's ``raise_at``, as the rehearsal's source faults)."""
    def before_save(out):
        matches = step_matcher(step, out.dominfo.getDomid())
        seen = []

        def when(op, path):
            if not matches(op, path):
                return False
            seen.append(path)
            if len(seen) < nth:
                return False
            _after_the_targets_answer(out)
            return True
        out.xend_handle.raise_at(when, exc)
    return before_save


def test_an_err_when_capture_fails_resumes_on_the_intact_devices():
    """The stock-order fallback before anything was released: a target that
    already failed gets the source resumed by stock's own resumeDomain on
    its intact devices (fast for a SUSPEND_CANCEL guest), and save raises
    saying so."""
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.01,)),),
        suspend_cancel=True, target=TargetPlan("stream", "err"),
        early_release=False),
        before_save=_raise_in("capture", RuntimeError(
            errno.EIO, "injected: reading the devices")))
    assert _found(out) == []
    assert out.report.outcome == RESUMED
    assert isinstance(out.save_error, MigrationFailed)
    assert "resumed at the source" in str(out.save_error)
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
    assert _found(out) == []
    assert out.xend_dead


# ---------------------------------------------------------------------------
# The checker has teeth: broken handovers are caught.
# ---------------------------------------------------------------------------

class _NoWait:
    def __init__(self, store, devices, timeout, gone_only=False):
        pass

    def wait(self):
        return []


def test_the_checker_catches_a_release_before_the_drain(monkeypatch):
    monkeypatch.setattr(handover_module, "DrainWaiter", _NoWait)
    out = run_schedule(Schedule(devices=(Device("vbd", "normal", (0.1,)),)))
    found = violations(out)
    assert "I4" in ids(found), found


def test_the_checker_catches_a_destroy_after_an_err(monkeypatch):
    # The handover no longer recognises (err ...): it destroys the source.
    monkeypatch.setattr(handover_module, "ERR", "not-err")
    out = run_schedule(Schedule(devices=(Device("vbd", "normal", (0.01,)),),
                                target=TargetPlan("unpause", "err")))
    found = violations(out)
    assert "I2" in ids(found), found


def test_the_checker_catches_two_running_copies(monkeypatch):
    # The handover resumes the source whatever the verdict.
    monkeypatch.setattr(handover_module, "OK", "not-ok")

    def resume_always(self):
        self.dominfo.resumeDomain(devices_released=True)
        self.report.outcome = RESUMED
    monkeypatch.setattr(handover_module.Handover, "_destroy", resume_always)
    out = run_schedule(Schedule(devices=(Device("vbd", "normal", (0.01,)),)))
    found = violations(out)
    assert "I1" in ids(found), found


def test_a_backend_removing_its_directory_before_its_drain_is_not_detected():
    """A buggy kernel (hotplug cleanup before the drain) looks drained: the
    handover releases the target while a request is still in flight.  No
    xenstore-only toolstack can see this; stock 3.1 kernels never do it
    (docs/design.md, "What cannot be detected").  The checker sees it."""
    out = run_schedule(Schedule(devices=(Device("vbd", "buggy", (0.15,)),)))
    found = violations(out)
    assert "I4" in ids(found), found


def test_an_exception_while_reading_the_verdict_never_resumes_the_source():
    """Found by the rehearsal's source-side faults: an unexpected exception
    while reading the verdict escaped ``Handover.run`` after the target was
    released, and save's failure path resumed the source copy while the
    target ran its own: two running copies.  Fixed: after the release,
    whatever goes wrong in reading the verdict makes it UNKNOWN."""
    out = run_schedule(Schedule(devices=(Device("vbd", "normal", (0.01,)),),
                                source_fault="verdict"))
    assert _found(out) == []
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
    assert _found(out) == []


def test_a_fault_that_breaks_the_resume_is_not_blamed_on_the_handover():
    """Found by the 1000-run profile: a write fault (count 2) armed for
    anyone was half taken by the re-creating resume, which then failed and
    left the source suspended; the checker missed that the fault was taken
    at all because half of it was still pending."""
    out = run_schedule(Schedule(
        target=TargetPlan("stream", "err"),
        store_fault=StoreFault(who="any", op="write", err=errno.EAGAIN,
                               count=2, path_index=0)))
    assert _found(out) == []


def test_an_exception_while_releasing_takes_the_stock_order():
    """Found by the rehearsal's source-release fault: an exception out of
    the release escaped ``Handover.run`` after block devices were already
    released, and save's failure path then fast-resumed a SUSPEND_CANCEL
    guest on torn-down devices.  Fixed: the handover takes any exception
    out of ``_releaseDevices(force=True)`` as "released, unconfirmed"
    (stock order, or a re-creating resume if the target failed).

    The exception comes out of the domain's forced ``_releaseDevices``
    after its real work (``injection.break_release``)."""
    def arm(out):
        break_release(out.dominfo,
                      RuntimeError(errno.EIO, "injected after the release"),
                      # The target's (err ...) arrives meanwhile.
                      meanwhile=lambda: _after_the_targets_answer(out))
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.01,)),), suspend_cancel=True,
        target=TargetPlan("stream", "err", delay=0.05),
        early_release=False),
        before_save=arm)
    assert _found(out) == []
    assert out.report.path == STOCK_ORDER
    assert out.report.outcome == RESUMED
    assert out.dominfo.resume_path == "recreate"   # devices re-created


def test_a_watch_fault_never_reaches_the_harness_teardown():
    """Found by the 1000-run profile: a fault meant for xend's second
    watch, never reached by the handover, hit XendApi.close()'s own watch
    and left its watcher thread running.  Teardown now runs unarmed."""
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", ()),),
        target=TargetPlan("stream", "err"),
        store_fault=StoreFault(who="xend", op="watch", err=errno.EAGAIN,
                               at=1)))
    assert _found(out) == []


# ---------------------------------------------------------------------------
# issue 11: defects found by adversarial review, on the modelled host
# ---------------------------------------------------------------------------

def _tree(xst, path):
    """Every node at or below ``path`` with its value."""
    nodes = {path: xst.Read(path)}
    for child in xst.List(path):
        nodes.update(_tree(xst, "%s/%s" % (path, child)))
    return nodes


_BYSTANDER = 900


def _with_bystander_and_rewritten_keys(where, state):
    """Before the save: a bystander guest on the same host, and the
    migrating guest pointing its frontends' ``backend`` keys elsewhere."""
    from fastmig_tools.models.layout import write_domain_layout

    def before_save(out):
        dominfo = out.dominfo
        xst = dominfo.store.xstransact
        bystander = write_domain_layout(
            dominfo.store, _BYSTANDER, "bystander", "uuid-bystander",
            vbds=["/dev/vg/b0", "/dev/vg/b1"], vifs=[{}])
        disks = [d.backend for d in bystander.vbds]
        for layout in dominfo.layout.devices:
            if where == "vif-dom0" and layout.devclass != "vif":
                continue
            if where in ("dom0", "vif-dom0"):
                target = "/local/domain/0/backend"
            elif layout.devclass == "vif":
                target = disks[0]
            else:
                target = disks[1]
            xst.Write(layout.frontend, "backend", target)
        state["xst"] = xst
        state["before"] = _tree(xst, "/local/domain/0/backend")
        state["bystander"] = dict(
            (path, value) for path, value in state["before"].items()
            if "/%d" % _BYSTANDER in path)
    return before_save


@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize("where", ["bystander", "dom0", "vif-dom0"])
def test_defect1_a_guests_backend_keys_never_reach_other_guests(where,
                                                                early):
    """Issue 11, defect 1: the guest rewrote its vbd's and vif's
    ``backend`` keys to a bystander guest's disks, or to dom0's whole
    backend tree (all, or only the vif's).  The bystander's backends stay exactly as they were,
    and the guest's own disks still drain before the go."""
    state = {}
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.01, 0.05)),
                 Device("tap", "normal", (0.02,))),
        early_release=early),
        before_save=_with_bystander_and_rewritten_keys(where, state),
        after_save=lambda o: state.setdefault(
            "after", _tree(state["xst"], "/local/domain/0/backend")))
    assert _found(out) == []
    assert out.report.path == FAST, out.report.summary()
    assert out.report.outcome == AT_TARGET
    assert sorted(name.split("/")[0] for name, _, _ in
                  out.report.devices) == ["tap", "vbd"]
    after = state["after"]
    assert state["bystander"]
    for path, value in state["bystander"].items():
        assert after.get(path) == value, path


@pytest.mark.parametrize("early", [False, True])
def test_defect5_a_failed_target_after_protocol_taps_resumes_the_source(
        early):
    """Issue 11, defect 5: shutdown-request ``tap`` (and vbd) backends had
    confirmed their drain when the target failed; 3.1's createDevice
    refused the re-created devices while their old directories stood."""
    out = run_schedule(Schedule(
        devices=(Device("tap", "normal", (0.01,)),
                 Device("vbd", "normal", (0.02,))),
        protocol=True, target=TargetPlan("unpause", "err"),
        early_release=early))
    assert _found(out) == []
    assert out.report.outcome == RESUMED, out.report.summary()
    assert out.dominfo.resume_path == "recreate"
    assert out.dominfo.resume_error is None
    assert out.dominfo.state == "resumed"


def test_defect11_an_hvm_guest_is_reported_suspended_not_resumed():
    """Issue 11, defect 11: after the release, Xen 3.1 cannot bring an
    HVM guest back (libxc refuses the non-cooperative resume)."""
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.01,)),), hvm=True,
        suspend_cancel=True, target=TargetPlan("unpause", "err")))
    assert _found(out) == []
    assert out.report.outcome == SUSPENDED
    assert out.dominfo.state == "suspended"
    assert isinstance(out.save_error, MigrationFailed)
    assert "suspended at the source" in str(out.save_error)


def test_an_hvm_guest_whose_save_fails_comes_back_as_under_stock():
    """Found while pinning defect 11: with the early release, an HVM
    guest (3.1 gives every one SUSPEND_CANCEL) whose xc_save failed after
    the suspend had its block devices released already, so only the
    re-creating resume was left, and 3.1 refuses it for HVM: suspended,
    where stock's failure path resumes it cooperatively.  Fixed: no early
    release for HVM guests."""
    out = run_schedule(Schedule(
        devices=(Device("vbd", "normal", (0.01,)),), hvm=True,
        suspend_cancel=True, source_fault="save", early_release=True))
    assert _found(out) == []
    assert out.report.outcome == RESUMED, out.report.summary()
    assert out.dominfo.resume_path == "fast"
    assert out.dominfo.state == "resumed"


def test_defect6_a_second_migrate_during_a_handover_is_refused_by_save():
    """Issue 11, defect 6, through the patched save: a second ``xm
    migrate`` of a domain whose first migration is draining raises at once
    and never reaches save's failure path (whose resume would run the
    domain next to the first migration's target)."""
    import socket
    import threading

    from fastmig_tools.models.patched_save import save
    from tests.unit.fakes import (FakeDomInfo, FakePlatform, FakeXenstore,
                                  write_pv_domain)
    from xend_fastmig.handover import Environment
    from xend_fastmig.options import FastMigrationOptions

    backend = "/local/domain/0/backend/vbd/7/51712"
    store = FakeXenstore()
    journal = []
    write_pv_domain(store, 7)
    dominfo = FakeDomInfo(store, journal=journal, layout={})
    env = Environment(store, FakePlatform(journal), FastMigrationOptions(
        drain_timeout=5.0, verdict_timeout=5.0))
    first_source, first_target = socket.socketpair()
    second_source, second_target = socket.socketpair()
    handovers, errors = [], []

    def first_target_side():
        while first_target.recv(65536):
            pass
        journal.append("first target released")
        first_target.sendall(b"(ok)\n")

    def first_migration():
        try:
            save(first_source.fileno(), dominfo, True, True, "h",
                 sock=first_source, env=env, platform=FakePlatform(journal),
                 handovers=handovers)
        except Exception as exc:
            errors.append(exc)
    threads = [threading.Thread(target=first_target_side, daemon=True),
               threading.Thread(target=first_migration, daemon=True)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5.0
        while store.read(backend + "/online") != "0":
            assert time.monotonic() < deadline, "the first never released"
            time.sleep(0.005)
        # The second migration's target has already failed: under the old
        # code its failure path resumed the domain mid-drain.
        second_target.sendall(b'(err (type x) (value "no memory"))\n')
        with pytest.raises(MigrationFailed) as info:
            save(second_source.fileno(), dominfo, True, True, "h",
                 sock=second_source, env=env,
                 platform=FakePlatform(journal))
        assert "being migrated" in str(info.value)
        assert "resumeDomain" not in journal
        store.remove(backend)   # the first one's backend drains
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert handovers[0].report.outcome == AT_TARGET
        assert "resumeDomain" not in journal
        assert journal.index("first target released") < \
            journal.index("destroyDomain")
    finally:
        store.stop()
        for sock in (first_source, first_target, second_source,
                     second_target):
            sock.close()


def test_a_save_failing_before_its_try_leaves_the_domain_migratable():
    """Regression: begin() ran before save's try, so a save failing there
    (the signature write to a connection already reset) never reached
    finish(), and the domain stayed 'being migrated' until xend restarted.
    The hunk now begins the handover right before the try."""
    import socket

    from fastmig_tools.models.patched_save import save
    from tests.unit.fakes import (FakeDomInfo, FakePlatform, FakeXenstore,
                                  write_pv_domain)
    from xend_fastmig import registry
    from xend_fastmig.handover import Environment, begin
    from xend_fastmig.options import FastMigrationOptions

    store = FakeXenstore()
    journal = []
    write_pv_domain(store, 7)
    dominfo = FakeDomInfo(store, journal=journal, layout={})
    env = Environment(store, FakePlatform(journal), FastMigrationOptions())
    dead, peer = socket.socketpair()
    peer.close()
    later, later_peer = socket.socketpair()
    try:
        with pytest.raises(OSError):
            save(dead.fileno(), dominfo, True, True, "h", sock=dead,
                 env=env, platform=FakePlatform(journal))
        handover = begin(dominfo, later, False, env)
        assert handover is not None
        registry.release(dominfo, handover)
    finally:
        store.stop()
        for sock in (dead, later, later_peer):
            sock.close()


def test_early_release_then_xc_save_failure_with_a_hung_backend():
    """The early release's one trade-off (docs/design.md, decision table):
    found by 1000 randomized runs.  The block devices are released in
    xc_save's suspend handler; if xc_save then fails, only the re-creating
    resume is left, and a hung backend's directory never goes, so the
    guest stays suspended (and says so) where stock resumes a
    SUSPEND_CANCEL guest on its devices, whose disk is hung all the same.
    ``(xend-fast-migration-early-release no)`` keeps stock's behaviour."""
    schedule = Schedule(
        devices=(Device("vbd", "hung", ()),), suspend_cancel=True,
        source_fault="save", early_release=True)
    out = run_schedule(schedule)
    assert out.report.outcome == SUSPENDED, out.report.summary()
    assert out.dominfo.state != "resumed"
    assert "vbd/" in out.report.summary() or out.report.reason


def test_without_the_early_release_that_save_failure_resumes_as_stock():
    out = run_schedule(Schedule(
        devices=(Device("vbd", "hung", ()),), suspend_cancel=True,
        source_fault="save", early_release=False))
    assert _found(out) == []
    assert out.report.outcome == RESUMED, out.report.summary()
    assert out.dominfo.resume_path == "fast"
