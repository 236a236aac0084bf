"""What stock 3.1 does when the target fails after the source sent the image.

Stock sources never read the relocation verdict (facts section 6): they
destroy their copy as soon as ``save`` returns, so whatever the target does
afterwards decides whether the VM survives.  Each fault is injected through
the harness (hypervisor stand-in, helpers, backend, process, the host's
xenstored), never by changing xend.  Where a fault is new here, a patched
source's run under it is pinned beside stock's.
"""
from __future__ import annotations

import time

import pytest


pytestmark = [pytest.mark.xend, pytest.mark.timeout(120)]


def start_migration(xend_pair):
    pair = xend_pair()
    guest = pair.create_guest(disks=1)
    return pair, guest


def assert_lost(pair, result):
    """Neither host runs the guest any more: stock loses the VM."""
    assert result.ok, result.error        # xm migrate reports success
    assert result.target_domid is None
    assert pair.domains(pair.source) == []
    if pair.target.xend_alive:
        assert [d for d in pair.domains(pair.target)
                if not d["paused"] and not d["shutdown"]] == []


def test_target_fails_in_the_stream(xend_pair):
    pair, guest = start_migration(xend_pair)
    pair.fail_in_stream()
    result = pair.migrate(guest)
    assert_lost(pair, result)
    assert "Restore failed" in pair.target.xend_log()
    assert pair.domains(pair.target) == []


def test_target_fails_to_unpause(xend_pair):
    pair, guest = start_migration(xend_pair)
    pair.fail_unpause()
    result = pair.migrate(guest)
    assert_lost(pair, result)
    assert "Domain unable to be unpaused" in pair.target.xend_log()
    # restore's except: dominfo.destroy() removed the target's copy.
    assert pair.domains(pair.target) == []


def test_target_dies_after_the_image(xend_pair):
    pair, guest = start_migration(xend_pair)
    pair.kill_target_after_image()
    result = pair.migrate(guest)
    assert not pair.target.xend_alive
    assert_lost(pair, result)


def test_waitfordevices_failure_is_swallowed(xend_pair):
    """XendCheckpoint.restore logs waitForDevices' VmError and unpauses
    anyway: the guest runs at the target without its disk (waitForDevice
    answered the error with destroyDevice, so once blkfront runs it closes
    and the backend goes away)."""
    pair, guest = start_migration(xend_pair)
    pair.fail_hotplug()
    result = pair.migrate(guest)
    assert result.ok, result.error
    assert result.target_domid is not None
    assert pair.wait_running(pair.target, result.target_domid)
    assert "could not be connected" in pair.target.xend_log()
    backend = "/local/domain/0/backend/vbd/%d/51712" % result.target_domid
    deadline = time.time() + 30
    while time.time() < deadline and pair.target.store_tree(backend):
        time.sleep(0.05)
    assert pair.target.store_tree(backend) == {}
    assert any(e["event"] == "frontend_closed"
               for e in pair.target.call("guest_events"))


def test_source_save_fails_after_suspend_cancel(xend_pair):
    """xc_save fails after the suspend: save's except runs resumeDomain at
    the source; with SUSPEND_CANCEL the guest resumes on its devices."""
    pair = xend_pair()
    guest = pair.create_guest(disks=1, suspend_cancel=True)
    pair.fail_save_after_suspend()
    result = pair.migrate(guest)
    assert result.target_domid is None
    assert pair.wait_running(pair.source, guest.domid)
    resumes = [c["args"] for c in pair.source.call("xc_calls")
               if c["call"] == "domain_resume"]
    assert resumes == [[guest.domid, 1]]


@pytest.mark.parametrize("xen_tree", ["3.1.0"], indirect=True)
def test_source_save_fails_after_suspend_no_cancel(xend_pair):
    """Without SUSPEND_CANCEL, 3.1.0 re-creates the devices and resumes the
    guest.  (The 2007-06-08 tree leaves it suspended after a 30 s wait, as
    test_checkpoint_without_suspend_cancel shows.)"""
    pair = xend_pair()
    guest = pair.create_guest(disks=1)
    pair.fail_save_after_suspend()
    result = pair.migrate(guest)
    assert result.target_domid is None
    assert pair.wait_running(pair.source, guest.domid)
    resumes = [c["args"] for c in pair.source.call("xc_calls")
               if c["call"] == "domain_resume"]
    assert resumes == [[guest.domid, 0]]


def test_target_resets_in_the_stream(xend_pair):
    """The target host goes down while the image streams in (before the
    suspend): xc_save's write fails on the reset, save's except resumes the
    guest at the source, and xm migrate still reports success."""
    pair, guest = start_migration(xend_pair)
    pair.reset_target_in_stream()
    result = pair.migrate(guest, live=True)
    assert result.ok, result.error
    assert not pair.target.xend_alive
    assert pair.wait_running(pair.source, guest.domid)
    log = pair.source.xend_log()
    assert "Connection reset by peer" in log or "Broken pipe" in log
    resumes = [c["args"] for c in pair.source.call("xc_calls")
               if c["call"] == "domain_resume"]
    assert resumes == [[guest.domid, 0]]


def test_target_fails_in_complete_restore(xend_pair):
    """introduce_domain fails (the target's xenstored cannot map the
    guest's store page): completeRestore raises before any device wait,
    restore's except destroys the copy, and the stock source, which never
    reads the verdict, has destroyed its own."""
    pair, guest = start_migration(xend_pair)
    pair.fail_complete_restore()
    result = pair.migrate(guest)
    assert_lost(pair, result)
    log = pair.target.xend_log()
    assert "Restore failed" in log
    assert "in _introduceDomain" in log, log[-3000:]
    assert "XendError: (22, 'Invalid argument')" in log
    assert "XendDomainInfo.completeRestore done" not in log
    assert pair.domains(pair.target) == []
    # Neither waitForDevices nor unpause was reached.
    assert not any(c["call"] == "domain_unpause" and c["args"][0] != 0
                   for c in pair.target.call("xc_calls"))
