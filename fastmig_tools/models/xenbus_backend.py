"""The dom0 half of a xenbus device as a Xen 3.1 dom0 runs it, in xenstore.

``XenbusBackend`` is what every backend driver model shares: the xenbus
backend plumbing of a 3.1 kernel (``linux-2.6-xen-sparse/drivers/xen/xenbus``:
``xenbus_probe_backend.c``, ``xenbus_client.c``) and udev's hotplug cleanup
(``tools/examples/xen-hotplug-cleanup``).  Each actor stands for one backend
device and does, through xenstore alone:

* it watches the *frontend's* ``state`` (and the existence of its own
  backend directory), never reacts to its own backend ``state`` being
  written by a toolstack;
* frontend Closing: the driver's hook (``_frontend_closing``; here just
  backend ``state`` = 5);
* frontend Closed: backend ``state`` = 6 at once, *then*, when ``online``
  is not 1, unregister;
* frontend gone (state reads as Unknown): unregister;
* unregister = the driver's teardown (``_device_remove``: here wait for
  what the driver has in flight, then udev's ``remove``): the hotplug
  cleanup removes the frontend directory, the backend directory and
  ``error/<backend>``;
* backend directory removed by someone else: unregister (the teardown
  still happens in the kernel) but only ``error/<backend>`` is left to
  clean.

A driver with work in flight (blkback's requests) overrides the
``_due_locked`` / ``_complete`` / ``_drain_done_locked`` hooks; here the
"drain" that teardown waits for is over at once.  Every actor owns one
worker thread; its watch callbacks only flag work and never block the
watcher thread.  ``Xenwatch`` is the backend domain's one xenwatch
thread, shared by its actors.
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import time
from typing import Callable

__all__ = [
    "XENBUS_STATE",
    "Xenwatch",
    "XenbusBackend",
]

log = logging.getLogger(__name__)

XENBUS_STATE = {
    "Unknown": 0, "Initialising": 1, "InitWait": 2, "Initialised": 3,
    "Connected": 4, "Closing": 5, "Closed": 6,
}
_UNKNOWN = 0
_CONNECTED = 4
_CLOSING = 5
_CLOSED = 6

_BACKEND_RE = re.compile(
    r"^(/local/domain/(\d+))/backend/([^/]+)/(\d+)/([^/]+)$")

# Longest single sleep of a worker with nothing scheduled: stop() wakes it at
# once anyway, this only bounds every wait as the project's rules demand.
_IDLE_WAIT = 0.5
_JOIN_TIMEOUT = 10.0


class Xenwatch:
    """The backend domain's one ``xenwatch`` kernel thread, shared.

    In a 3.1 dom0 every xenbus watch callback runs on that one thread, and
    a device_unregister (or a frontend Closing) drains *on* it: while one
    backend drains, no other backend of the domain reacts to anything.
    Actors given the same ``Xenwatch`` behave so (in the order their
    events arrived); without one each actor stands alone.  Request
    completions and udev's cleanup never wait for it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._owner = None
        self._queue: collections.deque = collections.deque()

    @property
    def owner(self):
        """The actor whose callback (or drain) holds the thread, or None."""
        with self._lock:
            return self._owner

    def _try_acquire(self, actor) -> bool:
        with self._lock:
            if self._owner is actor:
                return True
            if self._owner is None and (not self._queue
                                        or self._queue[0] is actor):
                if self._queue:
                    self._queue.popleft()
                self._owner = actor
                return True
            if actor not in self._queue:
                self._queue.append(actor)
            return False

    def _blocked(self, actor) -> bool:
        with self._lock:
            return self._owner is not None and self._owner is not actor

    def _release(self, actor) -> None:
        with self._lock:
            if actor in self._queue:
                self._queue.remove(actor)
            if self._owner is not actor:
                return
            self._owner = None
            waiting = list(self._queue)
        for other in waiting:
            other._poke()


