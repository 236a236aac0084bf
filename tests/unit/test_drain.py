import threading
import time

import pytest

from tests.unit.fakes import FakeDomInfo, FakeXenstore, write_pv_domain
from xend_fastmig import drain
from xend_fastmig.blockdevs import capture_block_devices
from xend_fastmig.clock import GRAIN
from xend_fastmig.drain import DrainWaiter
from xend_fastmig.errors import DrainTimeout

BACKEND = "/local/domain/0/backend/vbd/7/51712"


def later(seconds, action):
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def devices_of(store, **kwargs):
    write_pv_domain(store, 7, **kwargs)
    return capture_block_devices(store, 7, "/local/domain/7")[0]


def test_no_block_devices_means_no_wait_and_no_watch(mocker):
    store = mocker.Mock()
    assert DrainWaiter(store, [], 5).wait() == []
    assert not store.xswatch.called


def test_backend_gone_confirms_a_classic_drain(store):
    devices = devices_of(store)
    later(0.05, lambda: store.remove(BACKEND))
    confirmed = DrainWaiter(store, devices, 5).wait()
    assert [(name, how) for name, how, _ in confirmed] == [
        ("vbd/51712", "backend-gone")]
    # Seconds since the wait began (not a time of day).
    assert 0.04 <= confirmed[0][2] < 5
    assert store.active_watches() == 0


def test_backends_drained_before_the_wait_are_not_watched(store, mocker):
    """The early release's usual case: the backends drained during the
    last round, so the wait after the image only looks."""
    devices = devices_of(store, vbds=(51712, 51728))
    store.remove(BACKEND)
    store.remove("/local/domain/0/backend/vbd/7/51728")
    watch = mocker.spy(store, "xswatch")
    confirmed = DrainWaiter(store, devices, 5).wait()
    assert sorted(name for name, _, _ in confirmed) == [
        "vbd/51712", "vbd/51728"]
    assert not watch.called


def test_only_the_backends_still_busy_are_watched(store, mocker):
    devices = devices_of(store, vbds=(51712, 51728))
    store.remove(BACKEND)
    watch = mocker.spy(store, "xswatch")
    later(0.05, lambda: store.remove("/local/domain/0/backend/vbd/7/51728"))
    confirmed = DrainWaiter(store, devices, 5).wait()
    assert [name for name, _, _ in confirmed] == ["vbd/51712", "vbd/51728"]
    assert [c.args[0] for c in watch.call_args_list] == [
        "/local/domain/0/backend/vbd/7/51728"]
    assert store.active_watches() == 0


def test_shutdown_done_confirms_a_protocol_drain(store):
    devices = devices_of(store, protocol=True)
    later(0.05, lambda: store.write(BACKEND + "/shutdown-done", ""))
    confirmed = DrainWaiter(store, devices, 5).wait()
    assert confirmed[0][1] == "shutdown-done"


def test_state_closed_is_not_a_drain(store):
    devices = devices_of(store)
    later(0.02, lambda: store.write(BACKEND + "/state", "6"))
    with pytest.raises(DrainTimeout) as info:
        DrainWaiter(store, devices, 0.3).wait()
    assert info.value.busy == ["vbd/51712"]
    assert "vbd/51712" in str(info.value)


def test_timeout_names_only_the_busy_devices(store):
    devices = devices_of(store, vbds=(51712, 51728), taps=(51744,))
    store.remove(BACKEND)
    started = time.time()
    with pytest.raises(DrainTimeout) as info:
        DrainWaiter(store, devices, 0.2).wait()
    assert 0.2 <= time.time() - started < 1.0
    assert info.value.busy == ["vbd/51728", "tap/51744"]


def test_without_watches_it_polls(mocker):
    store = FakeXenstore(watches=False)
    devices = devices_of(store)
    later(0.05, lambda: store.remove(BACKEND))
    confirmed = DrainWaiter(store, devices, 5).wait()
    assert confirmed[0][1] == "backend-gone"


def test_a_failing_watch_registration_falls_back_to_polling(store, mocker,
                                                            xend_log):
    devices = devices_of(store)
    store.xswatch = mocker.Mock(side_effect=RuntimeError(13, "denied"))
    later(0.05, lambda: store.remove(BACKEND))
    assert DrainWaiter(store, devices, 5).wait()[0][1] == "backend-gone"
    # On xend's own logger: what xend.log shows.
    assert [(record.name, record.getMessage())
            for record in xend_log.records] == [
        ("xend", "fastmig: cannot watch block backends (%s); polling every "
         "20 ms instead" % (RuntimeError(13, "denied"),))]


def test_wakeup_is_prompt(store):
    """The waiter wakes within a few ms (Python 2's Event.wait would not)."""
    devices = devices_of(store)
    gone = []

    def remove():
        gone.append(time.time())
        store.remove(BACKEND)
    later(0.1, remove)
    DrainWaiter(store, devices, 5).wait()
    assert time.time() - gone[0] < 0.02


def test_a_late_watch_callback_is_harmless():
    wakeup = drain._Wakeup()
    wakeup.close()
    assert wakeup.poke("/some/path") is False
