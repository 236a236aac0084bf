"""What the handover tells the administrator: xend.log's lines and the
error ``finish`` raises, word for word, for each way a migration ends.

These are the only trace of a migration's decisions on a real host: a
line that names the wrong cause, loses its exception text or goes to
another logger misleads whoever reads xend.log.  Times are left out.
"""

import re
import socket
import threading
import time

import pytest

from tests.unit.fakes import PlatformError
from tests.unit.test_handover import (BACKEND, ERR, Target, _wait_until,
                                      drain_after, hand_over, make,
                                      protocol_backend)
from xend_fastmig import handover as handover_module
from xend_fastmig.handover import HandoverReport, abort_connection, begin

_TIME = re.compile(r"\d+\.\d ms")
# What is left of a budget when a wait starts depends on the machine.
_LEFT = re.compile(r"still busy after \d+\.\d s")


def lines(xend_log, report=None):
    """xend's log as "LEVEL message" lines (times as N), and the error."""
    out = []
    for record in xend_log.records:
        if record.name != "xend":
            out.append("not xend's logger: %s" % record.name)
        message = _TIME.sub("N ms", record.getMessage())
        message = _LEFT.sub("still busy after N s", message)
        out.append("%s %s" % (record.levelname, message))
    if report is not None and report.error is not None:
        out.append("error: %s" % (report.error,))
    return out


