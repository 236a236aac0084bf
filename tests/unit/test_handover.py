"""The handover's decisions, one test per row of docs/design.md's table.

Each test drives the handover as the patched save does (``begin``,
``suspended``, ``run``, ``finish``; see ``hand_over``) on a fake domain
object whose patched methods follow the series' hunks.
"""

import socket
import sys
import threading
import time

import pytest

from tests.unit.fakes import (FakeDomInfo, FakePlatform, PlatformError,
                              write_pv_domain)
from xend_fastmig import handover as handover_module
from xend_fastmig import registry
from xend_fastmig.drain import DrainWaiter
from xend_fastmig.handover import (AT_TARGET, FAST, LOST, RESUMED,
                                   STOCK_ORDER, SUSPENDED, UNKNOWN,
                                   Environment, begin)
from xend_fastmig.options import FastMigrationOptions

BACKEND = "/local/domain/0/backend/vbd/7/51712"
TAP_BACKEND = "/local/domain/0/backend/tap/7/51744"
FRONTEND = "/local/domain/7/device/vbd/51712"
ERR = b'(err (type "x") (value "Restore failed"))\n'


class Target(object):
    """The target's side of the connection after the image was sent.

    Sends ``before`` at once, waits for EOF (the go), notes it in the
    journal, then answers ``verdict``.
    """

    def __init__(self, sock, journal, verdict=b"(ok)\n", delay=0.0,
                 before=None):
        self.sock = sock
        self.journal = journal
        self.verdict = verdict
        self.delay = delay
        self.before = before
        self.thread = threading.Thread(target=self.run)
        self.thread.daemon = True
        self.thread.start()

    def run(self):
        if self.before:
            self.sock.sendall(self.before)
        while True:
            try:
                data = self.sock.recv(4096)
            except socket.error:
                self.journal.append("target reset")
                return
            if not data:
                break
        self.journal.append("target released")
        time.sleep(self.delay)
        if self.verdict is not None:
            try:
                self.sock.sendall(self.verdict)
            except socket.error:
                pass

    def join(self):
        self.thread.join(10)


def _wait_until(condition, seconds=5.0):
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.005)
    return True


def drain_after(store, journal, seconds, path=BACKEND, key=None):
    """A backend that drains ``seconds`` after its release: a classic one
    by going away, a protocol one (``key``) by writing ``key``."""
    def run():
        if not _wait_until(
                lambda: store.read(path + "/online") == "0"
                or store.read(path + "/shutdown-request") is not None):
            return
        time.sleep(seconds)
        journal.append("backend drained")
        if key:
            store.write(path + "/" + key, "")
        else:
            store.remove(path)
    thread = threading.Thread(target=run)
    thread.daemon = True
    thread.start()
    return thread


def protocol_backend(store, journal, path, goes=True):
    """A shutdown-request backend: ``shutdown-done`` soon after the
    request; after the classic teardown (``online = 0``) its hotplug
    cleanup removes the directory, unless ``goes`` is False."""
    def run():
        if not _wait_until(lambda: store.read(path + "/shutdown-request")
                           is not None):
            return
        time.sleep(0.02)
        store.write(path + "/shutdown-done", "")
        if not goes:
            return
        if not _wait_until(lambda: store.read(path + "/online") == "0"):
            return
        time.sleep(0.1)
        journal.append("%s gone" % path.split("/")[-3])
        store.remove(path)
    thread = threading.Thread(target=run)
    thread.daemon = True
    thread.start()
    return thread


def make(store, journal=None, drain_timeout=5.0, verdict_timeout=5.0,
         early_release=False, hvm=False, notes=None, resume_grace=5.0,
         **domain):
    if journal is None:
        journal = []
    write_pv_domain(store, 7, **domain)
    dominfo = FakeDomInfo(store, journal=journal, notes=notes, hvm=hvm,
                          layout=domain)
    platform = FakePlatform(journal, domains=[dominfo])
    env = Environment(store, platform, FastMigrationOptions(
        drain_timeout=drain_timeout, verdict_timeout=verdict_timeout,
        early_release=early_release, resume_grace=resume_grace))
    return dominfo, env, journal


def hand_over(dominfo, sock, env):
    """What the patched save does once the guest is suspended: the
    handover's report, with ``error`` the exception ``finish`` raised."""
    handover = begin(dominfo, sock, False, env)
    handover.suspended()
    report = handover.run()
    report.error = None
    try:
        handover.finish()
    except PlatformError:
        report.error = sys.exc_info()[1]
    assert registry.lookup(dominfo) is None
    return report


