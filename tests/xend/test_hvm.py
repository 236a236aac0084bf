"""HVM guests on stock 3.1 xend: qemu-dm's state travels after the image."""
from __future__ import annotations

import os

import pytest

from fastmig_tools.xendharness.host import HostError

pytestmark = [pytest.mark.xend, pytest.mark.timeout(120)]


def device_models(host):
    return [p for p in host.processes() if "devicemodel.py" in p or "zombie" in p]


def test_hvm_live_migration(xend_pair, xen_tree):
    pair = xend_pair()
    guest = pair.create_guest(disks=0, hvm=True)
    assert len(device_models(pair.source)) == 1
    result = pair.migrate(guest, live=True)
    assert result.ok and result.target_domid is not None, result.error
    assert pair.wait_running(pair.target, result.target_domid)
    assert device_models(pair.source) == []
    t = result.timings
    assert t.suspended < t.image_sent < t.unpaused
    left = pair.leftovers(keep_domids={"target": [result.target_domid]})
    if os.path.basename(xen_tree) == "3.1.0":
        # The device model loads /tmp/xen.qemu-dm.<domid>; nobody removes it.
        assert [p for p in device_models(pair.target)
                if "-loadvm /tmp/xen.qemu-dm.%d" % result.target_domid in p]
        assert left["machine"] == ["temp file /tmp/xen.qemu-dm.%d" % result.target_domid]
    else:
        # c056297fe7 moved the state file, but restore writes
        # /var/lib/xen/qemu-save.<domid> while image.py passes -loadvm
        # /var/lib/xen/xen.qemu-dm.<domid>: the device model finds nothing.
        assert left["machine"] == ["temp file /var/lib/xen/qemu-save.%d"
                                   % result.target_domid]
        assert [p for p in left["target"] if p.startswith("process zombie")]


def test_hvm_resume_at_source_keeps_no_device_model(xend_pair):
    """Save fails after the suspend: HVM guests carry SUSPEND_CANCEL (image.py),
    so resumeDomain resumes fast, but qemu-dm already saved and exited."""
    pair = xend_pair()
    guest = pair.create_guest(disks=0, hvm=True)
    pair.fail_save_after_suspend()
    pair.migrate(guest, live=False)
    assert pair.wait_running(pair.source, guest.domid)
    resumes = [c["args"] for c in pair.source.call("xc_calls")
               if c["call"] == "domain_resume"]
    assert resumes == [[guest.domid, 1]]
    assert device_models(pair.source) == []


def test_hypervisor_refuses_uncooperative_hvm_resume(xend_pair):
    """3.1 libxc (xc_resume.c): xc_domain_resume(domid, 0) of an HVM guest
    fails with "Cannot resume uncooperative HVM guests"."""
    pair = xend_pair()
    guest = pair.create_guest(disks=0, hvm=True)
    with pytest.raises(HostError, match="Cannot resume uncooperative HVM guests"):
        pair.source.call("xc", method="domain_resume", args=[guest.domid, 0])