def migrate(store, socketpair, drain=None, verdict=b"(ok)\n", **options):
    """A whole handover of domain 7 (one disk, no vif) to a target that
    answers ``verdict``; its backend drains ``drain`` seconds after its
    release (None: never).  The report."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), **options)
    if drain is not None:
        drain_after(store, journal, drain)
    target = Target(target_sock, journal, verdict=verdict)
    report = hand_over(dominfo, source, env)
    target.join()
    return report


def test_the_fast_path(store, socketpair, xend_log):
    report = migrate(store, socketpair, drain=0.02)
    # No fallback, so no reason for one (a string all the same).
    assert report.reason == ""
    assert lines(xend_log, report) == [
        'INFO fastmig: domain 7 fast handover: release N ms, drain N '
        'ms (vbd/51712 backend-gone N ms), unleash N ms, verdict N ms'
        ', destroy N ms; verdict (ok); outcome running at the target',
    ]


def test_an_err_verdict(store, socketpair, xend_log):
    report = migrate(store, socketpair, drain=0.01, verdict=ERR)
    assert lines(xend_log, report) == [
        'WARNING fastmig: domain 7: the migration failed ((err (type '
        '"x") (value "Restore failed"))); the guest was resumed at th'
        'e source',
        'WARNING fastmig: domain 7 fast handover: release N ms, drain'
        ' N ms (vbd/51712 backend-gone N ms), unleash N ms, verdict N'
        ' ms, resume N ms; verdict (err (type "x") (value "Restore fa'
        'iled")); outcome resumed at the source',
        'error: migration of domain 7 failed ((err (type "x") (value '
        '"Restore failed"))); it was resumed at the source',
    ]


def test_no_verdict(store, socketpair, xend_log):
    report = migrate(store, socketpair, drain=0.01, verdict=None,
                     verdict_timeout=0.2)
    assert lines(xend_log, report) == [
        'ERROR fastmig: domain 7: no usable verdict from the target ('
        'no reply within 0.2 s): the outcome of the migration is UNKN'
        'OWN; the target may be running the guest, so the source copy'
        ' is destroyed, as stock 3.1 would have; check the target hos'
        't',
        'ERROR fastmig: domain 7 fast handover: release N ms, drain N'
        ' ms (vbd/51712 backend-gone N ms), unleash N ms, verdict N m'
        's, destroy N ms; verdict unknown (no reply within 0.2 s); ou'
        'tcome unknown',
        'error: migration of domain 7: the outcome is unknown (unknow'
        'n (no reply within 0.2 s)); the source copy was destroyed an'
        'd the target may be running it: check the target host',
    ]


def test_a_drain_timeout(store, socketpair, xend_log):
    report = migrate(store, socketpair, drain_timeout=0.2)
    assert lines(xend_log, report) == [
        'WARNING fastmig: domain 7: block backends still busy after N'
        ' s: vbd/51712; falling back to the stock order: destroy the '
        'domain, wait for its block backends, then release the target',
        'ERROR fastmig: domain 7: block backends still busy after N s'
        ': vbd/51712; releasing the target anyway, as stock 3.1 does',
        'WARNING fastmig: domain 7 stock-order handover: release N ms'
        ', drain N ms, destroy N ms, drain N ms, unleash N ms, verdic'
        't N ms; verdict (ok); outcome running at the target; fallbac'
        'k because block backends still busy after N s: vbd/51712',
    ]


def test_an_err_after_the_stock_order(store, socketpair, xend_log):
    report = migrate(store, socketpair, verdict=b"(err (value x))\n",
                     drain_timeout=0.1)
    assert lines(xend_log, report) == [
        'WARNING fastmig: domain 7: block backends still busy after N'
        ' s: vbd/51712; falling back to the stock order: destroy the '
        'domain, wait for its block backends, then release the target',
        'ERROR fastmig: domain 7: block backends still busy after N s'
        ': vbd/51712; releasing the target anyway, as stock 3.1 does',
        'ERROR fastmig: domain 7: the target failed after the source '
        'copy was destroyed: the guest is lost (stock 3.1 would have '
        'lost it too)',
        'ERROR fastmig: domain 7 stock-order handover: release N ms, '
        'drain N ms, destroy N ms, drain N ms, unleash N ms, verdict '
        'N ms; verdict (err (value x)); outcome lost; fallback becaus'
        'e block backends still busy after N s: vbd/51712',
        'error: migration of domain 7 failed after the source copy wa'
        's destroyed ((err (value x))): the guest is lost',
    ]


def test_a_failed_resume(store, socketpair, mocker, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    drain_after(store, journal, 0.01)
    mocker.patch.object(dominfo, "_createDevices",
                        side_effect=RuntimeError("hotplug failed"))
    target = Target(target_sock, journal, verdict=ERR)
    report = hand_over(dominfo, source, env)
    target.join()
    assert lines(xend_log, report) == [
        'ERROR fastmig: domain 7: the migration failed ((err (type "x'
        '") (value "Restore failed"))) and the source copy could not '
        'be resumed (see resumeDomain\'s error above): it is suspende'
        'd at the source and running nowhere',
        'ERROR fastmig: domain 7 fast handover: release N ms, drain N'
        ' ms (vbd/51712 backend-gone N ms), unleash N ms, verdict N m'
        's, resume N ms; verdict (err (type "x") (value "Restore fail'
        'ed")); outcome suspended at the source, running nowhere',
        'error: migration of domain 7 failed ((err (type "x") (value '
        '"Restore failed"))) and it could not be resumed: it is suspe'
        'nded at the source and running nowhere',
    ]


def test_an_hvm_guest_that_cannot_come_back(store, socketpair, xend_log):
    report = migrate(store, socketpair, drain=0.01, verdict=ERR, hvm=True)
    assert lines(xend_log, report) == [
        'ERROR fastmig: domain 7: the migration failed ((err (type "x'
        '") (value "Restore failed"))) and the source copy could not '
        'be resumed (Xen 3.1 cannot resume an HVM guest whose devices'
        ' were released): it is suspended at the source and running n'
        'owhere',
        'ERROR fastmig: domain 7 fast handover: release N ms, drain N'
        ' ms (vbd/51712 backend-gone N ms), unleash N ms, verdict N m'
        's, resume N ms; verdict (err (type "x") (value "Restore fail'
        'ed")); outcome suspended at the source, running nowhere',
        'error: migration of domain 7 failed ((err (type "x") (value '
        '"Restore failed"))) and it could not be resumed: it is suspe'
        'nded at the source and running nowhere',
    ]


def test_an_old_backend_that_never_goes(store, socketpair, monkeypatch,
                                       xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), protocol=True,
                                 drain_timeout=0.3, resume_grace=0.2)
    protocol_backend(store, journal, BACKEND, goes=False)
    target = Target(target_sock, journal, verdict=ERR)
    report = hand_over(dominfo, source, env)
    target.join()
    assert lines(xend_log, report) == [
        'ERROR fastmig: domain 7: the target failed ((err (type "x") '
        '(value "Restore failed"))), but the old block backends vbd/5'
        '1712 are still there, so the devices cannot be re-created: t'
        'he guest stays suspended at the source; resume it once they '
        'are gone',
        'ERROR fastmig: domain 7 fast handover: release N ms, drain N'
        ' ms (vbd/51712 shutdown-done N ms), unleash N ms, verdict N '
        'ms, resume N ms; verdict (err (type "x") (value "Restore fai'
        'led")); outcome suspended at the source, running nowhere',
        'error: migration of domain 7 failed ((err (type "x") (value '
        '"Restore failed"))) and it could not be resumed: it is suspe'
        'nded at the source and running nowhere',
    ]


def test_a_target_that_failed_before_anything_was_released(
        store, socketpair, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), notes={"SUSPEND_CANCEL": 1})
    target_sock.sendall(b'(err (type "x") (value "no memory"))\n')
    report = hand_over(dominfo, source, env)
    assert lines(xend_log, report) == [
        'WARNING fastmig: domain 7: the migration failed (migration t'
        'arget failed: (err (type "x") (value "no memory"))); the gue'
        'st was resumed at the source',
        'WARNING fastmig: domain 7 fast handover: resume N ms; verdic'
        't none; outcome resumed at the source; fallback because migr'
        'ation target failed: (err (type "x") (value "no memory"))',
        'error: migration of domain 7 failed (migration target failed'
        ': (err (type "x") (value "no memory"))); it was resumed at t'
        'he source',
    ]


def test_a_failed_release(store, socketpair, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.2)
    store.fail["write"] = (BACKEND, 13)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert lines(xend_log, report) == [
        "ERROR fastmig: releasing vbd/51712 of domain 7 failed: (13, "
        "'injected failure')",
        'WARNING fastmig: domain 7: releasing vbd/51712 failed; falli'
        'ng back to the stock order: destroy the domain, wait for its'
        ' block backends, then release the target',
        'ERROR fastmig: domain 7: block backends still busy after N s'
        ': vbd/51712; releasing the target anyway, as stock 3.1 does',
        'WARNING fastmig: domain 7 stock-order handover: release N ms'
        ', destroy N ms, drain N ms, unleash N ms, verdict N ms; verd'
        'ict (ok); outcome running at the target; fallback because re'
        'leasing vbd/51712 failed',
    ]


def test_a_second_migration_is_refused(store, socketpair, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    first = begin(dominfo, source, False, env)
    try:
        with pytest.raises(PlatformError) as info:
            begin(dominfo, None, False, env)
    finally:
        handover_module.registry.release(dominfo, first)
    assert str(info.value) == "domain 7 is being migrated; try again " \
        "once that migration has ended"


def test_a_failing_reset_of_the_connection(xend_log):
    sock = socket.socket()
    sock.close()
    abort_connection(sock)
    assert lines(xend_log) == [
        'WARNING fastmig: resetting the relocation connection failed:'
        ' [Errno 9] Bad file descriptor',
    ]


def test_no_handover_outside_xend_without_an_environment(store, socketpair,
                                                         xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    assert begin(dominfo, source, False) is None
    assert lines(xend_log) == [
        "ERROR fastmig: cannot set up the handover; saving domain 7 in the "
        "stock order"]


def test_a_failing_early_release(store, socketpair, mocker, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), early_release=True,
                                 drain_timeout=0.2)
    handover = begin(dominfo, source, False, env)
    mocker.patch.object(handover, "_capture_and_release",
                        side_effect=RuntimeError("injected"))
    handover.suspended()
    assert handover.problem == "the early release failed (injected)"
    handover_module.registry.release(dominfo, handover)
    assert lines(xend_log) == [
        "ERROR fastmig: domain 7: the early release failed"]


def test_a_failing_handover_falls_back(store, socketpair, mocker, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.2)
    handover = begin(dominfo, source, False, env)
    mocker.patch.object(handover, "_run",
                        side_effect=RuntimeError("injected"))
    target = Target(target_sock, journal)
    report = handover.run()
    handover.finish()
    target.join()
    assert report.reason == "the handover failed (injected)"
    assert lines(xend_log)[:2] == [
        "ERROR fastmig: domain 7: the handover failed",
        "WARNING fastmig: domain 7: the handover failed (injected); "
        "falling back to the stock order: destroy the domain, wait for "
        "its block backends, then release the target"]


def test_what_fails_after_the_go_is_logged(store, socketpair, mocker,
                                           xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    drain_after(store, journal, 0.01)
    handover = begin(dominfo, source, False, env)
    mocker.patch.object(handover_module, "read_verdict",
                        side_effect=RuntimeError("injected read"))
    mocker.patch.object(dominfo, "destroyDomain",
                        side_effect=RuntimeError("injected destroy"))
    target = Target(target_sock, journal)
    report = handover.run()
    target.join()
    with pytest.raises(PlatformError):
        handover.finish()
    assert report.verdict.reason == "reading the verdict failed: " \
        "injected read"
    assert lines(xend_log)[:3] == [
        "ERROR fastmig: domain 7: reading the verdict failed",
        "ERROR fastmig: domain 7: no usable verdict from the target "
        "(reading the verdict failed: injected read): the outcome of the "
        "migration is UNKNOWN; the target may be running the guest, so the "
        "source copy is destroyed, as stock 3.1 would have; check the "
        "target host",
        "ERROR fastmig: domain 7: destroying the source copy failed"]


def test_a_migration_that_lost_the_race_for_the_domain_is_refused(
        store, socketpair, mocker):
    """Free when looked up, taken by a concurrent begin when claimed."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    mocker.patch.object(handover_module.registry, "claim",
                        return_value=False)
    with pytest.raises(PlatformError) as info:
        begin(dominfo, source, False, env)
    assert str(info.value) == "domain 7 is being migrated; try again " \
        "once that migration has ended"


