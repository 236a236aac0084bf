"""The handover against targets that fail in pieces, quote as xend does, or
hang up mid-drain; each test is a regression test of issue 11 or kills a
mutant that survived the older tests (named in each docstring)."""

import select
import threading
import time

import pytest

from tests.unit.test_handover import BACKEND, Target, drain_after, hand_over, make
from xend_fastmig.handover import (AT_TARGET, FAST, LOST, RESUMED,
                                   STOCK_ORDER)

# As 3.1's relocation server writes an error (sxp.show: repr() strings).
REPR_ERR = (b"(err (type \"<class 'xen.xend.XendError.XendError'>\") "
            b"(value 'Restore failed: unbalanced ( and a lone \" quote'))\n")


def later(seconds, action):
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


def released(target_sock):
    """Whether the source half-closed: the target would read EOF."""
    if not select.select([target_sock], [], [], 0)[0]:
        return False
    return target_sock.recv(4096, ) == b""


def drain_after_destroy(store, journal, seconds):
    def run():
        deadline = time.time() + 5
        while "destroyDomain" not in journal and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(seconds)
        journal.append("backend drained")
        store.remove(BACKEND)
    thread = threading.Thread(target=run)
    thread.daemon = True
    thread.start()
    return thread


def test_an_error_split_over_two_peeks_resumes_on_the_stock_order_path(
        store, socketpair):
    """Regression (defect 3): the first peek reads ``(err (type ``, the
    second the rest; parsed apart, neither was an error, the source copy
    was destroyed and the guest lost."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.3)
    target_sock.sendall(REPR_ERR[:11])
    later(0.1, lambda: target_sock.sendall(REPR_ERR[11:]))
    # The hung backend comes back later: the resume needs it gone.
    later(0.5, lambda: store.remove(BACKEND))
    report = hand_over(dominfo, source, env)
    assert report.path == STOCK_ORDER
    assert report.outcome == RESUMED
    assert "destroyDomain" not in journal
    assert "domain_resume:0" in journal


def test_a_repr_quoted_error_after_the_go_resumes_the_source(store,
                                                             socketpair):
    """Regression (defect 4): 3.1's single-quoted strings, an unbalanced
    parenthesis, a lone double quote: read as no verdict, the source copy
    was destroyed."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, verdict_timeout=1.0)
    drain_after(store, journal, 0.01)
    target = Target(target_sock, journal, verdict=REPR_ERR)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == RESUMED
    assert "destroyDomain" not in journal


def test_a_repr_quoted_error_before_the_release_touches_nothing(store,
                                                               socketpair):
    """Regression (defect 4), before anything was released."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, notes={"SUSPEND_CANCEL": 1})
    target_sock.sendall(REPR_ERR)
    report = hand_over(dominfo, source, env)
    assert report.outcome == RESUMED
    assert report.unleashed_at is None
    # Nothing was released: the stock (here fast) resume, devices intact.
    assert store.read(BACKEND + "/online") == "1"
    assert "destroyDomain" not in journal
    assert "domain_resume:1" in journal


def test_a_target_failing_during_the_drain_is_never_released(store,
                                                            socketpair):
    """Kills the mutant "no peek after the drain" on the error side."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store)

    def fail_then_drain():
        time.sleep(0.05)
        target_sock.sendall(REPR_ERR)
        time.sleep(0.05)
        store.remove(BACKEND)
    threading.Thread(target=fail_then_drain).start()
    report = hand_over(dominfo, source, env)
    assert report.outcome == RESUMED
    # Never released: the connection was reset for the resume (a target
    # that has failed needs no go), never half-closed before it.
    assert report.unleashed_at is None
    assert "destroyDomain" not in journal


class SplitTarget(object):
    """Sends ``before`` at once, and ``after`` once released (EOF)."""

    def __init__(self, sock, journal, before, after):
        self.sock = sock
        sock.sendall(before)
        self.journal = journal
        self.after = after
        self.thread = threading.Thread(target=self.run)
        self.thread.daemon = True
        self.thread.start()

    def run(self):
        while self.sock.recv(4096):
            pass
        self.journal.append("target released")
        self.sock.sendall(self.after)

    def join(self):
        self.thread.join(10)


@pytest.mark.parametrize("before,after,outcome", [
    (b"(err (type 'x') ", b"(value 'late'))\n", RESUMED),
    (b"(o", b"k)\n", AT_TARGET),
])
def test_the_verdict_includes_what_the_peeks_read_on_the_fast_path(
        store, socketpair, before, after, outcome):
    """Kills the mutant "the verdict ignoring what the peeks read"."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, verdict_timeout=2.0)
    drain_after(store, journal, 0.01)
    target = SplitTarget(target_sock, journal, before, after)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == FAST
    assert report.outcome == outcome


@pytest.mark.parametrize("before,after,outcome", [
    (b"(err (type 'x') ", b"(value 'late'))\n", LOST),
    (b"(o", b"k)\n", AT_TARGET),
])
def test_the_verdict_includes_what_the_peeks_read_on_the_stock_order_path(
        store, socketpair, before, after, outcome):
    """Kills the mutant "the verdict ignoring what the peeks read" of the
    fallback: its report would say unknown where the guest is lost or
    running at the target."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.2,
                                 verdict_timeout=2.0)
    target = SplitTarget(target_sock, journal, before, after)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == STOCK_ORDER
    assert report.outcome == outcome


def test_after_a_failed_capture_the_stock_order_waits_for_dom0s_backends(
        store, socketpair):
    """Kills the mutant "the stock-order fallback waiting for no backend
    after a failed capture": the target would run while the source's
    backends still write to the shared disk."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=2.0)
    store.fail["read"] = ("/local/domain/7/device", 5)
    drain_after_destroy(store, journal, 0.1)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == STOCK_ORDER
    assert "could not be read" in report.reason
    assert journal == ["destroyDomain", "backend drained",
                       "target released"]
    assert report.outcome == AT_TARGET


def test_a_transient_store_error_while_the_old_backends_go_still_resumes(
        store, socketpair):
    """Regression (found by the property tests): the target failed before
    the go; while the resume waited for the released backends to go, a
    read failed with EAGAIN.  The error escaped, the fallback peeked at the
    connection the resume had already reset, and the source copy stayed
    suspended, reported unknown."""
    import errno
    source, target_sock = socketpair
    dominfo, env, journal = make(store, drain_timeout=0.3, early_release=True)

    def backend_goes_with_a_transient_error():
        deadline = time.time() + 5
        while store.nodes.get(BACKEND + "/online") != "0" and \
                time.time() < deadline:
            time.sleep(0.005)
        store.fail["read"] = (BACKEND, errno.EAGAIN)
        time.sleep(0.1)
        store.fail.pop("read", None)
        time.sleep(0.05)
        store.remove(BACKEND)
    thread = threading.Thread(target=backend_goes_with_a_transient_error)
    thread.daemon = True
    thread.start()
    target_sock.sendall(REPR_ERR)
    report = hand_over(dominfo, source, env)
    thread.join(5)
    assert report.outcome == RESUMED
    assert "destroyDomain" not in journal
