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
* what else happens on the source host: a bystander guest (a second
  domain with its own disks and blkback models) whose devices the
  migrating guest names in its own frontends' ``backend`` keys
  (``Bystander``); a second migration of the same domain object, started
  at the guest's suspend (``SecondMigration``); an ``xm block-detach``
  completing between the handover's capture and its release
  (``FaultyHandle.before`` on xend's connection, ``detach_and_wait``
  through another one).

``arm_store_fault`` and ``source_faults`` apply the catalogue's faults
(``catalogue.FAULTS``) to a rehearsal run with these.
"""
from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
import time

from fastmig_tools.rehearse.catalogue import FAULTS, FaultError

__all__ = ["FaultyHandle", "FaultySocket", "InjectedSourceFault",
           "step_matcher", "release_matcher", "break_destroy",
           "break_resume", "Bystander", "rewrite_backend_keys",
           "SecondMigration",
           "detach_and_wait", "Injected", "arm_store_fault",
           "source_faults"]

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


def _op(name, args, kwargs):
    """The request's name, ``commit`` for a committing transaction_end."""
    if name == "transaction_end":
        abort = kwargs.get("abort", args[1] if len(args) > 1 else False)
        return "transaction_end" if abort else "commit"
    return name


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
        self._hook = None
        self._hook_lock = threading.Lock()

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

    def before(self, matches, action):
        """The first request for which ``matches(op, path)`` is true first
        runs ``action(op, path)`` and then goes on to the store.  The
        action runs outside the store's lock, on the requesting thread: it
        may use other connections (and take its time: xend waits)."""
        self._hook = (matches, action)

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
            self._run_hook(name, args, kwargs)
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

    def _run_hook(self, name, args, kwargs):
        hook = self._hook
        if hook is None or not self.armed:
            return
        matches, action = hook
        with self._hook_lock:
            if self._hook is None or \
                    not matches(_op(name, args, kwargs),
                                _request_path(name, args)):
                return
            self._hook = None
            self._fire()
        action(_op(name, args, kwargs), _request_path(name, args))

    def _fire(self):
        self.fired = True
        self.fired_at = time.monotonic()

    def _before(self, name, args, kwargs):
        plan = self._plan
        if plan is None or self.fired or not self.armed:
            return
        op = _op(name, args, kwargs)
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


def release_matcher(domid):
    """``matches(op, path)`` for the release's first request on one of
    domain ``domid``'s block backends, after the capture: the second read
    of its ``frontend-id`` (the capture made the first; the release reads
    it again, in the transaction that writes only to a backend still
    there), or a write of its ``online`` or ``shutdown-request`` (a
    release that writes without looking).  Returns the backend's path as
    ``matches.backend`` once it matched."""
    backend = re.compile(_BACKEND.pattern % domid)
    writes = step_matcher("release", domid)
    seen = set()

    def matches(op, path):
        if writes(op, path):
            matches.backend = path.rsplit("/", 1)[0]
            return True
        if op != "read" or path is None or \
                not path.endswith("/frontend-id"):
            return False
        directory = path[:-len("/frontend-id")]
        if backend.match(directory) is None:
            return False
        if directory in seen:
            matches.backend = directory
            return True
        seen.add(directory)
        return False
    matches.backend = None
    return matches


def detach_and_wait(api, backend, timeout=5.0):
    """``xm block-detach`` of one device, through ``api`` (not xend's
    connection): ``online`` = 0 and the frontend removed, so its blkback
    unregisters, drains and udev's hotplug cleanup removes the backend
    directory; returns once the directory is gone (False if it was not
    within ``timeout``: a hung backend)."""
    xst = api.xstransact
    frontend = xst.Read(backend, "frontend")
    if xst.Read(backend) is None:
        return True
    xst.Write(backend, "online", "0")
    if frontend:
        xst.Remove(frontend)
    deadline = time.monotonic() + timeout
    while xst.Read(backend) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _tree(xst, path):
    """Every node at or below ``path`` with its value."""
    value = xst.Read(path)
    if value is None:
        return {}
    nodes = {path: value}
    for child in xst.List(path):
        nodes.update(_tree(xst, "%s/%s" % (path, child)))
    return nodes


