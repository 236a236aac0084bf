"""Capture: block devices are named from dom0's own tree, never the guest's."""

from tests.unit.fakes import write_pv_domain
from xend_fastmig.blockdevs import BlockDevice, capture_block_devices

BACKEND = "/local/domain/0/backend/vbd/7/51712"
FRONTEND = "/local/domain/7/device/vbd/51712"
# A bystander guest on the same host, and its disk's backend.
BYSTANDER = "/local/domain/0/backend/vbd/8/51712"


def store_domain(store, **kwargs):
    return write_pv_domain(store, 7, **kwargs)


def test_vbd_and_tap_are_captured_with_their_backends(store):
    dompath = store_domain(store, vbds=(51712, 51728), taps=(51744,))
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    names = [d.name() for d in devices]
    assert names == ["vbd/51712", "vbd/51728", "tap/51744"]
    assert devices[0].backend == BACKEND
    assert devices[0].backend_domid == 0
    assert devices[0].frontend == dompath + "/device/vbd/51712"
    assert not devices[0].protocol


def test_vifs_are_not_block_devices(store):
    dompath = store_domain(store, vbds=(), vifs=(0, 1))
    assert capture_block_devices(store, 7, dompath) == ([], [])


def test_protocol_is_taken_from_the_backend_domain(store):
    dompath = store_domain(store, protocol=True)
    devices, problems = capture_block_devices(store, 7, dompath)
    assert [d.protocol for d in devices] == [True]


def test_capture_never_writes(store):
    dompath = store_domain(store, vbds=(51712, 51728), taps=(51744,))
    del store.ops[:]
    capture_block_devices(store, 7, dompath)
    assert store.ops == []


def test_a_backend_the_guest_does_not_mention_is_still_captured(store):
    """dom0's tree is the truth: a guest that deleted its frontend's
    ``backend`` key (or its whole frontend) still has its disk waited for."""
    dompath = store_domain(store, vbds=(51712, 51728))
    store.remove(FRONTEND + "/backend")
    store.remove(dompath + "/device/vbd/51728")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert [d.backend for d in devices] == [
        BACKEND, "/local/domain/0/backend/vbd/7/51728"]
    # The backend names this domain's own device path: that one may go.
    assert devices[1].frontend == dompath + "/device/vbd/51728"


def test_a_backend_of_another_frontend_domain_is_a_problem(store):
    dompath = store_domain(store)
    store.write(BACKEND + "/frontend-id", "8")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert devices == []
    assert len(problems) == 1
    assert "names frontend domain '8', not 7" in problems[0]


def test_a_backend_naming_another_frontend_keeps_no_frontend(store,
                                                              xend_log):
    """Only this domain's own ``device/<vbd|tap>/<devid>`` is ever removed."""
    dompath = store_domain(store)
    store.write(BACKEND + "/frontend", "/local/domain/8/device/vbd/51712")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert devices[0].backend == BACKEND
    assert devices[0].frontend is None
    assert "is left alone" in xend_log.text


def test_non_numeric_device_ids_in_dom0s_tree_are_problems(store):
    dompath = store_domain(store, vbds=())
    store.write("/local/domain/0/backend/tap/7/junk/frontend-id", "7")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert devices == []
    assert len(problems) == 1
    assert "'junk' is not a number" in problems[0]


def test_a_tap_frontend_under_vbd_is_named_by_its_backend(store):
    dompath = store_domain(store, vbds=(), taps=(51744,), vifs=())
    assert store.list(dompath + "/device") == ["vbd"]
    devices, problems = capture_block_devices(store, 7, dompath)
    assert [d.name() for d in devices] == ["tap/51744"]
    assert devices[0].frontend == dompath + "/device/vbd/51744"


def test_a_backend_removed_since_the_listing_has_drained(store):
    """Gone between the listing and the read (its hotplug cleanup ran)."""
    dompath = store_domain(store, vbds=(51712, 51728))
    real_read = store.read

    def read(path):
        if path == "/local/domain/0/backend/vbd/7/51728/frontend-id":
            store.remove("/local/domain/0/backend/vbd/7/51728")
        return real_read(path)
    store.read = read
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert [d.name() for d in devices] == ["vbd/51712"]


def test_a_driver_domain_named_by_backend_id_is_looked_in(store):
    """``backend-id`` only picks a tree to look in, indexed by our id."""
    dompath = store_domain(store, backend_domid=3)
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert [d.backend for d in devices] == [
        "/local/domain/3/backend/vbd/7/51712"]
    assert devices[0].backend_domid == 3


# ---------------------------------------------------------------------------
# issue 11, defect 1: a guest rewriting its frontends' backend keys
# ---------------------------------------------------------------------------

def _bystander(store):
    write_pv_domain(store, 8, vbds=(51712, 51728), vifs=(0,))