def test_the_summary_line_of_a_report():
    report = HandoverReport(7)
    assert (report.reason, report.devices, report.verdict) == ("", [], None)
    report.phase("release", 0.25)
    report.phase("drain", 0.5)
    report.devices = [("vbd/51712", "backend-gone", 0.25),
                      ("tap/51744", "shutdown-done", 0.5)]
    report.outcome = "running at the target"
    assert report.phase_seconds("drain") == 0.5
    assert report.phase_seconds("release") == 0.25
    assert report.phase_seconds("verdict") is None
    assert report.summary() == "fastmig: domain 7 fast handover: release " \
        "250.0 ms, drain 500.0 ms (vbd/51712 backend-gone 250.0 ms, " \
        "tap/51744 shutdown-done 500.0 ms); verdict none; outcome running " \
        "at the target"
    report.reason = "why"
    assert report.summary().endswith("; fallback because why")


def test_a_failed_save(store, socketpair, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), notes={"SUSPEND_CANCEL": 1})
    handover = begin(dominfo, source, False, env)
    try:
        raise IOError("xc_save failed")
    except IOError:
        handover.failed()
    with pytest.raises(PlatformError) as info:
        handover.finish()
    assert handover.report.reason == "the save failed: xc_save failed"
    assert str(info.value) == "migration of domain 7 failed (the save " \
        "failed: xc_save failed); it was resumed at the source"


