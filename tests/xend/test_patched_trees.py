"""The harness runs whatever patch list it is given, on either side."""
from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from fastmig_tools.xendharness.build import HarnessUnavailable, prepare_tree

pytestmark = [pytest.mark.xend, pytest.mark.timeout(120)]

MARK = "harness-test-patch: domain_migrate entered"


def marker_patch(tree: str, folder: Path) -> Path:
    """A one-line patch of the tree's own domain_migrate, made at run time."""
    rel = "tools/python/xen/xend/XendDomain.py"
    old = (Path(tree) / rel).read_text().splitlines(True)
    new = []
    for line in old:
        new.append(line)
        if line.startswith("    def domain_migrate("):
            new.append('        log.info("%s")\n' % MARK)
    patch = folder / "marker.patch"
    patch.write_text("".join(difflib.unified_diff(old, new, "a/" + rel, "b/" + rel)))
    return patch


def test_patched_source_to_stock_target(xend_pair, xen_tree, tmp_path):
    patch = marker_patch(xen_tree, tmp_path)
    pair = xend_pair(patches=[patch], target_patches=[],
                     xend_config={"xend-fast-migration": "no"})
    assert pair.source_tree.root != pair.target_tree.root
    assert pair.source.call("option", name="xend-fast-migration") == "no"
    guest = pair.create_guest(disks=1)
    result = pair.migrate(guest)
    assert result.target_domid is not None, result.error
    assert MARK in pair.source.xend_log()
    assert MARK not in pair.target.xend_log()


def test_a_patch_that_does_not_apply_fails_with_its_rejects(xen_tree, tmp_path):
    bad = tmp_path / "bad.patch"
    bad.write_text("--- a/tools/python/xen/xend/XendDomain.py\n"
                   "+++ b/tools/python/xen/xend/XendDomain.py\n"
                   "@@ -1,1 +1,1 @@\n-no such line\n+x\n")
    with pytest.raises(HarnessUnavailable, match="does not apply"):
        prepare_tree(xen_tree, [bad])


@pytest.mark.parametrize("operation", ["destroy", "poweroff", "reboot"])
def test_same_hypervisor_calls_as_the_unpatched_tree(xend_pair, xen_tree, tmp_path,
                                                     operation):
    """How a patched tree's destroy/shutdown/reboot is compared with stock:
    the stand-in's call log, domids normalised.  (The marker patch only
    touches domain_migrate, so here they must be equal.)"""
    import time
    logs = []
    for patches in ([], [marker_patch(xen_tree, tmp_path)]):
        pair = xend_pair(patches=patches)
        guest = pair.create_guest(disks=1)
        start = len(pair.source.call("xc_calls"))
        if operation == "destroy":
            pair.destroy(guest)
        else:
            pair.shutdown(guest, operation)
        deadline = time.time() + 10
        while time.time() < deadline:
            doms = [d["domid"] for d in pair.domains(pair.source)]
            if guest.domid not in doms and (operation != "reboot" or doms):
                break
            time.sleep(0.02)
        if operation == "reboot":
            assert pair.wait_running(pair.source, doms[0])
        pair._wait_backends_idle()
        logs.append(pair.hypervisor_calls(pair.source, since=start))
    assert logs[0] == logs[1]
    assert ("domain_destroy", ("d1",), "ok") in logs[0]
