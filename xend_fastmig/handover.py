"""The handover: what the source does once the guest's image is sent.

Order on the fast path (docs/design.md has the decision table):

a. look whether the target already failed (nothing released yet);
b. release the devices so the block backends drain;
c. wait until every block backend confirmed its drain;
d. half-close the connection: the target sees EOF and unpauses;
e. read the target's verdict: destroy the source copy on ``(ok)``, resume
   it on ``(err ...)``, destroy it and say the outcome is unknown otherwise.

Whatever goes wrong before (d) falls back to stock 3.1's order (destroy,
wait for the block backends, then release the target), so the target never
runs earlier than stock would unless every backend confirmed its drain.
"""

import logging
import socket
import sys

from xend_fastmig.blockdevs import capture_block_devices
from xend_fastmig.clock import monotonic, now
from xend_fastmig.drain import DrainWaiter, dom0_block_backends
from xend_fastmig.errors import DrainTimeout, TargetFailed
from xend_fastmig.release import release_devices
from xend_fastmig.resume import resume_domain
from xend_fastmig.verdict import ERR, OK, Verdict, peek_for_failure, \
     read_verdict
from xend_fastmig.verdict import UNKNOWN as UNKNOWN_VERDICT

__all__ = ["Environment", "Handover", "HandoverReport", "FAST",
           "STOCK_ORDER", "AT_TARGET", "RESUMED", "UNKNOWN", "LOST"]

FAST = "fast"
STOCK_ORDER = "stock-order"

AT_TARGET = "running at the target"
RESUMED = "resumed at the source"
UNKNOWN = "unknown"
LOST = "lost"


class Environment:
    """What the handover works with: xenstore, the platform seam, options."""

    def __init__(self, store, platform, options, log=None):
        self.store = store
        self.platform = platform
        self.options = options
        if log is None:
            log = logging.getLogger("xend")
        self.log = log


class HandoverReport:
    """What happened, for the log line, the rehearsal and the tests."""

    def __init__(self, domid):
        self.domid = domid
        self.path = FAST
        self.outcome = None
        self.verdict = None
        self.reason = ""
        self.phases = []
        self.devices = []
        # monotonic() when the target was released (None: never).
        self.unleashed_at = None

    def phase(self, name, seconds):
        self.phases.append((name, seconds))

    def phase_seconds(self, name):
        for phase, seconds in self.phases:
            if phase == name:
                return seconds
        return None

    def summary(self):
        parts = []
        for name, seconds in self.phases:
            if name == "drain" and self.devices:
                confirmations = []
                for device, how, at in self.devices:
                    confirmations.append("%s %s %.1f ms"
                                         % (device, how, at * 1000))
                parts.append("drain %.1f ms (%s)"
                             % (seconds * 1000, ", ".join(confirmations)))
            else:
                parts.append("%s %.1f ms" % (name, seconds * 1000))
        verdict = "none"
        if self.verdict is not None:
            verdict = self.verdict.describe()
        text = "fastmig: domain %s %s handover: %s; verdict %s; outcome %s" \
            % (self.domid, self.path, ", ".join(parts), verdict,
               self.outcome)
        if self.reason:
            text = "%s; fallback because %s" % (text, self.reason)
        return text


class _Phase:
    """Times one phase into the report, even when it raises."""

    def __init__(self, report, name):
        self.report = report
        self.name = name
        self.started = now()

    def done(self):
        self.report.phase(self.name, now() - self.started)