def test_a_backend_key_naming_a_bystanders_disk_is_not_used(store,
                                                             xend_log):
    dompath = store_domain(store)
    _bystander(store)
    store.write(FRONTEND + "/backend", BYSTANDER)
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert [d.backend for d in devices] == [BACKEND]
    assert "names backend %r" % BYSTANDER in xend_log.text
    assert "the guest's name is not used" in xend_log.text


def test_a_backend_key_naming_dom0s_whole_backend_tree_is_not_used(
        store, xend_log):
    dompath = store_domain(store, vifs=(0,))
    _bystander(store)
    store.write(FRONTEND + "/backend", "/local/domain/0/backend")
    store.write(dompath + "/device/vif/0/backend", "/local/domain/0/backend")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert [d.backend for d in devices] == [BACKEND]
    assert "'/local/domain/0/backend'" in xend_log.text


def test_a_backend_id_naming_a_bystander_finds_nothing_of_it(store):
    """Pointing ``backend-id`` at guest 8 makes capture look in guest 8's
    tree under *our* id: nothing there, and guest 8's devices (in dom0's
    tree under id 8) are never reached."""
    dompath = store_domain(store)
    _bystander(store)
    store.write(FRONTEND + "/backend-id", "8")
    store.write(FRONTEND + "/backend", BYSTANDER)
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert [d.backend for d in devices] == [BACKEND]


def test_what_the_capture_logs_word_for_word(store, xend_log):
    """On xend's own logger, naming the backend, the frontend, the domain
    and the device (the only trace of a rewriting guest in xend.log)."""
    dompath = store_domain(store)
    _bystander(store)
    store.write(BACKEND + "/frontend", "/local/domain/8/device/vbd/51712")
    store.write(FRONTEND + "/backend", BYSTANDER)
    capture_block_devices(store, 7, dompath)
    assert [(record.name, record.levelname, record.getMessage())
            for record in xend_log.records] == [
        ("xend", "WARNING",
         "fastmig: %s names frontend '/local/domain/8/device/vbd/51712', "
         "which is not domain 7's device 51712; its frontend is left alone"
         % BACKEND),
        ("xend", "WARNING",
         "fastmig: domain 7's frontend %s names backend %r; dom0's tree "
         "says None: the guest's name is not used" % (FRONTEND, BYSTANDER)),
    ]


def test_a_device_nobody_said_speaks_shutdown_request_is_classic():
    """As dom0_block_backends builds them for the stock-order fallback."""
    device = BlockDevice("vbd", "51712", BACKEND, 0)
    assert device.protocol is False
    assert device.frontend is None
    assert repr(device) == "BlockDevice(vbd/51712, backend=%s, " \
        "protocol=False)" % BACKEND


def test_a_frontend_under_device_tap_is_the_domains_own_too(store, xend_log):
    """Frontends are looked for under device/vbd and device/tap: 3.1 puts
    a tap disk's under vbd, a layout with device/tap is read the same."""
    dompath = store_domain(store, vbds=(), taps=(51744,), vifs=())
    tap_backend = "/local/domain/0/backend/tap/7/51744"
    store.remove(dompath + "/device/vbd/51744")
    store.write(dompath + "/device/tap/51744/backend", tap_backend)
    store.write(dompath + "/device/tap/51744/backend-id", "0")
    store.write(tap_backend + "/frontend", dompath + "/device/tap/51744")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert [d.frontend for d in devices] == [dompath + "/device/tap/51744"]
    assert xend_log.records == []


def test_a_junk_device_id_leaves_the_others_of_its_class_captured(store):
    dompath = store_domain(store, vbds=(), taps=(51744,))
    junk = "/local/domain/0/backend/tap/7/0junk"
    store.write(junk + "/frontend-id", "7")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == ["%s: device id '0junk' is not a number" % junk]
    assert [d.name() for d in devices] == ["tap/51744"]


def test_a_backend_id_that_is_missing_or_no_number_is_no_hint(store):
    dompath = store_domain(store, vbds=(51712, 51728))
    store.remove(FRONTEND + "/backend-id")
    store.write(dompath + "/device/vbd/51728/backend-id", "dom0")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert problems == []
    assert [d.backend for d in devices] == [
        BACKEND, "/local/domain/0/backend/vbd/7/51728"]


def test_a_backend_gone_or_foreign_leaves_the_next_ones_captured(store):
    """Each backend is judged on its own: the first one vanishing (or
    naming another domain) says nothing about the ones after it."""
    dompath = store_domain(store, vbds=(51712, 51728, 51744))
    real_read = store.read

    def read(path):
        if path == BACKEND + "/frontend-id":
            store.remove(BACKEND)
        return real_read(path)
    store.read = read
    store.write("/local/domain/0/backend/vbd/7/51728/frontend-id", "8")
    devices, problems = capture_block_devices(store, 7, dompath)
    assert [d.name() for d in devices] == ["vbd/51744"]
    assert problems == ["/local/domain/0/backend/vbd/7/51728 names frontend "
                        "domain '8', not 7"]