@pytest.mark.parametrize("early", [False, True])
def test_ok_verdict_unleashes_after_the_drain_and_then_destroys(
        store, socketpair, xend_log, early):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, early_release=early)
    drain_after(store, journal, 0.05)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert journal == ["backend drained", "target released",
                       "destroyDomain"]
    assert report.path == FAST
    assert report.outcome == AT_TARGET
    assert report.error is None
    assert report.early_release is early
    assert [name for name, _ in report.phases] == [
        "release", "drain", "unleash", "verdict", "destroy"]
    assert report.devices[0][:2] == ("vbd/51712", "backend-gone")
    assert dominfo.releases == [(False, True)]
    line = [r.getMessage() for r in xend_log.records
            if r.getMessage().startswith("fastmig: domain 7 fast")]
    assert len(line) == 1
    assert "vbd/51712 backend-gone" in line[0]
    assert "verdict (ok)" in line[0]


def test_protocol_backends_are_confirmed_by_shutdown_done(store,
                                                          socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, protocol=True)
    drain_after(store, journal, 0.05, key="shutdown-done")
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert journal[:2] == ["backend drained", "target released"]
    assert report.devices[0][1] == "shutdown-done"


def test_every_block_backend_is_waited_for_not_just_the_first(store,
                                                               socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vbds=(51712, 51728),
                                 taps=(51744,))
    drain_after(store, journal, 0.01)
    drain_after(store, journal, 0.02,
                path="/local/domain/0/backend/vbd/7/51728")
    drain_after(store, journal, 0.15, path=TAP_BACKEND)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert journal == ["backend drained"] * 3 + ["target released",
                                                 "destroyDomain"]
    assert sorted(name for name, _, _ in report.devices) == [
        "tap/51744", "vbd/51712", "vbd/51728"]


def test_a_domain_without_block_devices_is_released_at_once(store,
                                                            socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vbds=())
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == AT_TARGET
    assert report.devices == []
    assert report.phase_seconds("drain") < 0.05


def test_err_verdict_resumes_the_source_recreating_devices(store,
                                                           socketpair):
    """Even a SUSPEND_CANCEL guest: its old connections are gone."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, notes={"SUSPEND_CANCEL": 1})
    drain_after(store, journal, 0.01)
    target = Target(target_sock, journal, verdict=ERR)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == RESUMED
    assert "destroyDomain" not in journal
    assert "_createDevices" in journal
    assert "domain_resume:0" in journal
    assert dominfo.resume_errors == []
    assert journal.index("target released") < journal.index(
        "_createDevices")
    # The re-created devices are there again.
    assert store.read(BACKEND + "/online") == "1"


@pytest.mark.parametrize("answer,why", [
    (None, "no reply within"),
    (b"(ok extra)\n", "not a verdict"),
    (b"\x00\xff garbage", "garbage"),
])
def test_anything_but_ok_or_err_destroys_and_says_unknown(
        store, socketpair, xend_log, answer, why):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, verdict_timeout=0.3)
    drain_after(store, journal, 0.01)
    target = Target(target_sock, journal, verdict=answer)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == UNKNOWN
    assert "destroyDomain" in journal
    assert "resume" not in " ".join(journal)
    assert why in report.verdict.reason
    assert "UNKNOWN" in xend_log.text


def test_a_target_that_failed_before_release_touches_nothing(
        store, socketpair):
    """Nothing released yet: the stock resume, fast for SUSPEND_CANCEL,
    on the devices as they are."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, notes={"SUSPEND_CANCEL": 1})
    target_sock.sendall(b'(err (type "x") (value "no memory"))\n')
    report = hand_over(dominfo, source, env)
    assert report.outcome == RESUMED
    assert store.read(BACKEND + "/online") == "1"
    assert store.read(FRONTEND + "/backend") == BACKEND
    assert dominfo.releases == []
    assert journal == ["resumeDomain", "domain_resume:1"]
    assert "no memory" in str(report.error)


def test_a_target_that_hung_up_before_release_touches_nothing(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, notes={"SUSPEND_CANCEL": 1})
    target_sock.close()
    report = hand_over(dominfo, source, env)
    assert report.outcome == RESUMED
    assert store.read(BACKEND + "/online") == "1"
    assert dominfo.releases == []


