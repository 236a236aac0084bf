"""The release: what ``_releaseDevices(force=True)`` does to each backend."""

import socket
import sys

from tests.unit.fakes import FakeDomInfo, FakePlatform, write_pv_domain
from xend_fastmig import registry
from xend_fastmig.blockdevs import BlockDevice, capture_block_devices
from xend_fastmig.handover import Environment, begin
from xend_fastmig.options import FastMigrationOptions
from xend_fastmig.release import (release_block_device,
                                  release_block_devices,
                                  tear_down_confirmed)

BACKEND = "/local/domain/0/backend/vbd/7/51712"
FRONTEND = "/local/domain/7/device/vbd/51712"
BYSTANDER = "/local/domain/0/backend/vbd/8/51712"


def test_classic_backend_goes_offline_and_loses_its_frontend_only(store):
    write_pv_domain(store, 7, vifs=())
    dominfo = FakeDomInfo(store)
    del store.ops[:]
    assert release_block_devices(dominfo, store) == []
    assert store.read(BACKEND + "/online") == "0"
    assert store.read(FRONTEND) is None
    # The backend directory is the drain signal: never removed by us.
    assert store.read(BACKEND + "/frontend") == FRONTEND
    # Exactly two changes; /vm and everything else stay for xend.
    assert store.ops == [("write", BACKEND + "/online"),
                         ("remove", FRONTEND)]


def test_online_is_written_before_the_frontend_goes(store):
    write_pv_domain(store, 7, vifs=())
    del store.ops[:]
    release_block_devices(FakeDomInfo(store), store)
    assert store.ops.index(("write", BACKEND + "/online")) < \
        store.ops.index(("remove", FRONTEND))


def test_protocol_backend_gets_a_forced_shutdown_request(store):
    write_pv_domain(store, 7, vifs=(), protocol=True)
    release_block_devices(FakeDomInfo(store), store)
    assert store.read(BACKEND + "/shutdown-request") == "force"
    assert store.read(BACKEND + "/online") == "1"
    assert store.read(FRONTEND + "/backend") == BACKEND


def test_tap_devices_are_released_like_vbds(store):
    write_pv_domain(store, 7, vbds=(), taps=(51744,), vifs=())
    release_block_devices(FakeDomInfo(store), store)
    assert store.read("/local/domain/0/backend/tap/7/51744/online") == "0"
    assert store.read("/local/domain/7/device/vbd/51744") is None


def test_non_block_devices_are_left_for_the_destroy(store):
    """No forced destroyDevice of vifs (and so none on a guest-named
    path): they go with the source copy, or stay for its resume."""
    write_pv_domain(store, 7, vifs=(0, 1))
    dominfo = FakeDomInfo(store)
    release_block_devices(dominfo, store)
    assert dominfo.destroyed_devices == []
    assert store.read("/local/domain/7/device/vif/0/backend") == \
        "/local/domain/0/backend/vif/7/0"
    assert store.read("/local/domain/0/backend/vif/7/1/online") == "1"


def test_a_failing_block_release_is_reported_not_raised(store):
    write_pv_domain(store, 7, vbds=(51712, 51728), vifs=())
    store.fail["write"] = ("/local/domain/0/backend/vbd/7/51728", 13)
    failed = release_block_devices(FakeDomInfo(store), store)
    assert failed == ["vbd/51728"]
    assert store.read(BACKEND + "/online") == "0"


def test_an_unreadable_store_is_reported_not_raised(store, mocker):
    write_pv_domain(store, 7)
    mocker.patch("xend_fastmig.release.capture_block_devices",
                 side_effect=RuntimeError(5, "EIO"))
    assert release_block_devices(FakeDomInfo(store), store) == ["(all)"]
    assert store.read(BACKEND + "/online") == "1"


def test_a_handovers_captured_devices_are_used(store):
    """Within a handover the release uses what was captured, not what the
    guest may have rewritten since."""
    write_pv_domain(store, 7, vifs=())
    write_pv_domain(store, 8, vifs=())
    dominfo = FakeDomInfo(store)
    source, target = socket.socketpair()
    try:
        env = Environment(store, FakePlatform([], domains=[dominfo]),
                          FastMigrationOptions())
        handover = begin(dominfo, source, False, env)
        handover.devices = capture_block_devices(store, 7,
                                                 dominfo.dompath)[0]
        # Both the frontend's key and dom0's listing change afterwards.
        store.write(FRONTEND + "/backend", BYSTANDER)
        store.write("/local/domain/0/backend/vbd/7/51728/frontend-id", "7")
        assert dominfo._releaseDevices(force=True) == []
        assert store.read(BACKEND + "/online") == "0"
        assert store.read("/local/domain/0/backend/vbd/7/51728/online") \
            is None
        assert store.read(BYSTANDER + "/online") == "1"
    finally:
        registry.release(dominfo, handover)
        source.close()
        target.close()


# ---------------------------------------------------------------------------
# release_block_device: one transaction, only while the backend exists
# ---------------------------------------------------------------------------

