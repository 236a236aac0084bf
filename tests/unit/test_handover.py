"""The handover's decisions, one test per row of docs/design.md's table."""

import threading
import time

import pytest

from tests.unit.fakes import FakeDomInfo, FakePlatform, write_pv_domain
from xend_fastmig import handover as handover_module
from xend_fastmig.errors import TargetFailed
from xend_fastmig.handover import (AT_TARGET, FAST, LOST, RESUMED,
                                   STOCK_ORDER, UNKNOWN, Environment,
                                   Handover)
from xend_fastmig.options import FastMigrationOptions

BACKEND = "/local/domain/0/backend/vbd/7/51712"


class Target(object):
    """The target's side of the connection after the image was sent.

    Waits for EOF (the go), notes it in the journal, then answers.
    """

    def __init__(self, sock, journal, verdict=b"(ok)\n", delay=0.0):
        self.sock = sock
        self.journal = journal
        self.verdict = verdict
        self.delay = delay
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while True:
            data = self.sock.recv(4096)
            if not data:
                break
        self.journal.append("target released")
        time.sleep(self.delay)
        if self.verdict is not None:
            self.sock.sendall(self.verdict)

    def join(self):
        self.thread.join(10)


def drain_after(store, journal, seconds, path=BACKEND, key=None):
    """A classic backend that drains ``seconds`` after going offline."""
    def run():
        deadline = time.time() + 5
        while store.read(path + "/online") != "0" \
                and store.read(path + "/shutdown-request") is None:
            if time.time() > deadline:
                return
            time.sleep(0.005)
        time.sleep(seconds)
        journal.append("backend drained")
        if key:
            store.write(path + "/" + key, "")
        else:
            store.remove(path)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def make(store, socketpair, journal=None, drain_timeout=5.0,
         verdict_timeout=5.0, **domain):
    if journal is None:
        journal = []
    notes = domain.pop("notes", None)
    write_pv_domain(store, 7, **domain)
    dominfo = FakeDomInfo(store, journal=journal, notes=notes)
    platform = FakePlatform(journal)
    env = Environment(store, platform, FastMigrationOptions(
        drain_timeout=drain_timeout, verdict_timeout=verdict_timeout))
    return dominfo, env, journal


def test_ok_verdict_unleashes_after_the_drain_and_then_destroys(
        store, socketpair, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair)
    drain_after(store, journal, 0.05)
    target = Target(target_sock, journal)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert journal == ["backend drained", "target released",
                       "destroyDomain"]
    assert report.path == FAST
    assert report.outcome == AT_TARGET
    assert [name for name, _ in report.phases] == [
        "release", "drain", "unleash", "verdict", "destroy"]
    assert report.devices[0][:2] == ("vbd/51712", "backend-gone")
    line = [r.getMessage() for r in xend_log.records
            if r.getMessage().startswith("fastmig: domain 7 fast")]
    assert len(line) == 1
    assert "vbd/51712 backend-gone" in line[0]
    assert "verdict (ok)" in line[0]


def test_protocol_backends_are_confirmed_by_shutdown_done(store,
                                                          socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, protocol=True)
    drain_after(store, journal, 0.05, key="shutdown-done")
    target = Target(target_sock, journal)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert journal[:2] == ["backend drained", "target released"]
    assert report.devices[0][1] == "shutdown-done"


def test_a_domain_without_block_devices_is_released_at_once(store,
                                                            socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, vbds=())
    target = Target(target_sock, journal)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert report.outcome == AT_TARGET
    assert report.devices == []
    assert report.phase_seconds("drain") < 0.05