def test_a_target_failing_during_the_drain_gets_the_source_resumed(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store)

    def fail_then_drain():
        time.sleep(0.05)
        target_sock.sendall(b'(err (type "x") (value "gone"))\n')
        time.sleep(0.05)
        store.remove(BACKEND)
    threading.Thread(target=fail_then_drain).start()
    report = hand_over(dominfo, source, env)
    assert report.outcome == RESUMED
    assert "destroyDomain" not in journal
    assert "domain_resume:0" in journal


def test_drain_timeout_falls_back_to_stock_order(store, socketpair,
                                                 xend_log):
    """Hung backend: destroy first, then release the target as stock
    would (the drain budget is spent: issue 11, defect 8)."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.2)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert journal == ["destroyDomain", "target released"]
    assert report.path == STOCK_ORDER
    assert report.outcome == AT_TARGET
    assert report.error is None
    assert "vbd/51712" in report.reason
    assert "falling back to the stock order" in xend_log.text
    assert "releasing the target anyway" in xend_log.text


def test_stock_order_waits_for_backends_that_drain_after_destroy(
        store, socketpair):
    """A fallback that did not spend the budget (here: the release of the
    second disk failed) waits for every backend after the destroy."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=2.0,
                                 vbds=(51712, 51728))
    second = "/local/domain/0/backend/vbd/7/51728"
    store.fail["write"] = (second, 13)

    def drain_after_destroy():
        _wait_until(lambda: "destroyDomain" in journal)
        time.sleep(0.1)
        journal.append("backends drained")
        store.remove(BACKEND)
        store.remove(second)
    threading.Thread(target=drain_after_destroy).start()
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert journal == ["destroyDomain", "backends drained",
                       "target released"]
    assert report.path == STOCK_ORDER
    assert "releasing vbd/51728 failed" in report.reason


def test_a_backend_of_another_domain_uses_the_stock_order_unreleased(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.2)
    store.write(BACKEND + "/frontend-id", "8")
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == STOCK_ORDER
    assert "names frontend domain '8'" in report.reason
    assert journal[0] == "destroyDomain"
    assert dominfo.releases == []
    assert store.read(BACKEND + "/online") == "1"


def test_a_failed_release_uses_the_stock_order(store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.2)
    store.fail["write"] = (BACKEND, 13)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == STOCK_ORDER
    assert "releasing vbd/51712 failed" in report.reason


def test_a_store_error_while_waiting_uses_the_stock_order(
        store, socketpair, mocker):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.2)
    mocker.patch.object(handover_module.DrainWaiter, "wait",
                        side_effect=[RuntimeError(11, "EAGAIN"), []])
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == STOCK_ORDER
    assert "drain wait failed" in report.reason
    assert journal == ["destroyDomain", "target released"]


def test_err_after_stock_order_reports_the_guest_lost(store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.1)
    target = Target(target_sock, journal, verdict=b"(err (value x))\n")
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == LOST


def test_a_failing_resume_leaves_the_guest_suspended(store, socketpair,
                                                     mocker, xend_log):
    """xend's resumeDomain logs and returns: the platform is asked whether
    the guest runs again; it does not, so it is suspended, not resumed."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store)
    drain_after(store, journal, 0.01)
    mocker.patch.object(dominfo, "_createDevices",
                        side_effect=RuntimeError("hotplug failed"))
    target = Target(target_sock, journal, verdict=b"(err (value x))\n")
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == SUSPENDED
    assert dominfo.resume_errors == ["hotplug failed"]
    lines = [r.getMessage() for r in xend_log.records
             if "could not be resumed" in r.getMessage()]
    assert len(lines) == 1
    # A PV guest: the reason is resumeDomain's, not HVM's.
    assert "HVM" not in lines[0]


def test_an_exception_out_of_the_drain_wait_takes_the_stock_order(
        store, socketpair, mocker):
    """Whatever ``testDeviceComplete(io_done=True)`` raises, the devices
    were released unconfirmed: the source is destroyed before the go."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.2)
    drain_after(store, journal, 0.01)
    mocker.patch.object(dominfo, "testDeviceComplete",
                        side_effect=MemoryError("injected"))
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == STOCK_ORDER
    assert journal.index("destroyDomain") < journal.index("target released")
    assert report.outcome == AT_TARGET