def test_a_failed_save_after_the_go_resumes_nothing(store, socketpair):
    """Cannot happen (run never raises), and must not resume if it did."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    handover = begin(dominfo, source, False, env)
    handover.unleashed = True
    try:
        raise IOError("xc_save failed")
    except IOError:
        handover.failed()
    handover_module.registry.release(dominfo, handover)
    assert handover.report.outcome == handover_module.UNKNOWN
    assert handover.report.reason == "the save failed: xc_save failed"
    assert journal == []


def test_a_failing_recovery_from_a_failed_save(store, socketpair, mocker,
                                               xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    handover = begin(dominfo, source, False, env)
    mocker.patch.object(handover, "_resume",
                        side_effect=RuntimeError("injected"))
    handover.failed()
    handover_module.registry.release(dominfo, handover)
    assert handover.report.outcome == handover_module.UNKNOWN
    assert lines(xend_log) == [
        "ERROR fastmig: domain 7: recovering from the failed save failed"]


@pytest.mark.parametrize("state,outcome,journal_after", [
    ("unleashed", "unknown", ["destroyDomain"]),
    ("destroyed", "lost", []),
])
def test_an_error_inside_run_never_leaves_two_copies(
        store, socketpair, mocker, state, outcome, journal_after):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    handover = begin(dominfo, source, False, env)

    def fail():
        setattr(handover, state, True)
        raise RuntimeError("injected")
    mocker.patch.object(handover, "_run", side_effect=fail)
    report = handover.run()
    handover_module.registry.release(dominfo, handover)
    assert report.outcome == outcome
    assert journal == journal_after


def test_a_failing_fallback_after_an_error_inside_run(store, socketpair,
                                                      mocker, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    handover = begin(dominfo, source, False, env)
    mocker.patch.object(handover, "_run",
                        side_effect=RuntimeError("injected"))
    mocker.patch.object(handover, "_stock_order",
                        side_effect=RuntimeError("injected again"))
    report = handover.run()
    handover_module.registry.release(dominfo, handover)
    assert report.outcome == handover_module.UNKNOWN
    assert lines(xend_log) == [
        "ERROR fastmig: domain 7: the handover failed",
        "ERROR fastmig: domain 7: the stock-order fallback failed"]


def test_nothing_to_wait_for_when_no_backend_can_be_listed(
        store, socketpair, monkeypatch, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.2)

    def broken(*args):
        raise RuntimeError("injected")
    monkeypatch.setattr(handover_module, "capture_block_devices", broken)
    monkeypatch.setattr(handover_module, "dom0_block_backends", broken)
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.reason == "the block devices could not be read (injected)"
    assert lines(xend_log)[1] == "ERROR fastmig: domain 7: cannot list its " \
        "block backends (injected); nothing to wait for"


class _NoHalfClose(object):
    """A relocation socket whose half-close fails."""

    def __init__(self, sock):
        self._sock = sock

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def shutdown(self, how):
        raise socket.error(107, "Transport endpoint is not connected")


def test_a_failing_half_close(store, socketpair, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), verdict_timeout=0.2)
    drain_after(store, journal, 0.01)
    hand_over(dominfo, _NoHalfClose(source), env)
    assert lines(xend_log)[0] == "ERROR fastmig: domain 7: half-closing " \
        "the relocation connection failed: [Errno 107] Transport endpoint " \
        "is not connected"


def test_a_resume_after_a_drain_that_never_came(store, socketpair,
                                                monkeypatch, mocker,
                                                xend_log):
    """A shutdown-request backend that never wrote shutdown-done, and a
    target that failed meanwhile: torn down anyway, and still there."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), protocol=True,
                                 drain_timeout=0.2, resume_grace=0.2)
    mocker.patch.object(handover_module, "tear_down_confirmed",
                        side_effect=RuntimeError("injected"))

    def fail_once_released():
        # After the first look, well before the drain times out.
        _wait_until(lambda: store.read(BACKEND + "/shutdown-request"))
        target_sock.sendall(ERR)
    threading.Thread(target=fail_once_released).start()
    report = hand_over(dominfo, source, env)
    assert report.outcome == handover_module.SUSPENDED
    # Both waits of the resume end at its deadline (the 0.2 s of grace,
    # the drain budget being spent), not a second later.
    assert report.phase_seconds("resume") < 0.9, report.summary()
    assert lines(xend_log)[:3] == [
        "WARNING fastmig: domain 7: block backends still busy after N s: "
        "vbd/51712; tearing them down anyway",
        "WARNING fastmig: domain 7: tearing down vbd/51712 failed: injected",
        'ERROR fastmig: domain 7: the target failed (block backends still '
        'busy after N s: vbd/51712; then migration target failed: (err '
        '(type "x") (value "Restore failed"))), but the old '
        'block backends vbd/51712 are still there, so the devices cannot be '
        're-created: the guest stays suspended at the source; resume it '
        'once they are gone']


