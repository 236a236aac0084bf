"""The project's patch series on each tree's real xend (two harness hosts).

What a packager ships: the tree patched by ``patches/series``.  Each test
runs the tree's own ``domain_migrate`` / relocation server with the
series applied on one side, both or neither, and checks where the guest
ends up, what the disk holds and what ``xm migrate`` (domain_migrate) says.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fastmig_tools.patchtool.engine import series_paths
from fastmig_tools.xendharness.observe import stock_leftovers, violations

pytestmark = [pytest.mark.xend, pytest.mark.timeout(180)]

PATCHES = Path(__file__).resolve().parents[2] / "patches"


def series() -> list[Path]:
    return series_paths(PATCHES)


def running(pair, host):
    return [d for d in pair.domains(host) if not d["paused"] and not d["shutdown"]]


@pytest.mark.parametrize("live", [True, False], ids=["live", "nonlive"])
@pytest.mark.parametrize("direction", ["patched-stock", "stock-patched",
                                       "patched-patched"])
def test_migration_in_every_direction(xend_pair, xen_tree, direction, live):
    source_patched = direction.startswith("patched")
    target_patched = direction.endswith("-patched")
    pair = xend_pair(patches=series() if source_patched else [],
                     target_patches=series() if target_patched else [])
    guest = pair.create_guest(disks=2, memory_mb=1024)
    domid = guest.domid
    pair.arm_inflight(guest, delay=0.05)
    result = pair.migrate(guest, live=live)
    assert violations(pair, domid, result,
                      stocks_own=stock_leftovers(xen_tree)) == []
    assert result.ok, result.error
    assert result.target_domid is not None, pair.source.xend_log()[-3000:]
    assert pair.wait_running(pair.target, result.target_domid)
    assert pair.domains(pair.source) == []
    assert pair.disk_verdict().clean
    log = pair.source.xend_log()
    assert ("fast handover" in log) == source_patched
    t = result.timings
    assert t.suspended < t.image_sent <= t.gate_open < t.unpaused


def test_the_patched_source_releases_the_target_before_the_destroy(
        xend_pair, xen_tree):
    """The point of the series: the gate no longer waits for the source's
    domain_destroy (seconds per GB), yet the slow in-flight write lands
    before the target runs."""
    pair = xend_pair(patches=series(), target_patches=[],
                     destroy_seconds_per_gb=1.0)
    guest = pair.create_guest(disks=1, memory_mb=4096)
    domid = guest.domid
    pair.arm_inflight(guest, delay=0.4)
    result = pair.migrate(guest, live=True)
    assert violations(pair, domid, result,
                      stocks_own=stock_leftovers(xen_tree)) == []
    assert result.ok, result.error
    t = result.timings
    assert t.gate_open < t.source_destroyed, t
    assert pair.disk_verdict().clean
    landed = [e["t"] for e in pair.source.backend_events()
              if e["event"] == "landed"]
    assert landed and max(landed) < t.gate_open


@pytest.mark.parametrize("fault", ["fail_in_stream", "fail_complete_restore",
                                   "fail_unpause"])
def test_a_target_failing_after_the_image_gets_the_guest_resumed(
        xend_pair, xen_tree, fault):
    """Stock loses the guest here (tests/xend/test_target_faults.py); the
    patched source reads the relocation server's (err ...), resumes its
    copy on re-created devices, and domain_migrate raises saying so; the
    oracle finds nothing wrong."""
    pair = xend_pair(patches=series(), target_patches=[])
    guest = pair.create_guest(disks=1)
    domid = guest.domid
    getattr(pair, fault)()
    result = pair.migrate(guest, live=True)
    assert violations(pair, domid, result, stock_ends_without_copy=True,
                      stocks_own=stock_leftovers(xen_tree)) == []
    assert result.error is not None and "resumed at the source" in result.error
    assert result.target_domid is None
    assert pair.wait_running(pair.source, guest.domid)
    assert [d["domid"] for d in running(pair, pair.source)] == [guest.domid]
    assert running(pair, pair.target) == []


def test_option_off_with_the_package_deleted_runs_stock(xend_pair, tmp_path):
    """(xend-fast-migration no) imports nothing of the package: with the
    package removed from the patched tree the migration is stock's."""
    pair = xend_pair(patches=series(), target_patches=[],
                     xend_config={"xend-fast-migration": "no"})
    package = pair.source_tree.root / "tools/python/xen/xend/fastmig"
    assert package.is_dir()
    # The prepared tree is a shared cache: put the package back afterwards.
    kept = tmp_path / "fastmig"
    shutil.move(str(package), str(kept))
    try:
        guest = pair.create_guest(disks=1)
        result = pair.migrate(guest, live=True)
        assert result.ok, result.error
        assert result.target_domid is not None
        log = pair.source.xend_log()
        assert "fastmig:" not in log and "xend-fast-migration" not in log
        assert "Traceback" not in log
    finally:
        shutil.move(str(kept), str(package))