def tcp_pair():
    """A loopback TCP connection (a reset needs TCP, not a socketpair)."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        source = socket.create_connection(listener.getsockname())
        target = listener.accept()[0]
    finally:
        listener.close()
    return source, target


def test_the_save_failing_resets_the_connection_and_resumes(store):
    """save's failure path calls ``failed``: the target gets a reset (a 3.1
    target takes a close for its go), the source comes back."""
    source, target_sock = tcp_pair()
    dominfo, env, journal = make(store, notes={"SUSPEND_CANCEL": 1})
    target = Target(target_sock, journal)
    handover = begin(dominfo, source, False, env)
    try:
        raise IOError("xc_save failed")
    except IOError:
        handover.failed()
    with pytest.raises(PlatformError) as info:
        handover.finish()
    target.join()
    target_sock.close()
    assert handover.report.outcome == RESUMED
    assert "target reset" in journal
    assert "target released" not in journal
    assert "xc_save failed" in str(info.value)


def test_no_handover_without_a_socket_or_for_a_checkpoint(store,
                                                         socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store)
    assert begin(dominfo, None, False, env) is None
    assert begin(dominfo, source, True, env) is None
    assert registry.lookup(dominfo) is None


# ---------------------------------------------------------------------------
# issue 11's defects that live in the core
# ---------------------------------------------------------------------------

def test_defect5_resume_waits_until_every_old_tap_and_vbd_backend_is_gone(
        store, socketpair):
    """shutdown-request backends (vbd and tap) confirmed their drain, then
    the target failed: the resume tears them down and re-creates the
    devices only once both old directories are gone (3.1's createDevice
    refuses a device whose backend is still there)."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, protocol=True, taps=(51744,))
    protocol_backend(store, journal, BACKEND)
    protocol_backend(store, journal, TAP_BACKEND)
    target = Target(target_sock, journal, verdict=ERR)
    report = hand_over(dominfo, source, env)
    target.join()
    assert [how for _, how, _ in report.devices] == ["shutdown-done"] * 2
    assert report.outcome == RESUMED, dominfo.resume_errors
    assert dominfo.resume_errors == []
    created = journal.index("_createDevices")
    assert journal.index("vbd gone") < created
    assert journal.index("tap gone") < created
    assert "resumed at the source" in str(report.error)


def test_defect5_backends_that_never_go_leave_it_suspended_and_say_so(
        store, socketpair, monkeypatch, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, protocol=True, taps=(51744,),
                                 drain_timeout=0.5, resume_grace=0.3)
    protocol_backend(store, journal, BACKEND)
    protocol_backend(store, journal, TAP_BACKEND, goes=False)
    target = Target(target_sock, journal, verdict=ERR)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == SUSPENDED
    assert "_createDevices" not in journal
    assert "resumeDomain" not in journal
    lines = [r.getMessage() for r in xend_log.records
             if "are still there" in r.getMessage()]
    assert len(lines) == 1
    assert "tap/51744" in lines[0]
    assert "Restore failed" in lines[0]
    assert "suspended at the source" in str(report.error)


