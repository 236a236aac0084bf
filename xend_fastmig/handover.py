"""The handover: how a migration's source lets the target run early.

The patched ``XendCheckpoint.save`` drives it (``patches/``):

* ``begin(dominfo, sock, checkpoint)`` before anything is sent: refuses a
  domain whose handover is already under way; returns a ``Handover`` for
  a migration, None for anything else;
* ``suspended()`` in xc_save's suspend handler, once ``done`` is written:
  with the early release, the block devices are released now, so that the
  backends drain while the last memory round is sent;
* ``run()`` instead of "destroy, wait, let the caller close", once the
  image (and an HVM guest's device model) is sent;
* ``failed()`` instead of ``resumeDomain()`` on save's failure path;
* ``finish()`` at the end of save: raises the platform's error (XendError
  inside xend) unless the guest ended up running at the target.

Order on the fast path (docs/design.md has the decision table):

a. look whether the target already failed (nothing released yet);
b. release the block devices (``_releaseDevices(force=True)``) so the
   backends drain, unless the early release did;
c. wait until every block backend confirmed its drain
   (``testDeviceComplete(io_done=True)``);
d. look again whether the target gave up meanwhile;
e. half-close the connection: the target sees EOF and unpauses;
f. read the target's verdict: destroy the source copy on ``(ok)``, resume
   it on ``(err ...)``, destroy it and say the outcome is unknown otherwise.

Whatever goes wrong before (e) falls back to stock 3.1's order (destroy,
wait for the block backends, then release the target), so the target never
runs earlier than stock would unless every backend confirmed its drain.
Every wait for the backends shares one budget, the drain timeout.
"""

import logging
import socket
import struct
import sys
import time

from xend_fastmig import registry
from xend_fastmig.blockdevs import capture_block_devices
from xend_fastmig.clock import Deadline, monotonic, now
from xend_fastmig.drain import DrainWaiter, dom0_block_backends
from xend_fastmig.errors import DrainTimeout, TargetFailed
from xend_fastmig.options import DEFAULT_RESUME_GRACE
from xend_fastmig.release import tear_down_confirmed
from xend_fastmig.verdict import ERR, OK, Verdict, peek_for_failure, \
     read_verdict
from xend_fastmig.verdict import UNKNOWN as UNKNOWN_VERDICT

__all__ = ["Environment", "Handover", "HandoverReport", "begin",
           "abort_connection", "FAST", "STOCK_ORDER", "AT_TARGET",
           "RESUMED", "SUSPENDED", "UNKNOWN", "LOST", "RESUME_GRACE"]

FAST = "fast"
STOCK_ORDER = "stock-order"

AT_TARGET = "running at the target"
RESUMED = "resumed at the source"
SUSPENDED = "suspended at the source, running nowhere"
UNKNOWN = "unknown"
LOST = "lost"

# The default of FastMigrationOptions.resume_grace: a resume after a
# failed target must first see the old backends gone; when the drain
# budget is spent, this much more is granted for it.
RESUME_GRACE = DEFAULT_RESUME_GRACE
# Between two tries of a xenstore read that failed transiently.
RETRY_PAUSE = 0.05


class Environment:
    """What the handover works with: xenstore, the platform seam, options.

    ``platform`` has ``domain_running(domid)`` and ``error(message)``
    (``xend_fastmig.xendenv.XendPlatform`` inside xend).
    """

    def __init__(self, store, platform, options, log=None):
        self.store = store
        self.platform = platform
        self.options = options
        if log is None:
            log = logging.getLogger("xend")
        self.log = log


def begin(dominfo, sock, checkpoint, env=None):
    """The ``Handover`` for this save, or None for stock's order.

    Raises the platform's error when ``dominfo`` is already being handed
    over: a second migration or save would otherwise resume the domain
    through its own failure path while the first one's target may run it.
    Returns None when there is nothing to hand over (no relocation
    socket, or a checkpoint), and when the environment cannot be built
    (logged: the save then runs in stock's order).
    """
    if env is None:
        try:
            from xend_fastmig.xendenv import xend_environment
            env = xend_environment()
        except Exception:
            logging.getLogger("xend").exception(
                "fastmig: cannot set up the handover; saving domain %s in "
                "the stock order", dominfo.getDomid())
            return None
    busy = registry.lookup(dominfo)
    if busy is not None:
        raise env.platform.error(
            "domain %s is being migrated; try again once that migration "
            "has ended" % busy.domid)
    if sock is None or checkpoint:
        return None
    handover = Handover(dominfo, sock, env)
    if not registry.claim(dominfo, handover):
        raise env.platform.error(
            "domain %s is being migrated; try again once that migration "
            "has ended" % handover.domid)
    return handover