def _device(protocol=False, frontend=FRONTEND):
    return BlockDevice("vbd", "51712", BACKEND, 0, frontend, protocol)


def test_a_vanished_backend_is_not_recreated(store):
    """Issue 11, defect 7: a hotplug cleanup removed the directory after
    the capture: writing ``online`` would re-create it for good."""
    write_pv_domain(store, 7, vifs=())
    store.remove(BACKEND)
    del store.ops[:]
    assert release_block_device(store, _device()) is False
    assert store.read(BACKEND) is None
    assert store.ops == []
    assert release_block_device(store, _device(protocol=True)) is False
    assert store.read(BACKEND) is None
    assert store.ops == []


def test_the_release_is_one_transaction_rooted_at_the_top(store):
    write_pv_domain(store, 7, vifs=())
    opened = []
    real = store.xstransact

    def transaction(path=""):
        t = real(path)
        opened.append(path)
        return t
    transaction.Read = real.Read
    store.xstransact = transaction
    assert release_block_device(store, _device()) is True
    assert opened == [""]


def test_a_conflicting_commit_is_retried(store, mocker):
    write_pv_domain(store, 7, vifs=())
    mocker.patch.object(store.xstransact, "commit",
                        side_effect=[False, True])
    assert release_block_device(store, _device()) is True
    assert store.read(BACKEND + "/online") == "0"


def test_a_frontend_left_out_by_the_capture_is_not_removed(store):
    write_pv_domain(store, 7, vifs=())
    release_block_device(store, _device(frontend=None))
    assert store.read(BACKEND + "/online") == "0"
    assert store.read(FRONTEND + "/backend") == BACKEND


def test_tear_down_after_shutdown_done_goes_classic(store):
    """A drained protocol backend must still go away before a resume can
    re-create the device."""
    write_pv_domain(store, 7, vifs=(), protocol=True)
    store.write(BACKEND + "/shutdown-done", "")
    assert tear_down_confirmed(store, _device(protocol=True)) is True
    assert store.read(BACKEND + "/online") == "0"
    assert store.read(FRONTEND) is None


def test_tear_down_of_a_classic_backend_writes_nothing(store):
    write_pv_domain(store, 7, vifs=())
    del store.ops[:]
    assert tear_down_confirmed(store, _device()) is True
    assert store.ops == []


def _logged(xend_log, level):
    """What the release logged at ``level``, on xend's own logger."""
    return [(record.name, record.getMessage()) for record in xend_log.records
            if record.levelname == level]


def test_a_failing_block_release_is_logged_with_its_cause(store, xend_log):
    write_pv_domain(store, 7, vbds=(51712, 51728), vifs=())
    store.fail["write"] = ("/local/domain/0/backend/vbd/7/51728", 13)
    release_block_devices(FakeDomInfo(store), store)
    assert _logged(xend_log, "ERROR") == [
        ("xend", "fastmig: releasing vbd/51728 of domain 7 failed: %s"
         % (RuntimeError(13, "injected failure"),))]


def test_an_unreadable_store_is_logged_with_its_cause(store, mocker,
                                                      xend_log):
    write_pv_domain(store, 7)
    error = RuntimeError(5, "EIO")
    mocker.patch("xend_fastmig.release.capture_block_devices",
                 side_effect=error)
    release_block_devices(FakeDomInfo(store), store)
    assert _logged(xend_log, "ERROR") == [
        ("xend", "fastmig: cannot list the block devices of domain 7: %s"
         % (error,))]


def test_what_makes_a_drain_unconfirmable_is_logged(store, xend_log):
    write_pv_domain(store, 7, vifs=())
    store.write(BACKEND + "/frontend-id", "8")
    assert release_block_devices(FakeDomInfo(store), store) == []
    assert ("xend", "fastmig: %s names frontend domain '8', not 7"
            % BACKEND) in _logged(xend_log, "WARNING")


def test_a_commit_that_always_conflicts_gives_up_after_20_attempts(
        store, mocker):
    write_pv_domain(store, 7, vifs=())
    commit = mocker.patch.object(store.xstransact, "commit",
                                 return_value=False)
    try:
        release_block_device(store, _device())
    except RuntimeError:
        message = str(sys.exc_info()[1])
    assert message == "%s: the transaction conflicted 20 times" % BACKEND
    assert commit.call_count == 20


def test_inside_xend_the_release_uses_xends_store(store, monkeypatch):
    """Without a store given nor a handover: xend's own xstransact."""
    import types
    names = ["xen", "xen.xend", "xen.xend.xenstore",
             "xen.xend.xenstore.xstransact", "xen.xend.xenstore.xswatch",
             "xen.xend.xenstore.xsutil"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["xen.xend.xenstore.xstransact"].xstransact = store.xstransact
    sys.modules["xen.xend.xenstore.xswatch"].xswatch = store.xswatch
    sys.modules["xen.xend.xenstore.xsutil"].xshandle = lambda: None
    write_pv_domain(store, 7, vifs=())
    assert release_block_devices(FakeDomInfo(store)) == []
    assert store.read(BACKEND + "/online") == "0"
