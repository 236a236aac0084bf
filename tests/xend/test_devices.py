"""Block device classes and dom0 backend flavours under stock 3.1 xend."""
from __future__ import annotations


import pytest

pytestmark = [pytest.mark.xend, pytest.mark.timeout(120)]


def test_tap_device_migrates(xend_pair):
    pair = xend_pair()
    guest = pair.create_guest(disks=2, devclass="tap")
    pair.arm_inflight(guest, delay=0.01)
    result = pair.migrate(guest)
    assert result.ok and result.target_domid is not None, result.error
    assert pair.wait_running(pair.target, result.target_domid)
    tap = pair.target.store_tree("/local/domain/0/backend/tap/%d" % result.target_domid)
    assert len([p for p in tap if p.count("/") == 7]) == 2
    assert [p for p in pair.source.store_tree("/local/domain/0/backend/tap")
            if p.count("/") == 7] == []
    verdict = pair.disk_verdict()
    assert verdict.clean, verdict.stale


def test_tap_slow_write_is_not_waited_for(xend_pair):
    """testDeviceComplete lists vbd only (facts section 5): a slow write on
    a tap disk lands after the target runs on both trees."""
    pair = xend_pair()
    guest = pair.create_guest(disks=1, devclass="tap")
    pair.arm_inflight(guest, delay=0.6)
    result = pair.migrate(guest)
    assert result.target_domid is not None
    landed = [e["t"] for e in pair.source.backend_events() if e["event"] == "landed"]
    assert len(landed) == 1 and result.timings.unpaused < landed[0]
    assert not pair.disk_verdict().clean


def test_shutdown_request_backend_is_unused_by_stock(xend_pair):
    """A dom0 advertising feature-shutdown-request changes nothing for stock
    xend: it never writes shutdown-request, so no shutdown-done appears and
    the classic teardown still removes the backend."""
    pair = xend_pair(backend="shutdown-request")
    assert pair.source.store_tree("/local/domain/0/control/feature-shutdown-request")
    guest = pair.create_guest(disks=1)
    pair.arm_inflight(guest, delay=0.01)
    result = pair.migrate(guest)
    assert result.target_domid is not None
    events = [e["event"] for e in pair.source.backend_events()]
    assert "shutdown-done" not in events and "removed" in events
    assert pair.disk_verdict().clean


@pytest.mark.parametrize("xen_tree", ["3.1.0"], indirect=True)
def test_hung_source_backend_on_3_1_0(xend_pair):
    """3.1.0's vacuous wait releases the target although the source's
    backend never drained; the backend directory stays behind at the source.
    (On the 2007-06-08 tree testDeviceComplete would poll MIGRATE_TIMEOUT,
    30 s, and then carry on.)"""
    pair = xend_pair(backend="hung", target_backend="classic")
    guest = pair.create_guest(disks=1)
    source_domid = guest.domid
    pair.arm_inflight(guest, delay=0.01)
    result = pair.migrate(guest)
    assert result.target_domid is not None
    assert pair.wait_running(pair.target, result.target_domid)
    left = pair.leftovers(keep_domids={"target": [result.target_domid]})["source"]
    assert "backend /local/domain/0/backend/vbd/%d/51712" % source_domid in left
    assert not any(e["event"] == "landed" for e in pair.source.backend_events())