def test_a_drain_wait_across_the_clock_wrap_ends(store):
    """Regression (defect 9): with os.times()'s clock_t wrapping during the
    wait, the old deadline arithmetic never timed out."""
    from tests.unit.clocks import SteppedClock
    devices = devices_of(store)
    clock = SteppedClock(2 ** 31 / 100.0 - 0.2, 0.15, wrap=True)
    result = []

    def wait():
        try:
            DrainWaiter(store, devices, 0.5, clock=clock).wait()
        except DrainTimeout:
            result.append("timeout")
    thread = threading.Thread(target=wait)
    thread.daemon = True
    thread.start()
    thread.join(5)
    assert result == ["timeout"]
    assert clock.reading > 2 ** 31 / 100.0


def test_the_documented_intervals():
    """Stock's MIGRATE_TIMEOUT; the poll and recheck intervals bound the
    delay a lost or late watch adds to the blackout (module doc)."""
    assert drain.MIGRATE_TIMEOUT == 30.0
    assert drain.POLL_INTERVAL == 0.02
    assert drain.RECHECK_INTERVAL == 1.0


def test_a_wakeup_returns_the_keys_poked_since_the_last_wait():
    wakeup = drain._Wakeup()
    try:
        assert wakeup.poke("/a", "one") is True
        wakeup.poke("/b", "two")
        wakeup.poke("/b", "two")
        assert sorted(wakeup.wait(0)) == ["one", "two"]
        assert len(wakeup.wait(0)) == 0
    finally:
        wakeup.close()


def test_pokes_into_a_full_pipe_never_raise():
    """Watch callbacks must never block nor raise: the pipe holds 64 KiB."""
    wakeup = drain._Wakeup()
    try:
        for number in range(70000):
            wakeup.poke("/p", number % 3)
        assert sorted(wakeup.wait(0)) == [0, 1, 2]
        assert len(wakeup.wait(0)) == 0
    finally:
        wakeup.close()


def test_with_watches_an_unchanged_backend_is_not_read_again_and_again(
        store):
    """Also on Python 2, whose clock moves in jiffies: its last tick once
    spun with sleeps of ~1e-9 s (hundreds of reads); now at least
    clock.GRAIN each."""
    devices = devices_of(store)
    reads = []
    real_read = store.read

    def read(path):
        if path.startswith(BACKEND):
            reads.append(path)
        return real_read(path)
    store.read = read
    with pytest.raises(DrainTimeout):
        DrainWaiter(store, devices, 0.3).wait()
    # A look at the start and one per watch event (the registration's,
    # and any other the fake's watcher thread delivers), plus, on Python 2,
    # one per GRAIN while its clock (os.times, 10 ms ticks) has yet to
    # reach the deadline: 4 here on a quiet machine, 13 seen under load.
    # Not a busy loop (thousands in 0.3 s).
    ticks_at_the_deadline = 2 * int(0.01 / GRAIN)
    assert len(reads) <= 10 + ticks_at_the_deadline, len(reads)


def test_a_lost_watch_event_costs_at_most_the_recheck_interval(store):
    """A backend gone without its watch firing is still seen, at the next
    look of every RECHECK_INTERVAL (1 s)."""
    devices = devices_of(store)

    def vanish_silently():
        store.lock.acquire()
        try:
            for path in list(store.nodes):
                if path.startswith(BACKEND):
                    del store.nodes[path]
        finally:
            store.lock.release()
    later(0.1, vanish_silently)
    confirmed = DrainWaiter(store, devices, 3).wait()
    assert [how for _, how, _ in confirmed] == ["backend-gone"]


def test_outside_a_handover_the_drain_wait_finds_the_devices_itself(
        store, monkeypatch, xend_log):
    """testDeviceComplete(io_done=True) with no handover under way: the
    devices found now, xend's store, the configured drain timeout."""
    from xend_fastmig import xendenv
    from xend_fastmig.handover import Environment
    from xend_fastmig.options import FastMigrationOptions
    env = Environment(store, None, FastMigrationOptions(drain_timeout=0.3))
    monkeypatch.setattr(xendenv, "xend_environment", lambda: env)
    write_pv_domain(store, 7, vbds=(51712, 51728))
    store.write("/local/domain/0/backend/vbd/7/51728/frontend-id", "8")
    later(0.05, lambda: store.remove(BACKEND))
    assert [how for _, how, _ in drain.wait_for_drain(FakeDomInfo(store))] \
        == ["backend-gone"]
    assert ("xend", "fastmig: /local/domain/0/backend/vbd/7/51728 names "
            "frontend domain '8', not 7") in [
        (record.name, record.getMessage()) for record in xend_log.records]


def test_dom0s_block_backends_of_a_domain(store, xend_log):
    """The stock-order fallback's list when nothing was captured."""
    write_pv_domain(store, 7, vbds=(51712,), taps=(51744,))
    devices = drain.dom0_block_backends(store, 7)
    assert [(d.name(), d.backend, d.backend_domid, d.protocol)
            for d in devices] == [
        ("vbd/51712", BACKEND, 0, False),
        ("tap/51744", "/local/domain/0/backend/tap/7/51744", 0, False)]
    assert drain.dom0_block_backends(store, None) == []
    assert [(record.name, record.getMessage())
            for record in xend_log.records] == [
        ("xend", "fastmig: no domid left to find block backends by; "
         "nothing to wait for")]
