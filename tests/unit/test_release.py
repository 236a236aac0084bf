from tests.unit.fakes import FakeDomInfo, write_pv_domain
from xend_fastmig.blockdevs import capture_block_devices
from xend_fastmig.release import release_devices

BACKEND = "/local/domain/0/backend/vbd/7/51712"
FRONTEND = "/local/domain/7/device/vbd/51712"


def test_classic_backend_goes_offline_and_loses_its_frontend_only(store):
    write_pv_domain(store, 7, vifs=())
    dominfo = FakeDomInfo(store)
    assert release_devices(dominfo, store, force=True) == []
    assert store.read(BACKEND + "/online") == "0"
    assert store.read(FRONTEND) is None
    # The backend directory is the drain signal: never removed by us.
    assert store.read(BACKEND + "/frontend") == FRONTEND
    assert ("remove", BACKEND) not in store.ops
    assert store.read("/vm/uuid-7/device/vbd/51712") is None


def test_online_is_written_before_the_frontend_goes(store):
    write_pv_domain(store, 7, vifs=())
    del store.ops[:]
    release_devices(FakeDomInfo(store), store, force=True)
    assert store.ops.index(("write", BACKEND + "/online")) < \
        store.ops.index(("remove", FRONTEND))


def test_protocol_backend_gets_a_forced_shutdown_request(store):
    write_pv_domain(store, 7, vifs=(), protocol=True)
    release_devices(FakeDomInfo(store), store, force=True)
    assert store.read(BACKEND + "/shutdown-request") == "force"
    assert store.read(BACKEND + "/online") == "1"
    assert store.read(FRONTEND + "/backend") == BACKEND


def test_tap_devices_are_released_like_vbds(store):
    write_pv_domain(store, 7, vbds=(), taps=(51744,), vifs=())
    release_devices(FakeDomInfo(store), store, force=True)
    assert store.read("/local/domain/0/backend/tap/7/51744/online") == "0"
    assert store.read("/local/domain/7/device/vbd/51744") is None


def test_other_devices_go_through_stock_forced_destroy(store):
    write_pv_domain(store, 7, vifs=(0, 1))
    dominfo = FakeDomInfo(store)
    release_devices(dominfo, store, force=True)
    assert dominfo.destroyed_devices == [("vif", "0", True),
                                         ("vif", "1", True)]


def test_a_failing_block_release_is_reported_not_raised(store):
    write_pv_domain(store, 7, vbds=(51712, 51728), vifs=())
    store.fail["write"] = ("/local/domain/0/backend/vbd/7/51728",
                           13)
    failed = release_devices(FakeDomInfo(store), store, force=True)
    assert failed == ["vbd/51728"]
    assert store.read(BACKEND + "/online") == "0"


def test_captured_devices_are_used_when_given(store):
    write_pv_domain(store, 7, vifs=())
    devices = capture_block_devices(store, 7, "/local/domain/7")[0]
    store.remove(FRONTEND + "/backend")
    assert release_devices(FakeDomInfo(store), store, force=True,
                           devices=devices) == []
    assert store.read(BACKEND + "/online") == "0"


def test_without_force_it_is_stock_release(store):
    write_pv_domain(store, 7, vifs=(0,))
    dominfo = FakeDomInfo(store)
    release_devices(dominfo, store)
    assert store.list("/local/domain/7/device/vbd") == []
    assert store.list("/local/domain/7/device/vif") == []
    assert store.read(BACKEND + "/online") == "1"
    assert dominfo.destroyed_devices == []


def test_suspending_an_hvm_domain_only_stops_its_device_model(store,
                                                               mocker):
    write_pv_domain(store, 7)
    dominfo = FakeDomInfo(store)
    dominfo.image = mocker.Mock()
    release_devices(dominfo, store, suspend=True, force=True)
    dominfo.image.destroy.assert_called_once_with(True)
    assert store.read(BACKEND + "/online") == "1"
