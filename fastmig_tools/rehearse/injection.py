"""How faults enter a run: the one fault injector of the rehearsal and the
property tests.

Every fault goes in through a public seam of what the source's xend
works with, never by patching the core's module globals:

* its xenstore connection: ``FaultyHandle`` wraps the low-level handle
  (the one ``xen.lowlevel.xs`` would give xend) and, once armed, makes a
  chosen request fail with an errno (through the embedded store's own
  ``fail_next``), resets the connection after some requests, or raises
  in the first request that matches a step of the handover (the capture
  lists dom0's backend tree, the release writes ``online`` or
  ``shutdown-request``, the drain watches the backends);
* its relocation socket: ``FaultySocket`` raises once the target has
  been released (what reading the verdict does next);
* the domain object (the world's own model of ``XendDomainInfo``):
  ``destroyDomain`` raising after the hypercall, ``_createDevices``
  raising on a resume.

``arm_store_fault`` and ``source_faults`` apply the catalogue's faults
(``catalogue.FAULTS``) to a rehearsal run with these.
"""
from __future__ import annotations

import contextlib
import re
import socket
import time

from fastmig_tools.rehearse.catalogue import FAULTS, FaultError

__all__ = ["FaultyHandle", "FaultySocket", "InjectedSourceFault",
           "step_matcher", "break_destroy", "break_resume",
           "arm_store_fault", "source_faults"]

# Requests that reach xenstored (the rest of a handle's attributes are
# local: fileno, read_watch, close ...).
_REQUESTS = ("read", "write", "ls", "rm", "mkdir", "watch", "unwatch",
             "transaction_start", "transaction_end", "get_permissions",
             "set_permissions", "get_domain_path")


class InjectedSourceFault(RuntimeError):
    """The exception a ``source-*`` fault raises inside the handover."""


def _request_path(op, args):
    if op in ("watch", "unwatch"):
        return args[0] if args else None
    if op in ("transaction_start", "transaction_end", "get_domain_path"):
        return None
    return args[1] if len(args) > 1 else None


class FaultyHandle:
    """A low-level xenstore handle that passes every request on and, once
    ``arm()``-ed, injects what it was told to (one fault per handle).

    ``fired``/``fired_at`` say whether and when the fault struck;
    ``failed_at`` when requests through this handle failed after it was
    armed; ``dead`` whether it reset the connection.
    """

    def __init__(self, handle, store=None):
        self._handle = handle
        self._store = store
        self._plan = None
        self._seen: dict = {}
        self._total = 0
        self.armed = False
        self.fired = False
        self.fired_at: float | None = None
        self.failed_at: list = []
        self.dead = False

    # -- what to inject ---------------------------------------------------

    def fail_at(self, op, err, at=0, count=1):
        """The ``at``-th request ``op`` (``commit`` for a committing
        ``transaction_end``) after arming fails with ``err``, ``count``
        times in a row (the embedded store fails the path it names)."""
        self._plan = ("fail", op, err, at, count)

    def reset_after(self, count, everyone=False):
        """The connection dies after ``count`` more requests (every
        connection of the store, the backends' too, if ``everyone``)."""
        self._plan = ("reset", count, everyone)

    def raise_at(self, matches, exc):
        """The first request for which ``matches(op, path)`` is true
        raises ``exc`` instead of reaching the store."""
        self._plan = ("raise", matches, exc)

    def arm(self):
        self.armed = True

    def disarm(self):
        """Nothing more is injected (a run's teardown is not under test)."""
        self.armed = False

    # -- the handle -------------------------------------------------------

    def __getattr__(self, name):
        attr = getattr(self._handle, name)
        if name not in _REQUESTS:
            return attr

        def call(*args, **kwargs):
            lock = getattr(self._store, "_lock", None)
            # Arm-then-ask is one step under the store's lock: no other
            # connection can take a fault meant for this one.
            if lock is not None:
                lock.acquire()
            try:
                self._before(name, args, kwargs)
                try:
                    return attr(*args, **kwargs)
                except Exception:
                    if self.armed:
                        self.failed_at.append(time.monotonic())
                    raise
            finally:
                if lock is not None:
                    lock.release()
        return call

    def _fire(self):
        self.fired = True
        self.fired_at = time.monotonic()

    def _before(self, name, args, kwargs):
        plan = self._plan
        if plan is None or self.fired or not self.armed:
            return
        op = name
        if name == "transaction_end":
            abort = kwargs.get("abort", args[1] if len(args) > 1 else False)
            op = "transaction_end" if abort else "commit"
        if plan[0] == "raise":
            _kind, matches, exc = plan
            if matches(op, _request_path(name, args)):
                self._fire()
                raise exc
            return
        self._total += 1
        if plan[0] == "reset":
            _kind, count, everyone = plan
            if self._total > count:
                self._fire()
                self.dead = True
                if everyone:
                    self._store.reset_connections()
                else:
                    self._handle._die()
            return
        _kind, want, err, at, count = plan
        if op != want:
            return
        seen = self._seen.get(op, 0)
        self._seen[op] = seen + 1
        if seen >= at:
            self._fire()
            self._store.fail_next(op, err, count,
                                  path=_request_path(name, args))