class XenbusBackend:
    """One dom0 backend device of a 3.1 xenbus driver + udev's cleanup.

    ``store``: an object with ``.xstransact`` / ``.xswatch`` (xend's API),
    preferably a connection of its own.  ``backend``: the absolute backend
    path ``/local/domain/<b>/backend/<cls>/<domid>/<devid>``; its
    ``frontend`` key must exist.

    Knobs: ``hotplug_delay`` (seconds between the driver's teardown and
    udev's cleanup), ``xenwatch`` (a ``Xenwatch`` shared by the backends
    of one dom0: their callbacks and drains then run one at a time, as on
    the real kernel's single xenwatch thread).

    Call ``start()`` to run it and ``stop()`` to end it.
    """

    # The kernel driver's name: its worker thread is "<driver>-<name>".
    driver = "xenbus"

    def __init__(self, store, backend: str, *,
                 hotplug_delay: float = 0.0,
                 poll_interval: float = 0.01,
                 clock: Callable[[], float] = time.monotonic,
                 name: str | None = None,
                 xenwatch: Xenwatch | None = None):
        match = _BACKEND_RE.match(backend)
        if match is None:
            raise ValueError("not a backend device path: %r" % backend)
        self.store = store
        self.backend = backend
        self.backend_home = match.group(1)
        self.backend_domid = int(match.group(2))
        self.devclass = match.group(3)
        self.domid = int(match.group(4))
        self.devid = match.group(5)
        # xen-hotplug-cleanup runs in the backend domain with
        # XENBUS_PATH=backend/<cls>/<domid>/<devid>, relative to its home.
        self.error_path = "%s/error/backend/%s/%d/%s" % (
            self.backend_home, self.devclass, self.domid, self.devid)
        self.frontend: str | None = None
        self.name = name or "%s-%d-%s" % (self.devclass, self.domid, self.devid)
        self.hotplug_delay = hotplug_delay
        self.poll_interval = poll_interval
        self.clock = clock
        self.xenwatch = xenwatch

        self._cond = threading.Condition()
        self._fe_dirty = False
        self._be_dirty = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._watches: list = []
        # The driver's cached own state (xenbus_device.state): a toolstack
        # writing backend/state does not change it.
        self._own_state = _CONNECTED

        # Teardown in progress: changed by the worker only.
        self._draining = False
        self._drain_started: float | None = None
        self._after_drain: list[Callable[[], None]] = []
        self._cleanup_due: float | None = None

        # What tests and the rehearsal read.
        self.unregistered = False
        self.unregistered_at: float | None = None
        self.unregister_reason: str | None = None
        self.drained_at: float | None = None
        self.drains: list[tuple[float, float]] = []
        self.closed_written_at: float | None = None
        self.closing_written_at: float | None = None
        # When udev's cleanup removed the backend directory (taken just
        # before the removal was issued); None if someone else removed it.
        self.removed_at: float | None = None
        self.backend_gone_at: float | None = None
        self.events: list[tuple[float, str]] = []
        # Backend-directory watch events received, and how many of them
        # the driver has finished handling (several may be handled at once).
        self.backend_events = 0
        self.backend_events_handled = 0
        self.frontend_events = 0
        self.frontend_events_handled = 0
        self._polled = False
        self.errors: list[BaseException] = []

    # ---- public face ------------------------------------------------------

    def start(self, start_timeout: float = 10.0) -> "XenbusBackend":
        """Read the frontend path, start the worker and the watches.

        Returns once the driver has looked at the store for the first time
        (both watches fired once and were handled), so every later change
        is seen as one; raises RuntimeError (and stops) otherwise.
        """
        if self._thread is not None:
            raise RuntimeError("%s already started" % self.name)
        frontend = self.store.xstransact.Read(self.backend, "frontend")
        if not frontend:
            raise ValueError("%s has no frontend key" % self.backend)
        self.frontend = frontend
        self._thread = threading.Thread(
            target=self._run, name="%s-%s" % (self.driver, self.name),
            daemon=True)
        self._thread.start()
        xswatch = self.store.xswatch
        if xswatch is not None:
            # As xenbus does: the other end's state node, and (the backend
            # bus watch) our own directory's existence.
            self._watches.append(
                xswatch(self.frontend + "/state", self._on_frontend_watch))
            self._watches.append(
                xswatch(self.backend, self._on_backend_watch))
        else:
            with self._cond:
                self._fe_dirty = self._be_dirty = True
                self._cond.notify_all()
        # Armed only once both watches' first events were handled: what the
        # caller does next is then seen as a change, in order.
        if not self.wait_for(lambda a: a._armed_locked(), start_timeout):
            self.stop()
            raise RuntimeError("%s: watches did not fire within %.1fs"
                               % (self.name, start_timeout))
        return self

    def _armed_locked(self) -> bool:
        # A teardown under way holds further events back: armed too.
        if self._stopping or self._draining or self.unregistered:
            return True
        if self.xenwatch is not None and self.xenwatch._blocked(self):
            return True
        if self.store.xswatch is None:
            return self._polled
        return (self.frontend_events >= 1 and self.backend_events >= 1
                and self.frontend_events_handled == self.frontend_events
                and self.backend_events_handled == self.backend_events)

    def stop(self) -> None:
        """Unwatch, stop the worker and join it.  Idempotent.

        Afterwards no thread and no watch of this actor is left; a hung
        drain is abandoned, work not yet finished (requests) never is.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.xenwatch is not None:
            self._release_xenwatch_after(self._thread)
        watches, self._watches = self._watches, []
        for watch in watches:
            try:
                watch.unwatch()
            except Exception:
                log.debug("%s: unwatch failed", self.name, exc_info=True)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError("%s: worker did not stop" % self.name)

    def __enter__(self):
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_for(self, predicate: Callable[["XenbusBackend"], bool],
                 timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds, at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, _IDLE_WAIT))
        return True

    def wait_removed(self, timeout: float) -> bool:
        return self.wait_for(lambda a: a.removed_at is not None, timeout)

    def wait_unregistered(self, timeout: float) -> bool:
        return self.wait_for(lambda a: a.unregistered, timeout)

    def wait_drained(self, timeout: float) -> bool:
        return self.wait_for(lambda a: a.drained_at is not None, timeout)

    def _poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _release_xenwatch_after(self, thread) -> None:
        # The worker may be about to take the xenwatch: release once it is
        # gone (or at once when it never ran).
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
        self.xenwatch._release(self)

    # ---- watch callbacks (watcher thread: flag and return) ----------------

    def _on_frontend_watch(self, _path, *_args):
        return self._flag("frontend")

    def _on_backend_watch(self, _path, *_args):
        return self._flag("backend")

    def _flag(self, side):
        """Mark ``side``'s tree as changed for the worker; False (unwatch)
        once stopping."""
        with self._cond:
            if self._stopping:
                return False
            if side == "frontend":
                self._fe_dirty = True
                self.frontend_events += 1
            else:
                self._be_dirty = True
                self.backend_events += 1
            self._cond.notify_all()
        return True

    # ---- worker -----------------------------------------------------------

    def _run(self) -> None:
        next_poll = self.clock()
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = self.clock()
                    if self.store.xswatch is None and now >= next_poll:
                        self._fe_dirty = self._be_dirty = True
                        next_poll = now + self.poll_interval
                    due = self._due_locked(now)
                    drained = self._draining and self._drain_done_locked()
                    cleanup = (self._cleanup_due is not None
                               and now >= self._cleanup_due)
                    events = (not self._draining and not self.unregistered
                              and (self._fe_dirty or self._be_dirty)
                              and (self.xenwatch is None
                                   or self.xenwatch._try_acquire(self)))
                    if due or drained or cleanup or events:
                        break
                    self._cond.wait(self._wait_time_locked(now))
                fe_dirty, be_dirty = self._fe_dirty, self._be_dirty
                be_seen = self.backend_events
                fe_seen = self.frontend_events
                # One step per pass, completions first; the flags are only
                # taken by the pass that handles them.
                if events and not (due or drained or cleanup):
                    self._fe_dirty = self._be_dirty = False
            try:
                if due:
                    self._complete(due)
                elif drained:
                    self._finish_drain()
                elif cleanup:
                    self._hotplug_cleanup()
                elif events:
                    try:
                        self._handle_events(fe_dirty, be_dirty)
                    finally:
                        with self._cond:
                            if be_dirty:
                                self.backend_events_handled = be_seen
                            if fe_dirty:
                                self.frontend_events_handled = fe_seen
                            self._polled = True
                            keep = self._draining
                        if not keep and self.xenwatch is not None:
                            self.xenwatch._release(self)
            except Exception as exc:
                # A store error must not kill the kernel model; record it
                # for the test and carry on with the next event.
                log.warning("%s: %s", self.name, exc, exc_info=True)
                self.errors.append(exc)
            with self._cond:
                self._cond.notify_all()

    # ---- hooks of a driver with work in flight ----------------------------

    def _due_locked(self, now: float) -> list:
        """Work that is due now, handed to ``_complete``: none here."""
        return []

    def _complete(self, due: list) -> None:
        """Finish the work ``_due_locked`` returned."""

    def _drain_done_locked(self) -> bool:
        """Whether the teardown's wait is over: nothing to wait for here."""
        return True

    def _wait_time_locked(self, now: float) -> float:
        wait = _IDLE_WAIT
        if self._cleanup_due is not None:
            wait = min(wait, self._cleanup_due - now)
        if self.store.xswatch is None:
            wait = min(wait, self.poll_interval)
        return max(wait, 0.0)

    def _event(self, what: str) -> None:
        self.events.append((self.clock(), what))

    # ---- what the kernel driver does --------------------------------------

    def _handle_events(self, fe_dirty: bool, be_dirty: bool) -> None:
        if be_dirty and self.store.xstransact.Read(self.backend) is None:
            # The backend bus saw our node vanish: device_unregister, but
            # the toolstack already deleted what hotplug would have.
            self.backend_gone_at = self.clock()
            self._event("backend directory removed by someone else")
            self._unregister("backend removed")
            return
        if be_dirty:
            self._backend_changed()
        if fe_dirty and self._draining and not self.unregistered:
            # The backend change just started a drain: the kernel's
            # xenwatch queues the frontend's event behind it, never drops
            # it (a frontend gone meanwhile must still unregister).
            with self._cond:
                self._fe_dirty = True
        elif fe_dirty and not self.unregistered:
            self._frontend_changed(self._frontend_state())

    def _backend_changed(self) -> None:
        """Hook for drivers reacting to their own backend keys."""

    def _frontend_state(self) -> int:
        value = self.store.xstransact.Read(self.frontend, "state")
        try:
            return int(value)
        except (TypeError, ValueError):
            return _UNKNOWN

    def _frontend_changed(self, state: int) -> None:
        self._event("frontend state %d" % state)
        if state == _CLOSING:
            self._frontend_closing()
        elif state == _CLOSED:
            self._switch_state(_CLOSED)
            if self._online():
                return
            self._unregister("frontend closed, offline")
        elif state == _UNKNOWN:
            self._unregister("frontend gone")

    def _frontend_closing(self) -> None:
        """The driver's frontend_changed for Closing."""
        self._switch_state(_CLOSING)

    def _online(self) -> bool:
        value = self.store.xstransact.Read(self.backend, "online")
        try:
            return int(value) != 0
        except (TypeError, ValueError):
            return False

    def _switch_state(self, state: int) -> None:
        """xenbus_switch_state: skip when cached, never resurrect the node."""
        if state == self._own_state:
            return
        if self.store.xstransact.Read(self.backend, "state") is None:
            return
        t = self.clock()  # before the write: nobody sees it earlier
        self.store.xstransact.Write(self.backend, "state", str(state))
        self._own_state = state
        if state == _CLOSED:
            self.closed_written_at = t
        elif state == _CLOSING:
            self.closing_written_at = t
        self._event("backend state %d written" % state)

    def _begin_drain(self, then: Callable[[], None]) -> None:
        self._after_drain.append(then)
        with self._cond:
            if self._draining:
                return
            self._draining = True
            self._drain_started = self.clock()
        self._event("drain started")

    def _finish_drain(self) -> None:
        t = self.clock()
        with self._cond:
            self._draining = False
            if self.drained_at is None:
                self.drained_at = t
            self.drains.append((self._drain_started, t))
            actions, self._after_drain = self._after_drain, []
        self._event("drained")
        try:
            for action in actions:
                action()
        finally:
            if self.xenwatch is not None:
                self.xenwatch._release(self)

    def _unregister(self, reason: str) -> None:
        if self.unregistered:
            return
        with self._cond:
            self.unregistered = True
            self.unregistered_at = self.clock()
            self.unregister_reason = reason
        self._event("device_unregister: %s" % reason)
        self._device_remove()

    def _device_remove(self) -> None:
        """The driver's remove: its teardown, then udev's ``remove``."""
        self._begin_drain(self._schedule_cleanup)

    def _schedule_cleanup(self) -> None:
        if self.hotplug_delay > 0:
            with self._cond:
                self._cleanup_due = self.clock() + self.hotplug_delay
        else:
            self._hotplug_cleanup()

    def _hotplug_cleanup(self) -> None:
        """udev remove → /etc/xen/scripts/xen-hotplug-cleanup."""
        with self._cond:
            self._cleanup_due = None
        xst = self.store.xstransact
        frontend = xst.Read(self.backend, "frontend")
        if frontend:
            xst.Remove(frontend)
        existed = xst.Read(self.backend) is not None
        # Stamped before the removal is issued: nobody can see the
        # directory gone before removed_at.
        t = self.clock()
        xst.Remove(self.backend)
        xst.Remove(self.error_path)
        if existed:
            self.removed_at = t
            self._event("hotplug cleanup removed the backend directory")
        else:
            self._event("hotplug cleanup: backend directory already gone")