_bystander_domids = itertools.count()


class Bystander:
    """Another guest on the source host: a domain with its own disks,
    each with a blkback model, that the migration must leave alone.

    ``start()`` writes it and starts its backends; ``touched()`` lists
    what changed in its backend and frontend directories since (removed,
    written) and which of its backends unregistered; ``stop()`` stops
    its backends and removes what is left of it.
    """

    def __init__(self, host_store, teardown=0.0, disks=2):
        self.host_store = host_store
        self.teardown = teardown
        # A domid no run takes (runs count up from 5).
        self.domid = 30000 + next(_bystander_domids) % 2000
        self.disks = disks
        self.layout = None
        self.actors = []
        # Its own connection (what the guests on the host write through).
        self.api = None
        self._before = {}

    @property
    def backends(self):
        return [d.backend for d in self.layout.block_devices]

    def _watched(self):
        return [p for d in self.layout.block_devices
                for p in (d.backend, d.frontend)]

    def start(self):
        from fastmig_tools.models.blkback import ClassicBlkback
        from fastmig_tools.models.layout import write_domain_layout
        self.api = self.host_store.api(thread_name="bystander")
        try:
            self.layout = write_domain_layout(
                self.api.store(), self.domid, "bystander%d" % self.domid,
                "bystander-%d" % self.domid,
                vbds=["phy:/dev/vg/bystander%d-%d" % (self.domid, i)
                      for i in range(self.disks)])
            for device in self.layout.block_devices:
                api = self.host_store.api(thread_name="blkback-watcher")
                actor = ClassicBlkback(api.store(), device.backend,
                                       hotplug_delay=self.teardown,
                                       name="bystander-%s-%d"
                                       % (device.devclass, device.devid))
                self.actors.append((actor, api))
                actor.start()
            xst = self.api.xstransact
            for path in self._watched():
                self._before.update(_tree(xst, path))
        except BaseException:
            self.stop()
            raise
        return self

    def touched(self) -> list:
        xst = self.api.xstransact
        after = {}
        for path in self._watched():
            after.update(_tree(xst, path))
        changes = []
        for path, value in sorted(self._before.items()):
            if path not in after:
                parent = path.rsplit("/", 1)[0]
                if parent not in self._before or parent in after:
                    changes.append("%s: removed" % path)
            elif after[path] != value:
                changes.append("%s: %r -> %r" % (path, value, after[path]))
        for path, value in sorted(after.items()):
            if path not in self._before:
                changes.append("%s: written %r" % (path, value))
        for actor, _api in self.actors:
            if actor.unregistered:
                changes.append("%s: unregistered (%s)"
                               % (actor.backend, actor.unregister_reason))
        return changes

    def stop(self):
        errors = []
        for actor, api in self.actors:
            try:
                actor.stop()
            except Exception as exc:
                errors.append(exc)
            finally:
                self.host_store.release(api)
        self.actors = []
        api, self.api = self.api, None
        if api is not None:
            try:
                xst = api.xstransact
                xst.Remove("/local/domain/%d" % self.domid)
                xst.Remove("/vm/bystander-%d" % self.domid)
                for devclass in ("vbd", "tap", "vif"):
                    xst.Remove("/local/domain/0/backend/%s/%d"
                               % (devclass, self.domid))
                    xst.Remove("/local/domain/0/error/backend/%s/%d"
                               % (devclass, self.domid))
            finally:
                self.host_store.release(api)
        if errors:
            raise errors[0]


def rewrite_backend_keys(api, dominfo, targets):
    """The guest, which owns its frontend directories, points each block
    frontend's ``backend`` key at the next of ``targets`` (cyclically)."""
    xst = api.xstransact
    for index, device in enumerate(dominfo.layout.block_devices):
        xst.Write(device.frontend, "backend",
                  targets[index % len(targets)])