class FaultySocket:
    """The relocation socket, raising ``exc`` from ``recv`` once the
    source has shut down its sending side (the target's release): the
    handover is then reading the verdict."""

    def __init__(self, sock, exc):
        self._sock = sock
        self._exc = exc
        self._released = False

    def shutdown(self, how):
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self._released = True
        return self._sock.shutdown(how)

    def recv(self, *args):
        if self._released:
            raise self._exc
        return self._sock.recv(*args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


_BACKEND = re.compile(r"^/local/domain/\d+/backend/(vbd|tap)/%s(/.*)?$")


def step_matcher(step, domid):
    """``matches(op, path)`` for the first request of a handover step on
    domain ``domid``'s block backends (see the module's docstring)."""
    backend = re.compile(_BACKEND.pattern % domid)

    def capture(op, path):
        return op == "ls" and path is not None and backend.match(path) \
            is not None

    def release(op, path):
        return op == "write" and path is not None and \
            backend.match(path) is not None and \
            path.rsplit("/", 1)[-1] in ("online", "shutdown-request")

    def drain(op, path):
        return op == "watch" and path is not None and \
            backend.match(path) is not None
    return {"capture": capture, "release": release, "drain": drain}[step]


def break_destroy(dominfo, exc):
    """``destroyDomain`` raises ``exc`` after doing its work (cleanupDomain
    failing after the hypercall)."""
    original = dominfo.destroyDomain

    def destroy():
        original()
        raise exc
    dominfo.destroyDomain = destroy


def break_resume(dominfo, exc):
    """Re-creating the devices on a resume raises ``exc``."""
    def create(*_args, **_kwargs):
        raise exc
    dominfo._createDevices = create


# ---------------------------------------------------------------------------
# the catalogue's faults in a rehearsal run
# ---------------------------------------------------------------------------

def arm_store_fault(scenario, host_store, xend_handle) -> None:
    """Called once the image is sent: inject the scenario's xenstore fault.

    Errors go to whoever asks next (the source's xend first, as it is the
    one working then; a backend may take one too, as on a real host); a
    reset hits xend's connection (``xend_handle``, a ``FaultyHandle``).
    """
    spec = FAULTS.get(scenario.fault or "none")
    if spec is None or spec.store is None:
        return
    store = host_store.embedded
    if store is None:
        raise FaultError("xenstore faults need the embedded xenstore")
    op, err = spec.store
    count = int(scenario.fault_when or 0)
    if op != "reset":
        store.fail_next(op, err, max(count, 1))
        return
    xend_handle.reset_after(count)
    xend_handle.arm()
    if count <= 0:
        # The very next request dies: do not wait for one.
        lock = store._lock
        with lock:
            xend_handle.dead = True
            xend_handle._fire()
            xend_handle._handle._die()


@contextlib.contextmanager
def source_faults(scenario, dominfo, xend_handle, sockets):
    """For the duration of the run, make one step of the handover fail:
    through xend's xenstore connection (``xend_handle``), its relocation
    socket (``sockets``: a list the run's socket wrapper hook reads) or
    the domain object."""
    spec = FAULTS.get(scenario.fault or "none")
    step = spec.source if spec is not None else None
    if step is None:
        yield
        return
    exc = InjectedSourceFault("injected: %s failed" % step)
    if step in ("capture", "release", "drain"):
        xend_handle.raise_at(step_matcher(step, dominfo.getDomid()), exc)
        xend_handle.arm()
    elif step == "verdict":
        sockets.append(lambda sock: FaultySocket(sock, exc))
    elif step == "destroy":
        break_destroy(dominfo, InjectedSourceFault(
            "injected: cleanupDomain failed"))
    elif step == "resume":
        break_resume(dominfo, exc)
    yield