def test_defect5_a_protocol_backend_is_torn_down_only_after_shutdown_done(
        store, socketpair):
    """xc_save failed right after the early release: the shutdown-request
    backends are still draining.  The classic teardown that lets them go
    comes only once each wrote ``shutdown-done`` (the protocol's order)."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, protocol=True, taps=(51744,),
                                 early_release=True)
    del store.ops[:]
    protocol_backend(store, journal, BACKEND)
    protocol_backend(store, journal, TAP_BACKEND)
    handover = begin(dominfo, source, False, env)
    handover.suspended()
    try:
        raise IOError("xc_save failed")
    except IOError:
        handover.failed()
    with pytest.raises(PlatformError):
        handover.finish()
    assert handover.report.outcome == RESUMED, handover.report.summary()
    for path in (BACKEND, TAP_BACKEND):
        done = store.ops.index(("write", path + "/shutdown-done"))
        torn = store.ops.index(("write", path + "/online"))
        assert done < torn, path


def test_defect6_a_domain_under_handover_refuses_a_second_migration(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store)
    other_source, other_target = socket.socketpair()
    try:
        first = begin(dominfo, source, False, env)
        with pytest.raises(PlatformError) as info:
            begin(dominfo, other_source, False, env)
        assert "being migrated" in str(info.value)
        # ``xm save`` (no socket) is refused too.
        with pytest.raises(PlatformError):
            begin(dominfo, None, False, env)
        # The refusals left the first handover alone.
        assert registry.lookup(dominfo) is first
        assert journal == []
        drain_after(store, journal, 0.01)
        target = Target(target_sock, journal)
        first.run()
        first.finish()
        target.join()
        assert first.report.outcome == AT_TARGET
        # Once it ended, a new migration is accepted.
        again = begin(dominfo, other_source, False, env)
        assert again is not None
        assert registry.lookup(dominfo) is again
        registry.release(dominfo, again)
    finally:
        other_source.close()
        other_target.close()


def test_defect6_another_domain_is_not_refused(store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store)
    other = FakeDomInfo(store, domid=8)
    first = begin(dominfo, source, False, env)
    second = begin(other, source, False, env)
    try:
        assert first is not None and second is not None
    finally:
        registry.release(dominfo, first)
        registry.release(other, second)


def test_defect7_a_backend_removed_after_the_capture_is_not_recreated(
        store, socketpair, monkeypatch):
    """The hotplug cleanup removes the directory between the capture and
    the release: the release must not write it back (nothing would ever
    remove it again), and the drain confirms at once."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=1.0)
    real_capture = handover_module.capture_block_devices

    def capture_then_cleanup(store_, domid, dompath):
        found = real_capture(store_, domid, dompath)
        store.remove(BACKEND)
        return found
    monkeypatch.setattr(handover_module, "capture_block_devices",
                        capture_then_cleanup)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == FAST, report.reason
    assert report.outcome == AT_TARGET
    assert report.devices[0][:2] == ("vbd/51712", "backend-gone")
    assert store.read(BACKEND) is None
    assert store.list("/local/domain/0/backend/vbd/7") == []


@pytest.mark.parametrize("early", [False, True])
def test_defect8_a_hung_backend_costs_one_drain_timeout_in_all(
        store, socketpair, monkeypatch, early):
    """The fast wait and the stock-order fallback's wait share one budget:
    at most one drain timeout on top of the destroy."""
    waits = []

    class RecordingWaiter(DrainWaiter):
        def __init__(self, store_, devices, timeout, gone_only=False):
            waits.append(timeout)
            DrainWaiter.__init__(self, store_, devices, timeout, gone_only)
    monkeypatch.setattr(handover_module, "DrainWaiter", RecordingWaiter)
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.5,
                                 early_release=early)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == STOCK_ORDER
    assert report.outcome == AT_TARGET
    assert journal == ["destroyDomain", "target released"]
    assert len(waits) == 2
    assert 0 < waits[0] <= 0.5
    # What the fallback may still wait is what is left of the budget.
    assert waits[0] + waits[1] <= 0.5 + 0.05, waits


@pytest.mark.parametrize("scenario,words", [
    ("resumed", ["resumed at the source", "Restore failed"]),
    ("lost", ["lost", "destroyed", "(err (value nope))"]),
    ("unknown", ["unknown", "no reply within", "check the target host"]),
    ("suspended", ["suspended at the source", "running nowhere",
                   "Restore failed"]),
])
def test_defect10_finish_says_how_the_migration_ended_and_why(
        store, socketpair, scenario, words):
    source, target_sock = socketpair
    drain = 5.0
    verdict = ERR
    hvm = False
    if scenario == "lost":
        drain = 0.1
        verdict = b"(err (value nope))\n"
    elif scenario == "unknown":
        verdict = None
    elif scenario == "suspended":
        hvm = True
    dominfo, env, journal = make(store, drain_timeout=drain,
                                 verdict_timeout=0.3, hvm=hvm)
    if scenario != "lost":
        drain_after(store, journal, 0.01)
    target = Target(target_sock, journal, verdict=verdict)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.error is not None, report.summary()
    message = str(report.error)
    assert "migration of domain 7" in message
    for word in words:
        assert word in message, message


def test_defect10_finish_returns_only_at_the_target(store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store)
    drain_after(store, journal, 0.01)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == AT_TARGET
    assert report.error is None