class SecondMigration:
    """A second migration of the same domain object, on a thread of its
    own, started by ``start`` (a suspend listener): ``migrate(**kwargs)``
    runs it (the run's ``run_policy`` with ``wrap_socket`` and
    ``failures``).  ``join`` says how it ended: "refused: <error>",
    "failed: <error>", "returned" or "did not end"."""

    def __init__(self, migrate):
        self._migrate = migrate
        self._thread = None
        self._sockets = []
        self.outcome = None
        self.started_at = None

    def start(self, _t=None):
        if self._thread is not None:
            return
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="second-migrate")
        self._thread.start()

    def _wrap(self, sock):
        self._sockets.append(sock)
        return sock

    def _run(self):
        failures = []
        try:
            self._migrate(wrap_socket=self._wrap, failures=failures)
            if failures:
                self.outcome = "refused: %s" % failures[0]
            else:
                self.outcome = "returned"
        except Exception as exc:
            self.outcome = "failed: %s: %s" % (type(exc).__name__, exc)
        finally:
            # 3.1's domain_migrate leaves its socket to the garbage
            # collector when save raises: close it now.
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def join(self, timeout):
        if self._thread is None:
            return None
        self._thread.join(timeout)
        if self._thread.is_alive():
            return "did not end within %.0f s" % timeout
        return self.outcome


class Injected:
    """What ``source_faults`` saw: the bystander's devices touched, and
    what the second migration said (None: there was none)."""

    def __init__(self):
        self.bystanders_touched = []
        self.second_migration = None


def break_destroy(dominfo, exc):
    """``destroyDomain`` raises ``exc`` after doing its work (cleanupDomain
    failing after the hypercall)."""
    original = dominfo.destroyDomain

    def destroy():
        original()
        raise exc
    dominfo.destroyDomain = destroy


def break_release(dominfo, exc, meanwhile=None):
    """The forced ``_releaseDevices(force=True)`` raises ``exc`` after
    doing its work (``meanwhile()`` runs between the two)."""
    original = dominfo._releaseDevices

    def release(*args, **kwargs):
        result = original(*args, **kwargs)
        if kwargs.get("force") or (len(args) > 1 and args[1]):
            if meanwhile is not None:
                meanwhile()
            raise exc
        return result
    dominfo._releaseDevices = release


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
def source_faults(scenario, dominfo, xend_handle, sockets, host_store=None,
                  migrate_again=None, record=None):
    """For the duration of the run, make one step of the handover fail:
    through xend's xenstore connection (``xend_handle``), its relocation
    socket (``sockets``: a list the run's socket wrapper hook reads) or
    the domain object; or make something else happen on the source host
    (the spec's ``event``: through ``host_store``, a second migration
    through ``migrate_again(**kwargs)``), noted in ``record`` (an
    ``Injected``, also what it yields)."""
    if record is None:
        record = Injected()
    spec = FAULTS.get(scenario.fault or "none")
    if spec is not None and spec.event is not None:
        with _source_event(spec.event, scenario, dominfo, xend_handle,
                           host_store, migrate_again, record):
            yield record
        return
    step = spec.source if spec is not None else None
    if step is None:
        yield record
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
    yield record


@contextlib.contextmanager
def _source_event(event, scenario, dominfo, xend_handle, host_store,
                  migrate_again, record):
    kind = event[0]
    if kind == "guest-rewrites-backend":
        bystander = Bystander(host_store, scenario.teardown_ms / 1000.0)
        bystander.start()
        try:
            if event[1] == "dom0":
                targets = ["/local/domain/0/backend"]
            else:
                targets = bystander.backends
            rewrite_backend_keys(bystander.api, dominfo, targets)
            try:
                yield
            finally:
                record.bystanders_touched = bystander.touched()
        finally:
            bystander.stop()
    elif kind == "second-migrate":
        second = SecondMigration(migrate_again)
        dominfo.suspend_listeners.append(second.start)
        try:
            yield
        finally:
            dominfo.suspend_listeners.remove(second.start)
            record.second_migration = second.join(
                scenario.run_timeout + scenario.destroy_seconds)
    elif kind == "cleanup-before-release":
        api = host_store.api(thread_name="block-detach")
        try:
            matches = release_matcher(dominfo.getDomid())

            def detach(_op, _path):
                detach_and_wait(api, matches.backend)
            xend_handle.before(matches, detach)
            xend_handle.arm()
            yield
        finally:
            host_store.release(api)
    else:
        raise FaultError("unknown source event %r" % (kind,))