def test_a_guest_of_unknown_kind_keeps_its_devices_until_the_image_is_out(
        store, socketpair, mocker):
    """Not known to be PV: no early release (see ``suspended``)."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), early_release=True)
    mocker.patch.object(dominfo.info, "is_hvm",
                        side_effect=RuntimeError("injected"))
    handover = begin(dominfo, source, False, env)
    handover.suspended()
    handover_module.registry.release(dominfo, handover)
    assert dominfo.releases == []
    assert handover.report.early_release is False


def test_a_drain_wait_with_nothing_captured_waits_for_nothing(store,
                                                             socketpair):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    handover = begin(dominfo, source, False, env)
    try:
        assert handover.devices is None
        assert handover._remaining() == 5.0
        assert handover.wait_for_drain() == []
    finally:
        handover_module.registry.release(dominfo, handover)


def _stock_order_reason(socketpair, dominfo, env, journal):
    source, target_sock = socketpair
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == handover_module.STOCK_ORDER
    return report.reason


def test_why_the_stock_order_was_taken(store, socketpair, mocker):
    """The fallback's reason names what went wrong and with what error."""
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.2)
    drain_after(store, journal, 0.01)
    mocker.patch.object(dominfo, "testDeviceComplete",
                        side_effect=MemoryError("injected"))
    assert _stock_order_reason(socketpair, dominfo, env, journal) == \
        "the drain wait failed (injected)"