class Handover:
    """Hands a suspended, fully sent domain over to the target.

    Guarantees: the target is released (EOF) only after every block backend
    confirmed its drain, or after the source copy was destroyed and the
    backends waited for as stock 3.1 does; the source copy is resumed only
    when the target said ``(err ...)`` or hung up before it was released;
    nothing but ``TargetFailed`` (raised before anything was released)
    escapes ``run``.
    """

    def __init__(self, dominfo, sock, env):
        self.dominfo = dominfo
        self.sock = sock
        self.env = env
        self.log = env.log
        # Captured now: 3.1.0's destroyDomain clears the domid.
        self.domid = dominfo.getDomid()
        self.dompath = dominfo.dompath
        self.report = HandoverReport(self.domid)
        self._early = ""

    def run(self):
        """Run the handover; returns the ``HandoverReport``."""
        # Kept for the verdict, whichever path reads it.
        self._early = peek_for_failure(self.sock)
        if self._early:
            self.log.warning("fastmig: domain %s: unexpected data from the "
                             "target before its release: %r",
                             self.domid, self._early[:200])
        store = self.env.store
        try:
            devices, problems = capture_block_devices(store, self.domid,
                                                      self.dompath)
        except Exception:
            return self._stock_order("the block devices could not be read "
                                     "(%s)" % (sys.exc_info()[1],), None,
                                     False)
        if problems:
            return self._stock_order("; ".join(problems), devices, False)

        phase = _Phase(self.report, "release")
        try:
            failed = release_devices(self.dominfo, store, force=True,
                                     devices=devices)
        except Exception:
            # Something may be released already: an exception reaching
            # save's failure path would fast-resume a SUSPEND_CANCEL guest
            # on torn-down devices.
            phase.done()
            return self._stock_order("releasing the devices failed (%s)"
                                     % (sys.exc_info()[1],), devices, True)
        phase.done()
        if failed:
            return self._stock_order("releasing %s failed"
                                     % ", ".join(failed), devices, True)

        phase = _Phase(self.report, "drain")
        try:
            self.report.devices = DrainWaiter(
                store, devices, self.env.options.drain_timeout).wait()
        except DrainTimeout:
            phase.done()
            return self._stock_order(str(sys.exc_info()[1]), devices, True)
        except Exception:
            phase.done()
            return self._stock_order("the drain wait failed (%s)"
                                     % (sys.exc_info()[1],), devices, True)
        phase.done()

        failure = self._target_gave_up()
        if failure is not None:
            # The target gave up while the backends drained: it is not
            # running, and the source copy can come back on new devices.
            self.report.reason = str(failure)
            self._resume()
            return self._finish()

        self._unleash()
        self._read_verdict(self._early)
        if self.report.verdict.kind == OK:
            self._destroy()
            self.report.outcome = AT_TARGET
        elif self.report.verdict.kind == ERR:
            self._resume()
        else:
            self.log.error("fastmig: domain %s: no usable verdict from the "
                           "target (%s): the outcome of the migration is "
                           "UNKNOWN; the target may be running the guest, "
                           "so the source copy is destroyed, as stock 3.1 "
                           "would have; check the target host",
                           self.domid, self.report.verdict.reason)
            self._destroy()
            self.report.outcome = UNKNOWN
        return self._finish()

    def _stock_order(self, reason, devices, released):
        """Stock 3.1's order: destroy, wait for the backends, release.

        Before destroying anything it looks at the connection once more: a
        target that has already failed (``(err ...)``, hang-up, reset) is
        not running, and destroying the source copy would lose a guest
        that can come back.  ``released``: whether devices were already
        force-released (the source then resumes on new devices; otherwise
        ``TargetFailed`` goes to the stock failure path, devices intact).
        """
        self.report.path = STOCK_ORDER
        self.report.reason = reason
        failure = self._target_gave_up()
        if failure is not None:
            if not released:
                raise failure
            self.report.reason = "%s; then %s" % (reason, failure)
            self._resume()
            return self._finish()
        self.log.warning("fastmig: domain %s: %s; falling back to the stock "
                         "order: destroy the domain, wait for its block "
                         "backends, then release the target",
                         self.domid, reason)
        if devices is None:
            devices = self._dom0_block_backends()
        self._destroy()
        phase = _Phase(self.report, "drain")
        try:
            self.report.devices = DrainWaiter(
                self.env.store, devices,
                self.env.options.drain_timeout).wait()
        except Exception:
            self.log.error("fastmig: domain %s: %s; releasing the target "
                           "anyway, as stock 3.1 does",
                           self.domid, sys.exc_info()[1])
        phase.done()
        self._unleash()
        self._read_verdict(self._early)
        if self.report.verdict.kind == OK:
            self.report.outcome = AT_TARGET
        elif self.report.verdict.kind == ERR:
            self.log.error("fastmig: domain %s: the target failed after the "
                           "source copy was destroyed: the guest is lost "
                           "(stock 3.1 would have lost it too)", self.domid)
            self.report.outcome = LOST
        else:
            self.report.outcome = UNKNOWN
        return self._finish()

    def _target_gave_up(self):
        """Look again without blocking; the ``TargetFailed`` if it gave up.

        What else the target sent is added to what the verdict will read.
        """
        try:
            self._early = peek_for_failure(self.sock, self._early)
        except TargetFailed:
            return sys.exc_info()[1]
        return None

    def _dom0_block_backends(self):
        try:
            return dom0_block_backends(self.env.store, self.domid)
        except Exception:
            self.log.error("fastmig: domain %s: cannot list its block "
                           "backends (%s); nothing to wait for",
                           self.domid, sys.exc_info()[1])
            return []

    def _unleash(self):
        phase = _Phase(self.report, "unleash")
        self.report.unleashed_at = monotonic()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except socket.error:
            self.log.error("fastmig: domain %s: half-closing the relocation "
                           "connection failed: %s", self.domid,
                           sys.exc_info()[1])
        phase.done()

    def _read_verdict(self, already):
        """Never raises: the target is already released, and an exception
        reaching save's failure path would resume the source copy next to
        a running target copy."""
        phase = _Phase(self.report, "verdict")
        try:
            self.report.verdict = read_verdict(
                self.sock, self.env.options.verdict_timeout, already)
        except Exception:
            self.log.exception("fastmig: domain %s: reading the verdict "
                               "failed", self.domid)
            self.report.verdict = Verdict(
                UNKNOWN_VERDICT, already, "reading the verdict failed: %s"
                % (sys.exc_info()[1],))
        phase.done()

    def _destroy(self):
        phase = _Phase(self.report, "destroy")
        try:
            self.dominfo.destroyDomain()
        except Exception:
            self.log.exception("fastmig: domain %s: destroying the source "
                               "copy failed", self.domid)
        phase.done()

    def _resume(self):
        """The target destroyed its copy: bring the source copy back."""
        phase = _Phase(self.report, "resume")
        try:
            resume_domain(self.dominfo, self.env.platform, allow_fast=False)
            self.report.outcome = RESUMED
            self.log.warning("fastmig: domain %s: the target failed (%s); "
                             "the guest was resumed at the source",
                             self.domid, self._failure_text())
        except Exception:
            self.report.outcome = LOST
            self.log.exception("fastmig: domain %s: the target failed (%s) "
                               "and resuming the source copy failed too",
                               self.domid, self._failure_text())
        phase.done()

    def _failure_text(self):
        if self.report.verdict is not None:
            return self.report.verdict.describe()
        return self.report.reason

    def _finish(self):
        if self.report.outcome not in (AT_TARGET, RESUMED):
            self.log.error("%s", self.report.summary())
        elif self.report.path == FAST and self.report.outcome == AT_TARGET:
            self.log.info("%s", self.report.summary())
        else:
            self.log.warning("%s", self.report.summary())
        return self.report
