"""xm save/restore, save -c, destroy, shutdown and reboot on each tree's real xend."""
from __future__ import annotations

import os
import time

import pytest

pytestmark = [pytest.mark.xend, pytest.mark.timeout(120)]


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


def guest_domids(pair, host):
    return [d["domid"] for d in pair.domains(host)]


def vbd_backends(host):
    return sorted(p for p in host.store_tree("/local/domain/0/backend/vbd")
                  if p.count("/") == 7)


def test_save_to_file_and_restore(xend_pair):
    pair = xend_pair()
    guest = pair.create_guest(disks=1)
    pair.arm_inflight(guest, delay=0.05)
    image = os.path.join(pair.workdir, "guest.save")
    pair.save(guest, image)
    assert wait_for(lambda: guest_domids(pair, pair.source) == [])
    assert os.path.getsize(image) > 0
    assert wait_for(lambda: vbd_backends(pair.source) == [])
    domid = pair.restore(image)
    assert pair.wait_running(pair.source, domid)
    assert wait_for(lambda: any(e["event"] == "newer_written" and e["domid"] == domid
                                for e in pair.source.call("guest_events")))
    pair._wait_backends_idle()
    verdict = pair.disk_verdict()
    assert verdict.clean, verdict.stale
    assert len(vbd_backends(pair.source)) == 1


def test_checkpoint_with_suspend_cancel(xend_pair):
    """``xm save -c`` of a guest whose kernel has SUSPEND_CANCEL: the
    domain resumes "fast" on its existing device connections."""
    pair = xend_pair()
    guest = pair.create_guest(disks=1, suspend_cancel=True)
    before = pair.source.store_tree("/local/domain/0/backend/vbd")
    pair.save(guest, os.path.join(pair.workdir, "ckpt.save"), checkpoint=True)
    assert pair.wait_running(pair.source, guest.domid)
    resumes = [c for c in pair.source.call("xc_calls") if c["call"] == "domain_resume"]
    assert [c["args"] for c in resumes] == [[guest.domid, 1]]
    assert pair.source.store_tree("/local/domain/0/backend/vbd") == before


@pytest.mark.timeout(150)
def test_checkpoint_without_suspend_cancel(xend_pair, xen_tree):
    """Without SUSPEND_CANCEL resumeDomain releases and re-creates every
    device.  3.1.0 releases them by removing the frontends, which a classic
    blkback answers by unregistering: the guest comes back.  The 2007-06-08
    tree releases them with destroyDevice (online=0, state=Closing), which
    a classic blkback of a suspended guest never answers: testDeviceComplete
    gives up after MIGRATE_TIMEOUT (30 s), createDevice raises "already
    connected" and the guest stays suspended with nothing running."""
    pair = xend_pair()
    guest = pair.create_guest(disks=1)
    before = vbd_backends(pair.source)
    pair.save(guest, os.path.join(pair.workdir, "ckpt.save"), checkpoint=True)
    assert guest_domids(pair, pair.source) == [guest.domid]
    resumes = [c for c in pair.source.call("xc_calls") if c["call"] == "domain_resume"]
    if os.path.basename(xen_tree) == "3.1.0":
        assert pair.wait_running(pair.source, guest.domid)
        assert [c["args"] for c in resumes] == [[guest.domid, 0]]
        assert "error" not in resumes[0]
        assert wait_for(lambda: vbd_backends(pair.source) == before)
        assert wait_for(lambda: pair.source.store_tree(before[0]).get(
            before[0] + "/hotplug-status") == "connected")
    else:
        assert resumes == []
        assert "is already connected" in pair.source.xend_log()
        info = [d for d in pair.domains(pair.source) if d["domid"] == guest.domid][0]
        assert info["shutdown"] and info["shutdown_reason"] == 2


def test_destroy(xend_pair):
    pair = xend_pair()
    guest = pair.create_guest(disks=2)
    pair.destroy(guest)
    assert guest_domids(pair, pair.source) == []
    assert wait_for(lambda: vbd_backends(pair.source) == [])
    calls = [c["call"] for c in pair.source.call("xc_calls")
             if c.get("args") and c["args"][0] == guest.domid]
    assert calls.count("domain_destroy") == 1


def test_shutdown_poweroff(xend_pair):
    pair = xend_pair()
    guest = pair.create_guest(disks=1)
    pair.shutdown(guest, "poweroff")
    assert wait_for(lambda: guest_domids(pair, pair.source) == [])
    assert wait_for(lambda: vbd_backends(pair.source) == [])
    shutdowns = [c["args"] for c in pair.source.call("xc_calls")
                 if c["call"] == "guest:SCHEDOP_shutdown"]
    assert shutdowns == [[guest.domid, 0]]


def test_reboot_restarts_under_a_new_domid(xend_pair):
    pair = xend_pair()
    guest = pair.create_guest(disks=1)
    pair.shutdown(guest, "reboot")
    new = wait_for(lambda: [d for d in guest_domids(pair, pair.source)
                            if d != guest.domid])
    assert new and guest.domid not in guest_domids(pair, pair.source)
    assert pair.wait_running(pair.source, new[0])
    assert wait_for(lambda: [p.rsplit("/", 2)[1] for p in vbd_backends(pair.source)]
                    == [str(new[0])])