def test_why_the_stock_order_was_taken_after_a_failing_release(
        store, socketpair, mocker):
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.2)
    mocker.patch.object(dominfo, "_releaseDevices",
                        side_effect=RuntimeError("injected"))
    assert _stock_order_reason(socketpair, dominfo, env, journal) == \
        "releasing the devices failed (injected)"


def test_every_problem_of_the_capture_is_in_the_reason(store, socketpair):
    dominfo, env, journal = make(store, vifs=(), vbds=(51712, 51728),
                                 drain_timeout=0.2)
    second = "/local/domain/0/backend/vbd/7/51728"
    store.write(BACKEND + "/frontend-id", "8")
    store.write(second + "/frontend-id", "9")
    assert _stock_order_reason(socketpair, dominfo, env, journal) == \
        "%s names frontend domain '8', not 7; %s names frontend domain " \
        "'9', not 7" % (BACKEND, second)


def test_every_failed_release_is_in_the_reason(store, socketpair):
    dominfo, env, journal = make(store, vifs=(), vbds=(51712, 51728),
                                 drain_timeout=0.2)
    store.fail["write"] = ("/local/domain/0/backend/vbd/7/", 13)
    assert _stock_order_reason(socketpair, dominfo, env, journal) == \
        "releasing vbd/51712, vbd/51728 failed"