def test_defect11_an_hvm_guest_with_released_devices_stays_suspended(
        store, socketpair, xend_log):
    """3.1's libxc cannot resume an HVM guest non-cooperatively: after the
    release the only resume is the re-creating one, and it fails."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, hvm=True,
                                 notes={"SUSPEND_CANCEL": 1})
    drain_after(store, journal, 0.01)
    target = Target(target_sock, journal, verdict=ERR)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == SUSPENDED
    assert report.outcome != RESUMED
    assert "destroyDomain" not in journal
    assert dominfo.resume_errors == [
        "Cannot resume uncooperative HVM guests"]
    assert "Xen 3.1 cannot resume an HVM guest" in xend_log.text


def test_no_early_release_for_an_hvm_guest(store, socketpair):
    """An HVM guest keeps its devices until the image is out: should
    xc_save fail, stock's cooperative resume still works."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, hvm=True, early_release=True,
                                 notes={"SUSPEND_CANCEL": 1})
    handover = begin(dominfo, source, False, env)
    handover.suspended()
    assert dominfo.releases == []
    assert store.read(BACKEND + "/online") == "1"
    try:
        raise IOError("xc_save failed")
    except IOError:
        handover.failed()
    with pytest.raises(PlatformError):
        handover.finish()
    assert handover.report.outcome == RESUMED
    assert handover.report.early_release is False
    assert journal == ["resumeDomain", "domain_resume:1"]


def test_defect11_an_hvm_guest_with_intact_devices_resumes_fast(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, hvm=True,
                                 notes={"SUSPEND_CANCEL": 1})
    target_sock.sendall(ERR)
    report = hand_over(dominfo, source, env)
    assert report.outcome == RESUMED
    assert journal == ["resumeDomain", "domain_resume:1"]


# ---------------------------------------------------------------------------
# issue 11's hand-made mutants
# ---------------------------------------------------------------------------

def test_mutant_no_peek_after_the_drain_a_hangup_during_it_resumes(
        store, socketpair):
    """Killed: "no peek after the drain".  A target that hung up while the
    backends drained is not running: without the look after the drain,
    the go and an empty verdict would destroy the source copy (lost)."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store)

    def hang_up_then_drain():
        _wait_until(lambda: store.read(BACKEND + "/online") == "0")
        target_sock.close()
        time.sleep(0.05)
        store.remove(BACKEND)
    threading.Thread(target=hang_up_then_drain).start()
    report = hand_over(dominfo, source, env)
    assert report.outcome == RESUMED
    assert "destroyDomain" not in journal
    assert report.unleashed_at is None
    assert "closed the connection" in report.reason


def test_mutant_verdict_ignoring_the_peeks_an_err_split_across_the_go(
        store, socketpair):
    """Killed: "the verdict ignoring what the peeks read".  The first half
    of an ``(err ...)`` came before the go (a peek read it), the rest
    after: only together are they the verdict."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store)
    drain_after(store, journal, 0.1)
    target = Target(target_sock, journal, before=ERR[:12],
                    verdict=ERR[12:])
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == RESUMED, report.summary()
    assert report.verdict.text.strip() == ERR.decode("ascii").strip()
    assert "destroyDomain" not in journal


def test_mutant_stock_order_after_a_failed_capture_waits_for_dom0s_list(
        store, socketpair, monkeypatch):
    """Killed: "the stock-order fallback waiting for no backend after a
    failed capture".  With nothing captured, the fallback waits for every
    block backend dom0 lists under the domain's id."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, taps=(51744,), drain_timeout=2.0)

    def broken(store_, domid, dompath):
        raise RuntimeError(5, "injected: reading the devices")
    monkeypatch.setattr(handover_module, "capture_block_devices", broken)

    def drain_after_destroy():
        _wait_until(lambda: "destroyDomain" in journal)
        time.sleep(0.05)
        store.remove(BACKEND)
        time.sleep(0.05)
        journal.append("backends drained")
        store.remove(TAP_BACKEND)
    threading.Thread(target=drain_after_destroy).start()
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == STOCK_ORDER
    assert "could not be read" in report.reason
    assert journal == ["destroyDomain", "backends drained",
                       "target released"]
    assert sorted(name for name, _, _ in report.devices) == [
        "tap/51744", "vbd/51712"]


def test_the_paths_and_outcomes_are_the_words_logs_and_reports_show():
    assert (FAST, STOCK_ORDER) == ("fast", "stock-order")
    assert (AT_TARGET, RESUMED, SUSPENDED, UNKNOWN, LOST) == (
        "running at the target", "resumed at the source",
        "suspended at the source, running nowhere", "unknown", "lost")
    assert handover_module.RESUME_GRACE == 5.0
