"""Waiting until block backends have drained: ``testDeviceComplete(io_done=True)``.

A backend has drained when it positively says so: ``shutdown-done`` for a
backend speaking the shutdown-request protocol, or its directory gone for a
classic 3.1 blkback (udev's hotplug cleanup removes it only after the
kernel's unregister has waited for every in-flight request).  A backend
``state`` of Closed is never taken as drained: blkback writes it before it
drains.

The wait is event driven.  One xenstore watch per backend pokes a pipe; the
waiting thread sleeps in ``select`` on that pipe until the deadline.  A
pipe, not ``threading.Event``: Python 2's ``Event.wait(timeout)`` polls
with sleeps of up to 50 ms, which would put that much delay on every
migration's blackout.
"""

import errno
import fcntl
import logging
import os
import sys
import threading

from xend_fastmig import registry
from xend_fastmig.blockdevs import BLOCK_CLASSES, BlockDevice, \
     capture_block_devices
from xend_fastmig.clock import Deadline, now
from xend_fastmig.compat import select_readable
from xend_fastmig.errors import DrainTimeout
from xend_fastmig.store import backend_root

__all__ = ["DrainWaiter", "wait_for_drain", "MIGRATE_TIMEOUT",
           "BACKEND_GONE", "SHUTDOWN_DONE", "dom0_block_backends"]

log = logging.getLogger("xend")

# Stock xend's limit on waiting for block backends during a migration.
MIGRATE_TIMEOUT = 30.0

BACKEND_GONE = "backend-gone"
SHUTDOWN_DONE = "shutdown-done"

# Used only where watches cannot be had.
POLL_INTERVAL = 0.02
# Even with watches, look again this often: inside xend all watch
# callbacks share one thread, and a slow callback of someone else's must
# not hold our wait hostage until the deadline.
RECHECK_INTERVAL = 1.0


