"""Block backends as a Xen 3.1 dom0 runs them: blkback/blktap + udev + hotplug.

Each actor stands for one xenbus backend device of one guest disk
(``xenbus_backend.XenbusBackend``: watches, frontend states, unregister,
udev's cleanup) and adds what the 3.1 block driver does around the guest's
I/O (read ``linux-2.6-xen-sparse/drivers/xen/blkback`` for the real thing):

* frontend Closing: drain, then backend ``state`` = 5 (for ``tap`` the
  3.1 driver stops its thread without draining there);
* unregister = drain every request issued, then udev's ``remove`` (the
  hotplug cleanup);
* backend directory removed by someone else: unregister, and the drain
  still happens in the kernel.

The guest's in-flight requests are ``InflightRequest`` objects that
complete at ``suspend_time + delay`` (monotonic), whatever the toolstack
does; a drain only waits for them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from fastmig_tools.models.xenbus_backend import (
    XENBUS_STATE,
    XenbusBackend,
    Xenwatch,
)

__all__ = [
    "InflightRequest",
    "ClassicBlkback",
    "ShutdownRequestBlkback",
    "HungBlkback",
    "HungShutdownRequestBlkback",
    "advertise_shutdown_request",
    "backend_paths_of",
    "start_backends",
]

_CLOSING = XENBUS_STATE["Closing"]

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


class ClassicBlkback(XenbusBackend):
    """Stock Xen 3.1 blkback (or blktap1) + udev + xen-hotplug-cleanup.

    ``store``, ``backend`` (``/local/domain/<b>/backend/<vbd|tap>/...``),
    ``hotplug_delay`` (seconds between the drain and udev's cleanup) and
    ``xenwatch``: as ``XenbusBackend``.

    Knobs: ``requests`` (in flight from the start), ``suspend_time``,
    ``on_complete(request, t_complete)`` (called on the worker thread when
    a request completes, before any drain can finish),
    ``remove_before_drain`` (a buggy kernel: the hotplug cleanup runs
    before the drain).

    A request completes at ``suspend_time + delay`` and not before the
    suspend time is known (``set_suspend_time``): a drain started earlier
    simply waits.  Teardown never hurries a request.

    Never removes the backend directory before every request issued has
    completed, unless ``remove_before_drain`` asks for that bug.  Call
    ``start()`` to run it and ``stop()`` to end it.
    """

    driver = "blkback"
    # None: as the class's 3.1 driver does (blkback drains on a frontend
    # Closing; blktap only stops its thread there and drains on remove).
    drains_on_closing: bool | None = None

    def __init__(self, store, backend: str, *,
                 requests: Iterable[InflightRequest] = (),
                 suspend_time: float | None = None,
                 on_complete: Callable[[InflightRequest, float], object] | None = None,
                 remove_before_drain: bool = False,
                 **kwargs):
        super().__init__(store, backend, **kwargs)
        if self.drains_on_closing is None:
            self.drains_on_closing = self.devclass != "tap"
        self.on_complete = on_complete
        self.remove_before_drain = remove_before_drain
        self._requests: list[InflightRequest] = list(requests)
        self._suspend_time = suspend_time

    # ---- the guest's I/O --------------------------------------------------

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

    # ---- the worker's hooks: requests complete, drains wait for them -------

    def _due_locked(self, now: float) -> list[InflightRequest]:
        due = []
        for request in self._requests:
            when = request.due(self._suspend_time)
            if request.completed_at is None and when is not None and when <= now:
                due.append(request)
        due.sort(key=lambda r: r.due(self._suspend_time))
        return due

    def _wait_time_locked(self, now: float) -> float:
        wait = super()._wait_time_locked(now)
        for request in self._requests:
            when = request.due(self._suspend_time)
            if request.completed_at is None and when is not None:
                wait = min(wait, when - now)
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

    # ---- what the block driver does on teardown ---------------------------

    def _frontend_closing(self) -> None:
        if self.drains_on_closing:
            self._begin_drain(lambda: self._switch_state(_CLOSING))
        else:
            self._switch_state(_CLOSING)

    def _device_remove(self) -> None:
        if self.remove_before_drain:
            self._hotplug_cleanup()
            self._begin_drain(lambda: None)
        else:
            # blkback_remove drains before the kernel emits udev's remove.
            self._begin_drain(self._schedule_cleanup)


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


def backend_paths_of(layout, classes: Iterable[str] = ("vbd", "tap")) -> list[str]:
    """Backend paths of a ``layout.DomainLayout``'s devices of ``classes``."""
    classes = tuple(classes)
    return [d.backend for d in layout.devices if d.devclass in classes]


_NEW = object()


def start_backends(make_store: Callable[[], object], layout, *,
                   factory=ClassicBlkback,
                   classes: Iterable[str] = ("vbd", "tap"),
                   xenwatch=_NEW,
                   **kwargs) -> list[XenbusBackend]:
    """Start one actor per device of ``layout`` (each on its own store from
    ``make_store()``), all sharing one new ``Xenwatch`` as in a real dom0
    unless ``xenwatch`` is given (None: independent actors).  On failure
    every actor already started is stopped."""
    if xenwatch is _NEW:
        xenwatch = Xenwatch()
    actors: list[XenbusBackend] = []
    try:
        for backend in backend_paths_of(layout, classes):
            actors.append(factory(make_store(), backend, xenwatch=xenwatch,
                                  **kwargs).start())
    except BaseException:
        for actor in actors:
            actor.stop()
        raise
    return actors
