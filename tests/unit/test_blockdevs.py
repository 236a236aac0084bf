from xend_fastmig.blockdevs import capture_block_devices


def test_vbd_and_tap_are_captured_with_their_backends(store):
    dompath = store_domain(store, vbds=(51712, 51728), taps=(51744,))
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    names = [d.name() for d in devices]
    assert names == ["vbd/51712", "vbd/51728", "tap/51744"]
    assert devices[0].backend == "/local/domain/0/backend/vbd/7/51712"
    assert devices[0].frontend == dompath + "/device/vbd/51712"
    assert not devices[0].protocol


def test_vifs_are_not_block_devices(store):
    dompath = store_domain(store, vbds=(), vifs=(0, 1))
    assert capture_block_devices(store, 7, dompath) == ([], [])


def test_protocol_is_taken_from_the_backend_domain(store):
    dompath = store_domain(store, protocol=True)
    devices, problems = capture_block_devices(store, 7, dompath)
    assert [d.protocol for d in devices] == [True]


def test_a_backend_without_frontend_is_still_waited_for(store):
    store.write("/local/domain/0/backend/vbd/7/51760/online", "0")
    devices, problems = capture_block_devices(store, 7, "/local/domain/7")
    assert [d.backend for d in devices] == [
        "/local/domain/0/backend/vbd/7/51760"]
    assert devices[0].frontend is None


def test_frontend_without_backend_key_is_a_problem(store):
    dompath = store_domain(store)
    store.remove(dompath + "/device/vbd/51712/backend")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert len(problems) == 1
    assert "no backend key" in problems[0]


def test_non_numeric_device_ids_are_problems(store):
    dompath = store_domain(store, vbds=())
    store.write(dompath + "/device/vbd/xvda/backend",
                "/local/domain/0/backend/vbd/7/xvda")
    store.write("/local/domain/0/backend/tap/7/junk/online", "1")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert devices == []
    assert len(problems) == 2
    assert "'xvda' is not a number" in problems[0]
    assert "'junk' is not a number" in problems[1]


def test_a_strange_backend_path_is_a_problem(store):
    dompath = store_domain(store)
    store.write(dompath + "/device/vbd/51712/backend", "/elsewhere")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert "unexpected backend path" in problems[0]


def store_domain(store, **kwargs):
    from tests.unit.fakes import write_pv_domain
    return write_pv_domain(store, 7, **kwargs)


def test_a_tap_frontend_under_vbd_is_named_by_its_backend(store):
    dompath = store_domain(store, vbds=(), taps=(51744,), vifs=())
    assert store.list(dompath + "/device") == ["vbd"]
    devices, problems = capture_block_devices(store, 7, dompath)
    assert [d.name() for d in devices] == ["tap/51744"]
    assert devices[0].frontend == dompath + "/device/vbd/51744"


def test_a_backend_of_another_class_is_a_problem(store):
    dompath = store_domain(store, vbds=())
    store.write(dompath + "/device/vbd/51712/backend",
                "/local/domain/0/backend/vif/7/51712")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert "unknown class 'vif'" in problems[0]