def test_err_verdict_resumes_the_source_recreating_devices(store,
                                                           socketpair):
    """Even a SUSPEND_CANCEL guest: its old connections are gone."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair,
                                 notes={"SUSPEND_CANCEL": 1})
    drain_after(store, journal, 0.01)
    target = Target(target_sock, journal,
                    verdict=b'(err (type "x") (value "Restore failed"))\n')
    report = Handover(dominfo, source, env).run()
    target.join()
    assert report.outcome == RESUMED
    assert "destroyDomain" not in journal
    assert "_createDevices" in journal
    assert "domain_resume:0" in journal
    assert journal.index("target released") < journal.index(
        "_createDevices")


@pytest.mark.parametrize("answer,why", [
    (None, "no reply within"),
    (b"(ok extra)\n", "not a verdict"),
    (b"\x00\xff garbage", "garbage"),
])
def test_anything_but_ok_or_err_destroys_and_says_unknown(
        store, socketpair, xend_log, answer, why):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, verdict_timeout=0.3)
    drain_after(store, journal, 0.01)
    target = Target(target_sock, journal, verdict=answer)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert report.outcome == UNKNOWN
    assert "destroyDomain" in journal
    assert "resume" not in " ".join(journal)
    assert why in report.verdict.reason
    assert "UNKNOWN" in xend_log.text


def test_a_target_that_failed_before_release_raises_and_touches_nothing(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair)
    target_sock.sendall(b'(err (type "x") (value "no memory"))\n')
    with pytest.raises(TargetFailed):
        Handover(dominfo, source, env).run()
    assert store.read(BACKEND + "/online") == "1"
    assert store.read("/local/domain/7/device/vbd/51712/backend") == BACKEND
    assert journal == []


def test_a_target_that_hung_up_before_release_raises(store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair)
    target_sock.close()
    with pytest.raises(TargetFailed):
        Handover(dominfo, source, env).run()
    assert store.read(BACKEND + "/online") == "1"


def test_a_target_failing_during_the_drain_gets_the_source_resumed(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair)

    def fail_then_drain():
        time.sleep(0.05)
        target_sock.sendall(b'(err (type "x") (value "gone"))\n')
        time.sleep(0.05)
        store.remove(BACKEND)
    threading.Thread(target=fail_then_drain).start()
    report = Handover(dominfo, source, env).run()
    assert report.outcome == RESUMED
    assert "destroyDomain" not in journal
    assert "domain_resume:0" in journal


def test_drain_timeout_falls_back_to_stock_order(store, socketpair,
                                                 xend_log):
    """Hung backend: destroy first, wait again, release as stock would."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, drain_timeout=0.2)
    target = Target(target_sock, journal)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert journal == ["destroyDomain", "target released"]
    assert report.path == STOCK_ORDER
    assert report.outcome == AT_TARGET
    assert "vbd/51712" in report.reason
    assert "falling back to the stock order" in xend_log.text
    assert "releasing the target anyway" in xend_log.text


def test_stock_order_waits_for_backends_that_drain_after_destroy(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, drain_timeout=0.2)

    def drain_after_destroy():
        deadline = time.time() + 5
        while "destroyDomain" not in journal and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)
        journal.append("backend drained")
        store.remove(BACKEND)
    threading.Thread(target=drain_after_destroy).start()
    target = Target(target_sock, journal)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert journal == ["destroyDomain", "backend drained",
                       "target released"]
    assert report.path == STOCK_ORDER


def test_malformed_entries_use_the_stock_order_without_releasing(
        store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, drain_timeout=0.2)
    store.remove("/local/domain/7/device/vbd/51712/backend")
    target = Target(target_sock, journal)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert report.path == STOCK_ORDER
    assert "no backend key" in report.reason
    assert journal[0] == "destroyDomain"
    assert store.read(BACKEND + "/online") == "1"


def test_a_failed_release_uses_the_stock_order(store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, drain_timeout=0.2)
    store.fail["write"] = (BACKEND, 13)
    target = Target(target_sock, journal)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert report.path == STOCK_ORDER
    assert "releasing vbd/51712 failed" in report.reason


def test_a_store_error_while_waiting_uses_the_stock_order(
        store, socketpair, mocker):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, drain_timeout=0.2)
    mocker.patch.object(handover_module.DrainWaiter, "wait",
                        side_effect=[RuntimeError(11, "EAGAIN"), []])
    target = Target(target_sock, journal)
    report = Handover(dominfo, source, env).run()
    target.join()
    assert report.path == STOCK_ORDER
    assert "drain wait failed" in report.reason
    assert journal == ["destroyDomain", "target released"]


def test_err_after_stock_order_reports_the_guest_lost(store, socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair, drain_timeout=0.1)
    target = Target(target_sock, journal, verdict=b"(err (value x))\n")
    report = Handover(dominfo, source, env).run()
    target.join()
    assert report.outcome == LOST


def test_a_failing_resume_is_reported_as_lost(store, socketpair, mocker):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, socketpair)
    drain_after(store, journal, 0.01)
    env.platform.domain_resume = mocker.Mock(side_effect=OSError("xc"))
    target = Target(target_sock, journal, verdict=b"(err (value x))\n")
    report = Handover(dominfo, source, env).run()
    target.join()
    assert report.outcome == LOST