def abort_connection(sock):
    """Reset the relocation connection instead of closing it.

    A 3.1 target releases its copy on end-of-stream *or on any byte*, so a
    failed source must never close gracefully once the image may be out:
    a reset makes the target's read fail, and its restore then destroys
    its copy.  Never raises.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
        sock.close()
    except Exception:
        logging.getLogger("xend").warning(
            "fastmig: resetting the relocation connection failed: %s",
            sys.exc_info()[1])


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
        self.early_release = False
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
    when the target said ``(err ...)`` or gave up before it was released,
    and then on re-created devices once every old block backend is gone
    if any was released; ``suspended``, ``run`` and ``failed`` never raise.
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
        # The block devices, captured once (None: not yet, or unreadable).
        self.devices = None
        # Why the fast path is off (None: still on).
        self.problem = None
        # Block devices may be torn down: the source copy can only come
        # back on re-created devices.
        self.released = False
        self.unleashed = False
        # _resume has begun: the target failed.
        self.resuming = False
        self.destroyed = False
        # One budget for every wait on the backends (a clock.Deadline).
        self.deadline = None
        self._early = ""

    # ---- what the patched save calls -------------------------------------

    def suspended(self):
        """The guest is suspended and xc_save told to go on.  Never raises.

        With the early release, the block devices are released now: the
        suspended guest issues nothing new, and its backends drain while
        the last memory round is sent.  The target still runs only after
        ``run``.  Never for an HVM guest: if xc_save then fails, stock's
        failure path would resume it cooperatively on its devices, and
        with them released only the re-creating resume is left, which
        Xen 3.1 refuses for HVM.
        """
        try:
            if self.env.options.early_release and not self._is_hvm():
                self.report.early_release = True
                self._capture_and_release()
        except Exception:
            self.log.exception("fastmig: domain %s: the early release "
                               "failed", self.domid)
            if self.problem is None:
                self.problem = "the early release failed (%s)" \
                    % (sys.exc_info()[1],)

    def run(self):
        """Hand over the sent domain; the report.  Never raises."""
        try:
            self._run()
        except Exception:
            self.log.exception("fastmig: domain %s: the handover failed",
                               self.domid)
            self._recover("the handover failed (%s)" % (sys.exc_info()[1],))
        return self.report

    def failed(self):
        """Save's failure path: bring the source copy back.  Never raises.

        The connection is reset first, so a 3.1 target destroys its copy
        instead of taking our close for its go.
        """
        try:
            reason = "the save failed: %s" % (sys.exc_info()[1],)
            if self.unleashed:
                # Cannot happen (run never raises), but a released target
                # may be running the guest: never resume next to it.
                self.report.outcome = UNKNOWN
                self.report.reason = reason
                return
            self.report.reason = reason
            self._resume()
        except Exception:
            self.log.exception("fastmig: domain %s: recovering from the "
                               "failed save failed", self.domid)
            if self.report.outcome is None:
                self.report.outcome = UNKNOWN

    def finish(self):
        """End the handover; raise unless the guest runs at the target."""
        registry.release(self.dominfo, self)
        try:
            self.sock.close()
        except Exception:
            pass
        self._log_summary()
        if self.report.outcome == AT_TARGET:
            return
        raise self.env.platform.error(self._failure_message())

    # ---- what the domain object's fastmig branches call ------------------

    def wait_for_drain(self):
        """``testDeviceComplete(io_done=True)``: wait on the captured
        devices until the drain deadline; raises ``DrainTimeout``."""
        devices = self.devices
        if devices is None:
            devices = []
        return DrainWaiter(self.env.store, devices,
                           self._remaining()).wait()

    # ---- the steps ---------------------------------------------------------

    def _run(self):
        failure = self._target_gave_up()
        if failure is not None:
            self.report.reason = str(failure)
            self._resume()
            return
        if self.devices is None and self.problem is None:
            self._capture_and_release()
        if self.problem is not None:
            self._stock_order(self.problem)
            return

        phase = _Phase(self.report, "drain")
        try:
            self.report.devices = self.dominfo.testDeviceComplete(
                io_done=True) or []
        except DrainTimeout:
            phase.done()
            self._stock_order(str(sys.exc_info()[1]))
            return
        except Exception:
            phase.done()
            self._stock_order("the drain wait failed (%s)"
                              % (sys.exc_info()[1],))
            return
        phase.done()

        failure = self._target_gave_up()
        if failure is not None:
            # The target gave up while the backends drained: it is not
            # running, and the source copy can come back on new devices.
            self.report.reason = str(failure)
            self._resume()
            return

        self._unleash()
        self._read_verdict()
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

    def _capture_and_release(self):
        """Capture the block devices and ask their backends to drain.

        Sets ``problem`` when the fast path cannot confirm every drain.
        """
        if self.deadline is None:
            self.deadline = Deadline(self.env.options.drain_timeout)
        try:
            devices, problems = capture_block_devices(
                self.env.store, self.domid, self.dompath)
        except Exception:
            self.problem = "the block devices could not be read (%s)" \
                % (sys.exc_info()[1],)
            return
        self.devices = devices
        if problems:
            self.problem = "; ".join(problems)
            return
        phase = _Phase(self.report, "release")
        # Set first: a failure part-way may have torn something down.
        self.released = True
        try:
            failed = self.dominfo._releaseDevices(force=True)
        except Exception:
            phase.done()
            self.problem = "releasing the devices failed (%s)" \
                % (sys.exc_info()[1],)
            return
        phase.done()
        if failed:
            self.problem = "releasing %s failed" % ", ".join(failed)

    def _stock_order(self, reason):
        """Stock 3.1's order: destroy, wait for the backends, release.

        Before destroying anything it looks at the connection once more: a
        target that has already failed (``(err ...)``, hang-up, reset) is
        not running, and destroying the source copy would lose a guest
        that can come back.
        """
        self.report.path = STOCK_ORDER
        self.report.reason = reason
        failure = self._target_gave_up()
        if failure is not None:
            self.report.reason = "%s; then %s" % (reason, failure)
            self._resume()
            return
        self.log.warning("fastmig: domain %s: %s; falling back to the stock "
                         "order: destroy the domain, wait for its block "
                         "backends, then release the target",
                         self.domid, reason)
        devices = self.devices
        if devices is None:
            devices = self._dom0_block_backends()
        if self.deadline is None:
            self.deadline = Deadline(self.env.options.drain_timeout)
        self._destroy()
        phase = _Phase(self.report, "drain")
        try:
            self.report.devices = DrainWaiter(self.env.store, devices,
                                              self._remaining()).wait()
        except Exception:
            self.log.error("fastmig: domain %s: %s; releasing the target "
                           "anyway, as stock 3.1 does",
                           self.domid, sys.exc_info()[1])
        phase.done()
        self._unleash()
        self._read_verdict()
        if self.report.verdict.kind == OK:
            self.report.outcome = AT_TARGET
        elif self.report.verdict.kind == ERR:
            self.log.error("fastmig: domain %s: the target failed after the "
                           "source copy was destroyed: the guest is lost "
                           "(stock 3.1 would have lost it too)", self.domid)
            self.report.outcome = LOST
        else:
            self.report.outcome = UNKNOWN

    def _recover(self, reason):
        """After an unexpected error inside ``run``: never two copies."""
        if self.report.outcome is not None:
            return
        if self.resuming:
            # The target failed and the connection is gone: stock's order
            # would destroy a guest that can still come back.
            self.report.outcome = SUSPENDED
            try:
                if self.env.platform.domain_running(self.domid):
                    self.report.outcome = RESUMED
            except Exception:
                pass
            return
        if self.unleashed:
            if not self.destroyed:
                self._destroy()
            self.report.outcome = UNKNOWN
            return
        if self.destroyed:
            self.report.outcome = LOST
            return
        try:
            self._stock_order(reason)
        except Exception:
            self.log.exception("fastmig: domain %s: the stock-order fallback "
                               "failed", self.domid)
            if self.report.outcome is None:
                self.report.outcome = UNKNOWN

    def _is_hvm(self):
        try:
            return bool(self.dominfo.info.is_hvm())
        except Exception:
            # Unknown: keep the devices until the image is out.
            return True

    def _remaining(self):
        if self.deadline is None:
            return self.env.options.drain_timeout
        return self.deadline.remaining()

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
        self.unleashed = True
        self.report.unleashed_at = monotonic()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except socket.error:
            self.log.error("fastmig: domain %s: half-closing the relocation "
                           "connection failed: %s", self.domid,
                           sys.exc_info()[1])
        phase.done()

    def _read_verdict(self):
        """Never raises: the target is already released, and an exception
        reaching save's failure path would resume the source copy next to
        a running target copy."""
        phase = _Phase(self.report, "verdict")
        try:
            self.report.verdict = read_verdict(
                self.sock, self.env.options.verdict_timeout, self._early)
        except Exception:
            self.log.exception("fastmig: domain %s: reading the verdict "
                               "failed", self.domid)
            self.report.verdict = Verdict(
                UNKNOWN_VERDICT, self._early, "reading the verdict failed: %s"
                % (sys.exc_info()[1],))
        phase.done()

    def _destroy(self):
        phase = _Phase(self.report, "destroy")
        self.destroyed = True
        try:
            self.dominfo.destroyDomain()
        except Exception:
            self.log.exception("fastmig: domain %s: destroying the source "
                               "copy failed", self.domid)
        phase.done()

    def _resume(self):
        """The target is not running the guest: bring the source copy back.

        If block devices were released, the domain is resumed on
        re-created devices, and only once every old block backend
        directory is gone (3.1's createDevice refuses a device whose
        backend still exists).  Whether it runs again is asked of the
        platform: xend's resumeDomain logs its failures and returns.
        """
        # From here the target has failed: whatever goes wrong next, the
        # source copy must never be destroyed (see _recover).
        self.resuming = True
        try:
            abort_connection(self.sock)
        except Exception:
            pass
        phase = _Phase(self.report, "resume")
        try:
            if self.released:
                busy = self._wait_for_old_backends()
                if busy:
                    self.report.outcome = SUSPENDED
                    self.log.error(
                        "fastmig: domain %s: the target failed (%s), but "
                        "the old block backends %s are still there, so the "
                        "devices cannot be re-created: the guest stays "
                        "suspended at the source; resume it once they are "
                        "gone", self.domid, self._failure_text(),
                        ", ".join(busy))
                    return
                self.dominfo.resumeDomain(devices_released=True)
            else:
                self.dominfo.resumeDomain()
            if self.env.platform.domain_running(self.domid):
                self.report.outcome = RESUMED
                self.log.warning("fastmig: domain %s: the migration failed "
                                 "(%s); the guest was resumed at the source",
                                 self.domid, self._failure_text())
            else:
                self.report.outcome = SUSPENDED
                why = "see resumeDomain's error above"
                if self.released and self._is_hvm():
                    why = "Xen 3.1 cannot resume an HVM guest whose " \
                        "devices were released"
                self.log.error("fastmig: domain %s: the migration failed "
                               "(%s) and the source copy could not be "
                               "resumed (%s): it is suspended at the "
                               "source and running nowhere",
                               self.domid, self._failure_text(), why)
        finally:
            phase.done()

    def _wait_for_old_backends(self):
        """Wait until every captured backend directory is gone; the busy.

        A shutdown-request backend gets the classic teardown that lets it
        go only once it wrote ``shutdown-done`` (or the wait ran out): a
        resume may come before its drain did (the target or xc_save failed
        right after the release), and tearing it down mid-drain is not the
        protocol's order.
        """
        devices = self.devices
        if devices is None:
            devices = self._dom0_block_backends()
        deadline = monotonic() + max(self._remaining(),
                                     self.env.options.resume_grace)
        protocol = []
        for device in devices:
            if device.protocol:
                protocol.append(device)
        if protocol:
            try:
                DrainWaiter(self.env.store, protocol,
                            max(0.0, deadline - monotonic())).wait()
            except Exception:
                self.log.warning("fastmig: domain %s: %s; tearing them down "
                                 "anyway", self.domid, sys.exc_info()[1])
        for device in protocol:
            try:
                tear_down_confirmed(self.env.store, device)
            except Exception:
                self.log.warning("fastmig: domain %s: tearing down %s "
                                 "failed: %s", self.domid, device.name(),
                                 sys.exc_info()[1])
        while True:
            try:
                DrainWaiter(self.env.store, devices,
                            max(0.0, deadline - monotonic()),
                            gone_only=True).wait()
                return []
            except DrainTimeout:
                return sys.exc_info()[1].busy
            except Exception:
                # A transient xenstore error (EAGAIN) must not strand a
                # guest that can come back: ask again until the deadline.
                left = deadline - monotonic()
                self.log.warning("fastmig: domain %s: waiting for the old "
                                 "block backends failed (%s)%s", self.domid,
                                 sys.exc_info()[1],
                                 (left > 0 and "; trying again") or "")
                if left <= 0:
                    return [device.name() for device in devices]
                time.sleep(min(RETRY_PAUSE, left))

    def _failure_text(self):
        if self.report.verdict is not None:
            return self.report.verdict.describe()
        return self.report.reason

    def _failure_message(self):
        outcome = self.report.outcome
        why = self._failure_text()
        if outcome == RESUMED:
            return "migration of domain %s failed (%s); it was resumed at " \
                "the source" % (self.domid, why)
        if outcome == SUSPENDED:
            return "migration of domain %s failed (%s) and it could not be " \
                "resumed: it is suspended at the source and running " \
                "nowhere" % (self.domid, why)
        if outcome == LOST:
            return "migration of domain %s failed after the source copy was " \
                "destroyed (%s): the guest is lost" % (self.domid, why)
        return "migration of domain %s: the outcome is unknown (%s); the " \
            "source copy was destroyed and the target may be running it: " \
            "check the target host" % (self.domid, why)

    def _log_summary(self):
        if self.report.outcome not in (AT_TARGET, RESUMED):
            self.log.error("%s", self.report.summary())
        elif self.report.path == FAST and self.report.outcome == AT_TARGET:
            self.log.info("%s", self.report.summary())
        else:
            self.log.warning("%s", self.report.summary())