def test_the_stock_order_waits_for_the_captured_backends(store, socketpair):
    """Not dom0's listing: a driver domain's backend is waited for too."""
    source, target_sock = socketpair
    backend = "/local/domain/3/backend/vbd/7/51712"
    dominfo, env, journal = make(store, vifs=(), backend_domid=3,
                                 drain_timeout=2.0)
    store.fail["write"] = (backend, 13)

    def drain_after_destroy():
        _wait_until(lambda: "destroyDomain" in journal)
        time.sleep(0.05)
        journal.append("backend drained")
        store.remove(backend)
    threading.Thread(target=drain_after_destroy).start()
    target = Target(target_sock, journal)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.path == handover_module.STOCK_ORDER
    assert journal == ["destroyDomain", "backend drained", "target released"]
    assert [name for name, _, _ in report.devices] == ["vbd/51712"]


def test_the_stock_orders_budget_includes_the_destroy(store, socketpair,
                                                     mocker, monkeypatch):
    """One budget, the drain timeout, from the stock order's start: a slow
    destroy (seconds per GB) leaves less of it for the wait."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.5)
    waits = []

    real = handover_module.DrainWaiter

    class RecordingWaiter(real):
        def __init__(self, store_, devices, timeout, gone_only=False):
            waits.append(timeout)
            real.__init__(self, store_, devices, timeout, gone_only)
    monkeypatch.setattr(handover_module, "DrainWaiter", RecordingWaiter)
    mocker.patch.object(dominfo, "destroyDomain",
                        side_effect=lambda: time.sleep(0.3))
    handover = begin(dominfo, source, False, env)
    # Nothing captured yet: the stock order makes the budget itself.
    mocker.patch.object(handover, "_run",
                        side_effect=RuntimeError("injected"))
    target = Target(target_sock, journal)
    handover.run()
    handover.finish()
    target.join()
    assert len(waits) == 1
    assert waits[0] <= 0.5 - 0.3 + 0.05, waits


def test_an_error_after_the_go_never_resumes_nor_releases_twice(
        store, socketpair, mocker):
    """Once released, the target may run the guest: an error inside run
    after the go destroys the source copy and says "unknown"."""
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=())
    drain_after(store, journal, 0.01)
    handover = begin(dominfo, source, False, env)
    mocker.patch.object(handover, "_read_verdict",
                        side_effect=RuntimeError("injected"))
    target = Target(target_sock, journal)
    report = handover.run()
    target.join()
    with pytest.raises(PlatformError):
        handover.finish()
    assert report.outcome == handover_module.UNKNOWN
    # The target notes its release on its own thread: in either order.
    assert sorted(journal) == ["backend drained", "destroyDomain",
                               "target released"]
    assert [name for name, _ in report.phases].count("unleash") == 1


def test_no_verdict_after_the_stock_order(store, socketpair, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.1,
                                 verdict_timeout=0.2)
    target = Target(target_sock, journal, verdict=None)
    report = hand_over(dominfo, source, env)
    target.join()
    assert report.outcome == handover_module.UNKNOWN
    assert lines(xend_log, report)[-2:] == [
        "ERROR fastmig: domain 7 stock-order handover: release N ms, drain "
        "N ms, destroy N ms, drain N ms, unleash N ms, verdict N ms; "
        "verdict unknown (no reply within 0.2 s); outcome unknown; fallback "
        "because block backends still busy after N s: vbd/51712",
        "error: migration of domain 7: the outcome is unknown (unknown (no "
        "reply within 0.2 s)); the source copy was destroyed and the target "
        "may be running it: check the target host"]


def test_an_error_after_the_destroy_says_lost_and_destroys_once(
        store, socketpair, mocker):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.1)
    handover = begin(dominfo, source, False, env)
    mocker.patch.object(handover, "_unleash",
                        side_effect=RuntimeError("injected"))
    report = handover.run()
    with pytest.raises(PlatformError):
        handover.finish()
    assert report.path == handover_module.STOCK_ORDER
    assert report.outcome == handover_module.LOST
    assert journal == ["destroyDomain"]


def test_every_old_backend_still_there_is_named(store, socketpair,
                                                monkeypatch, xend_log):
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), protocol=True,
                                 taps=(51744,), drain_timeout=0.2,
                                 resume_grace=0.2)

    def fail_once_released():
        _wait_until(lambda: store.read(BACKEND + "/shutdown-request"))
        target_sock.sendall(ERR)
    threading.Thread(target=fail_once_released).start()
    report = hand_over(dominfo, source, env)
    assert report.outcome == handover_module.SUSPENDED
    still = [line for line in lines(xend_log) if "are still there" in line]
    assert len(still) == 1
    assert "the old block backends vbd/51712, tap/51744 are still there" \
        in still[0]


def _released_then_failing_reads(store, socketpair, resume_grace,
                                 lasts=None, then_remove=None):
    """Released early, the target failed; from the resume on, the
    backend's reads fail with EAGAIN for ``lasts`` seconds (None: for
    good), and the backend goes ``then_remove`` s after that.  The
    handover's report, its journal."""
    import errno
    source, target_sock = socketpair
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.2,
                                 early_release=True,
                                 resume_grace=resume_grace)
    handover = begin(dominfo, source, False, env)
    handover.suspended()
    assert store.nodes.get(BACKEND + "/online") == "0"
    target_sock.sendall(ERR)
    store.fail["read"] = (BACKEND, errno.EAGAIN)

    def recover():
        time.sleep(lasts)
        store.fail.pop("read", None)
        time.sleep(then_remove)
        store.remove(BACKEND)
    if lasts is not None:
        thread = threading.Thread(target=recover)
        thread.daemon = True
        thread.start()
    try:
        report = handover.run()
        try:
            handover.finish()
        except PlatformError:
            pass
    finally:
        store.fail.pop("read", None)
    return report, journal


