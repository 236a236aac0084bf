"""Block backends as a Xen 3.1 dom0 runs them: blkback/blktap + udev + hotplug.

Each actor stands for one xenbus backend device of one guest disk and does,
through xenstore alone, what the 3.1 kernel driver and the udev hotplug
scripts do around it (read ``linux-2.6-xen-sparse/drivers/xen/blkback``,
``drivers/xen/xenbus`` and ``tools/examples/xen-hotplug-cleanup`` for the
real thing):

* it watches the *frontend's* ``state`` (and the existence of its own
  backend directory), never reacts to its own backend ``state`` being
  written by a toolstack;
* frontend Closing: drain, then backend ``state`` = 5 (for ``tap`` the
  3.1 driver stops its thread without draining there);
* frontend Closed: backend ``state`` = 6 at once, *then*, when ``online``
  is not 1, unregister;
* frontend gone (state reads as Unknown): unregister;
* unregister = drain every request issued, then udev's ``remove``: the
  hotplug cleanup removes the frontend directory, the backend directory
  and ``error/<backend>``;
* backend directory removed by someone else: unregister (the drain still
  happens in the kernel) but only ``error/<backend>`` is left to clean.

The guest's in-flight requests are ``InflightRequest`` objects that
complete at ``suspend_time + delay`` (monotonic), whatever the toolstack
does; a drain only waits for them.  Every actor owns one worker thread; its
watch callbacks only flag work and never block the watcher thread.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import re
import threading
import time
from typing import Callable, Iterable

__all__ = [
    "XENBUS_STATE",
    "InflightRequest",
    "Xenwatch",
    "ClassicBlkback",
    "ShutdownRequestBlkback",
    "HungBlkback",
    "HungShutdownRequestBlkback",
    "ClassicNetback",
    "advertise_shutdown_request",
    "backend_paths_of",
    "start_backends",
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


@dataclasses.dataclass(eq=False)
class InflightRequest:
    """One guest request that the backend has dispatched and not finished.

    It completes ``delay`` seconds after the guest was suspended (the
    actor's ``suspend_time``), never earlier, whatever the toolstack does.
    ``completed_at`` is the monotonic time it completed (None until then).
    """

    sector: int
    data: bytes = b""
    delay: float = 0.0
    completed_at: float | None = None

    @property
    def block(self) -> int:
        return self.sector

    def due(self, suspend_time: float | None) -> float | None:
        if suspend_time is None:
            return None
        return suspend_time + self.delay


def advertise_shutdown_request(store, backend_domid: int = 0) -> str:
    """Write ``/local/domain/<backend>/control/feature-shutdown-request`` = 1.

    That is how a backend domain says its blkback speaks the
    shutdown-request / shutdown-done protocol.  Returns the key's path.
    """
    path = "/local/domain/%d/control" % backend_domid
    store.xstransact.Write(path, "feature-shutdown-request", "1")
    return path + "/feature-shutdown-request"


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


class ClassicBlkback:
    """Stock Xen 3.1 blkback (or blktap1) + udev + xen-hotplug-cleanup.

    ``store``: an object with ``.xstransact`` / ``.xswatch`` (xend's API),
    preferably a connection of its own.  ``backend``: the absolute backend
    path ``/local/domain/<b>/backend/<vbd|tap>/<domid>/<devid>``; its
    ``frontend`` key must exist.

    Knobs: ``requests`` (in flight from the start), ``suspend_time``,
    ``on_complete(request, t_complete)`` (called on the worker thread when
    a request completes, before any drain can finish),
    ``remove_before_drain`` (a buggy kernel: the hotplug cleanup runs
    before the drain), ``hotplug_delay`` (seconds between the drain and
    udev's cleanup), ``xenwatch`` (a ``Xenwatch`` shared by the backends
    of one dom0: their callbacks and drains then run one at a time, as on
    the real kernel's single xenwatch thread).

    A request completes at ``suspend_time + delay`` and not before the
    suspend time is known (``set_suspend_time``): a drain started earlier
    simply waits.  Teardown never hurries a request.

    Never removes the backend directory before every request issued has
    completed, unless ``remove_before_drain`` asks for that bug.  Call
    ``start()`` to run it and ``stop()`` to end it.
    """

    # None: as the class's 3.1 driver does (blkback drains on a frontend
    # Closing; blktap only stops its thread there and drains on remove).
    drains_on_closing: bool | None = None

    def __init__(self, store, backend: str, *,
                 requests: Iterable[InflightRequest] = (),
                 suspend_time: float | None = None,
                 on_complete: Callable[[InflightRequest, float], object] | None = None,
                 remove_before_drain: bool = False,
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
        if self.drains_on_closing is None:
            self.drains_on_closing = self.devclass != "tap"
        self.frontend: str | None = None
        self.name = name or "%s-%d-%s" % (self.devclass, self.domid, self.devid)
        self.on_complete = on_complete
        self.remove_before_drain = remove_before_drain
        self.hotplug_delay = hotplug_delay
        self.poll_interval = poll_interval
        self.clock = clock
        self.xenwatch = xenwatch

        self._cond = threading.Condition()
        self._requests: list[InflightRequest] = list(requests)
        self._suspend_time = suspend_time
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

    def start(self, start_timeout: float = 10.0) -> "ClassicBlkback":
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
            target=self._run, name="blkback-%s" % self.name, daemon=True)
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
        drain is abandoned, requests not yet completed never complete.
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

    def issue(self, request: InflightRequest) -> InflightRequest:
        """Dispatch one more request (before the teardown began)."""
        with self._cond:
            if self.unregistered or self._draining:
                raise RuntimeError("%s: ring already disconnected" % self.name)
            self._requests.append(request)
            self._cond.notify_all()
        return request

    def set_suspend_time(self, t: float) -> None:
        """The monotonic time the guest was suspended: requests are due at
        ``t + delay``."""
        with self._cond:
            self._suspend_time = t
            self._cond.notify_all()

    @property
    def suspend_time(self) -> float | None:
        return self._suspend_time

    @property
    def requests(self) -> list[InflightRequest]:
        with self._cond:
            return list(self._requests)

    def pending(self) -> int:
        """How many issued requests have not completed."""
        with self._cond:
            return sum(1 for r in self._requests if r.completed_at is None)

    def last_completion(self) -> float | None:
        """When the last in-flight request completed; None while any is
        pending (or when there were none)."""
        with self._cond:
            if not self._requests or any(
                    r.completed_at is None for r in self._requests):
                return None
            return max(r.completed_at for r in self._requests)

    def wait_for(self, predicate: Callable[["ClassicBlkback"], bool],
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
        with self._cond:
            if self._stopping:
                return False
            self._fe_dirty = True
            self.frontend_events += 1
            self._cond.notify_all()
        return True

    def _on_backend_watch(self, _path, *_args):
        with self._cond:
            if self._stopping:
                return False
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

    def _due_locked(self, now: float) -> list[InflightRequest]:
        due = []
        for request in self._requests:
            when = request.due(self._suspend_time)
            if request.completed_at is None and when is not None and when <= now:
                due.append(request)
        due.sort(key=lambda r: r.due(self._suspend_time))
        return due

    def _wait_time_locked(self, now: float) -> float:
        wait = _IDLE_WAIT
        for request in self._requests:
            when = request.due(self._suspend_time)
            if request.completed_at is None and when is not None:
                wait = min(wait, when - now)
        if self._cleanup_due is not None:
            wait = min(wait, self._cleanup_due - now)
        if self.store.xswatch is None:
            wait = min(wait, self.poll_interval)
        return max(wait, 0.0)

    def _drain_done_locked(self) -> bool:
        return all(r.completed_at is not None for r in self._requests)

    def _complete(self, due: list[InflightRequest]) -> None:
        for request in due:
            t = self.clock()
            with self._cond:
                request.completed_at = t
            self._event("completed sector %d" % request.sector)
            if self.on_complete is not None:
                self.on_complete(request, t)

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
            if self.drains_on_closing:
                self._begin_drain(lambda: self._switch_state(_CLOSING))
            else:
                self._switch_state(_CLOSING)
        elif state == _CLOSED:
            self._switch_state(_CLOSED)
            if self._online():
                return
            self._unregister("frontend closed, offline")
        elif state == _UNKNOWN:
            self._unregister("frontend gone")

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
        if self.remove_before_drain:
            self._hotplug_cleanup()
            self._begin_drain(lambda: None)
        else:
            # blkback_remove drains before the kernel emits udev's remove.
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


class ShutdownRequestBlkback(ClassicBlkback):
    """Classic blkback that also speaks XenServer's shutdown-request.

    ``<backend>/shutdown-request`` = ``force`` or ``normal``: drain, then
    write ``<backend>/shutdown-done`` (value ``shutdown_done_value``).
    Never writes ``shutdown-done`` before every issued request completed,
    and never recreates a backend directory that is gone.  Its domain
    should advertise the protocol (``advertise_shutdown_request``).
    """

    shutdown_done_value = ""

    def __init__(self, store, backend: str, **kwargs):
        super().__init__(store, backend, **kwargs)
        self.shutdown_requested: str | None = None
        self.shutdown_requested_at: float | None = None
        self.shutdown_done_at: float | None = None

    def _backend_changed(self) -> None:
        if self.shutdown_requested is not None or self.unregistered:
            return
        request = self.store.xstransact.Read(self.backend, "shutdown-request")
        if request not in ("force", "normal"):
            return
        self.shutdown_requested = request
        self.shutdown_requested_at = self.clock()
        self._event("shutdown-request %s" % request)
        self._begin_drain(self._write_shutdown_done)

    def _write_shutdown_done(self) -> None:
        xst = self.store.xstransact
        if xst.Read(self.backend) is None:
            return
        t = self.clock()  # before the write: nobody sees it earlier
        xst.Write(self.backend, "shutdown-done", self.shutdown_done_value)
        self.shutdown_done_at = t
        self._event("shutdown-done written")

    def wait_shutdown_done(self, timeout: float) -> bool:
        return self.wait_for(lambda a: a.shutdown_done_at is not None, timeout)


class HungBlkback(ClassicBlkback):
    """A backend that accepts every teardown request but never drains.

    Requests still complete on time; the drain itself never finishes, so
    the backend directory stays and ``shutdown-done`` is never written,
    until ``stop()``.
    """

    def _drain_done_locked(self) -> bool:
        return False


class HungShutdownRequestBlkback(ShutdownRequestBlkback, HungBlkback):
    """Advertises shutdown-request, then never answers it."""


class ClassicNetback(ClassicBlkback):
    """3.1 netback + vif hotplug, reduced to its teardown: no requests.

    Enough for ``testvifsComplete`` to see vif backends go away.
    """

    drains_on_closing = False



def backend_paths_of(layout, classes: Iterable[str] = ("vbd", "tap")) -> list[str]:
    """Backend paths of a ``layout.DomainLayout``'s devices of ``classes``."""
    classes = tuple(classes)
    return [d.backend for d in layout.devices if d.devclass in classes]


_NEW = object()


def start_backends(make_store: Callable[[], object], layout, *,
                   factory=ClassicBlkback,
                   classes: Iterable[str] = ("vbd", "tap"),
                   xenwatch=_NEW,
                   **kwargs) -> list[ClassicBlkback]:
    """Start one actor per device of ``layout`` (each on its own store from
    ``make_store()``), all sharing one new ``Xenwatch`` as in a real dom0
    unless ``xenwatch`` is given (None: independent actors).  On failure
    every actor already started is stopped."""
    if xenwatch is _NEW:
        xenwatch = Xenwatch()
    actors: list[ClassicBlkback] = []
    try:
        for backend in backend_paths_of(layout, classes):
            actors.append(factory(make_store(), backend, xenwatch=xenwatch,
                                  **kwargs).start())
    except BaseException:
        for actor in actors:
            actor.stop()
        raise
    return actors