class _Wakeup:
    """A pipe that watch callbacks poke and the waiter sleeps on.

    A callback may run after the waiter has finished (events already queued
    are still delivered), so every poke first checks, under the lock,
    whether the pipe is still open: a closed descriptor's number may by then
    belong to someone else.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.closed = False
        self.changed = set()

    def poke(self, _path, key=None):
        """Watch callback: never blocks; returns False once closed.

        ``key`` (the watch's extra argument) is remembered so the waiter
        re-reads only what changed.
        """
        self.lock.acquire()
        try:
            if self.closed:
                return False
            self.changed.add(key)
            try:
                os.write(self.write_fd, "x".encode("ascii"))
            except OSError:
                # A full pipe already holds a wake-up for the waiter.
                if sys.exc_info()[1].errno != errno.EAGAIN:
                    raise
            return True
        finally:
            self.lock.release()

    def wait(self, timeout):
        """Sleep until poked or ``timeout`` seconds passed.

        Returns the keys poked since the last call (empty on a timeout).
        """
        if select_readable(self.read_fd, timeout):
            try:
                while os.read(self.read_fd, 4096):
                    pass
            except OSError:
                if sys.exc_info()[1].errno != errno.EAGAIN:
                    raise
        self.lock.acquire()
        try:
            changed = self.changed
            self.changed = set()
        finally:
            self.lock.release()
        return changed

    def close(self):
        self.lock.acquire()
        try:
            self.closed = True
            os.close(self.read_fd)
            os.close(self.write_fd)
        finally:
            self.lock.release()


class DrainWaiter:
    """Waits until every given block backend has confirmed its drain.

    ``wait()`` returns a list of ``(device name, how confirmed, seconds)``
    in the order the confirmations arrived, or raises ``DrainTimeout``
    naming the devices still busy.  It never writes to the store and never
    waits past its deadline (plus one store round trip).
    """

    def __init__(self, store, devices, timeout, gone_only=False,
                 clock=None):
        self.store = store
        self.devices = list(devices)
        self.timeout = timeout
        # A resume must see every old backend directory gone: 3.1's
        # createDevice refuses a device whose backend still exists.
        self.gone_only = gone_only
        # The raw clock, for tests that simulate its wrap (see clock.py).
        self.clock = clock

    def confirmation(self, device):
        """How ``device`` has confirmed its drain, or None if it has not."""
        if device.protocol and not self.gone_only:
            if self.store.read(device.backend + "/shutdown-done") \
                    is not None:
                return SHUTDOWN_DONE
        if self.store.read(device.backend) is None:
            return BACKEND_GONE
        return None

    def wait(self):
        deadline = Deadline(self.timeout, self.clock)
        # For the log only: a jump of the wall clock mislabels one line.
        started = now()
        pending = list(self.devices)
        confirmed = []
        # Look once before watching: with the early release the backends
        # have usually drained while the last round was sent, and a watch
        # costs two store round trips and a pass through xend's watch
        # thread between the image's end and the target's go.
        pending = self._unconfirmed(pending, confirmed, started)
        if not pending:
            return confirmed
        wakeup = _Wakeup()
        watches = []
        try:
            recheck = self._watch(pending, wakeup, watches)
            # Looked at again after the watches are set: a drain between
            # the first look and the watch would otherwise wait for the
            # recheck.
            to_check = pending
            while True:
                still = self._unconfirmed(to_check, confirmed, started)
                pending = [d for d in pending
                           if d not in to_check or d in still]
                if not pending:
                    return confirmed
                if deadline.expired():
                    raise DrainTimeout([d.name() for d in pending],
                                       self.timeout)
                changed = wakeup.wait(deadline.sleep_for(recheck))
                if watches and changed:
                    # Only the backends whose watch fired can have changed.
                    to_check = [d for d in pending if d.backend in changed]
                else:
                    to_check = pending
        finally:
            for watch in watches:
                try:
                    watch.unwatch()
                except Exception:
                    # Already gone (its callback returned False): fine.
                    pass
            wakeup.close()

    def _unconfirmed(self, devices, confirmed, started):
        """The devices not yet confirmed; the others join ``confirmed``."""
        still = []
        for device in devices:
            how = self.confirmation(device)
            if how is None:
                still.append(device)
            else:
                confirmed.append((device.name(), how, now() - started))
        return still

    def _watch(self, devices, wakeup, watches):
        """Watch every backend; return how long to sleep between looks."""
        if self.store.xswatch is None:
            return POLL_INTERVAL
        try:
            for device in devices:
                watches.append(self.store.xswatch(device.backend,
                                                  wakeup.poke,
                                                  device.backend))
        except Exception:
            log.warning("fastmig: cannot watch block backends (%s); "
                        "polling every %d ms instead",
                        sys.exc_info()[1], int(POLL_INTERVAL * 1000))
            return POLL_INTERVAL
        return RECHECK_INTERVAL


def wait_for_drain(dominfo):
    """What ``XendDomainInfo.testDeviceComplete(io_done=True)`` runs.

    Waits until every block backend of the domain has confirmed its
    drain and returns the confirmations (see ``DrainWaiter.wait``); raises
    ``DrainTimeout`` naming the busy ones.  Within a handover it waits on
    the devices the handover captured, until the handover's drain
    deadline; otherwise on the devices found now, for the configured
    drain timeout.
    """
    handover = registry.lookup(dominfo)
    if handover is not None:
        return handover.wait_for_drain()
    from xend_fastmig.xendenv import xend_environment
    env = xend_environment()
    devices, problems = capture_block_devices(env.store, dominfo.getDomid(),
                                              dominfo.dompath)
    for problem in problems:
        log.warning("fastmig: %s", problem)
    return DrainWaiter(env.store, devices, env.options.drain_timeout).wait()


def dom0_block_backends(store, domid):
    """dom0's block backends of ``domid``, judged by the classic criterion.

    For the stock-order fallback when the devices could not be captured:
    every directory listed must go before the target is released.
    """
    if domid is None:
        log.warning("fastmig: no domid left to find block backends by; "
                    "nothing to wait for")
        return []
    devices = []
    for devclass in BLOCK_CLASSES:
        root = backend_root(0, devclass, domid)
        for devid in store.xstransact.List(root):
            devices.append(BlockDevice(devclass, devid,
                                       "%s/%s" % (root, devid), 0))
    return devices