def test_a_transient_error_while_the_old_backends_go_is_retried(
        store, socketpair, xend_log):
    """The resume's wait for the old backends asks again, every
    RETRY_PAUSE, also with less than a second of its deadline left."""
    report, journal = _released_then_failing_reads(
        store, socketpair, 0.8, lasts=0.15, then_remove=0.05)
    assert report.outcome == handover_module.RESUMED
    retried = [line for line in lines(xend_log) if "trying again" in line]
    assert len(retried) >= 2, lines(xend_log)
    assert retried[0] == (
        "WARNING fastmig: domain 7: waiting for the old block backends "
        "failed ((11, 'injected failure')); trying again")
    assert "destroyDomain" not in journal


def test_an_error_that_lasts_ends_the_wait_at_its_deadline(
        store, socketpair, xend_log):
    started = time.time()
    report, journal = _released_then_failing_reads(store, socketpair, 0.3)
    assert time.time() - started < 3.0
    assert report.outcome == handover_module.SUSPENDED
    last = [line for line in lines(xend_log)
            if "waiting for the old block backends failed" in line][-1]
    assert last == ("WARNING fastmig: domain 7: waiting for the old block "
                    "backends failed ((11, 'injected failure'))")
    assert "destroyDomain" not in journal


@pytest.mark.parametrize("resumed", [False, True])
def test_an_error_inside_the_resume_never_destroys(store, socketpair, mocker,
                                                   resumed):
    """Once the target failed, an exception out of the resume must not
    fall into stock's order (it would destroy a guest that can come
    back): the outcome is where the guest is."""
    source, target_sock = socketpair
    # SUSPEND_CANCEL: the stock resume brings it back on its devices.
    dominfo, env, journal = make(store, vifs=(), drain_timeout=0.3,
                                 notes={"SUSPEND_CANCEL": 1})
    real_resume = dominfo.resumeDomain

    def resume_then_raise(*args, **kwargs):
        if resumed:
            real_resume(*args, **kwargs)
        raise RuntimeError("injected resume")
    mocker.patch.object(dominfo, "resumeDomain", side_effect=resume_then_raise)
    target_sock.sendall(ERR)
    report = hand_over(dominfo, source, env)
    assert "destroyDomain" not in journal
    if resumed:
        assert report.outcome == handover_module.RESUMED
    else:
        assert report.outcome == handover_module.SUSPENDED
