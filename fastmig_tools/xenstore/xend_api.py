"""xend 3.1's xenstore API (``xstransact``, ``xswatch``) over any handle.

``XendApi(handle)`` binds fresh ``xstransact`` and ``xswatch`` classes to
one ``lowlevel.XsHandle`` (Xen's binding or an embedded store's handle), so
the code that runs inside xend can be driven unchanged by the tools and
tests.  The behaviour follows ``xen/xend/xenstore/xstransact.py`` and
``xswatch.py`` of Xen 3.1:

* Values are ``str`` both ways (bytes are decoded as UTF-8, undecodable
  bytes kept as surrogates so they round-trip); a missing node reads as
  None; ``Remove`` of a missing node is a no-op; ``List`` of a missing node
  is ``[]``; errors are ``RuntimeError(errno, message)``.
* The class methods (``Read``, ``Write``, ...) each run in their own
  transaction and retry it while the commit conflicts.
* ``xswatch(path, fn, *args, **kwargs)`` fires once at once and on every
  change at or below ``path``, calling ``fn(path, *args, **kwargs)`` on the
  one "Watcher" thread of this ``XendApi``; a false result (None too, as in
  xend) unregisters the watch.  A callback's exception is logged and never
  stops the thread.  A callback may still run once after ``unwatch()``
  (an event already taken off the connection), as in xend.

One deliberate difference: ``complete`` gives up after ``max_attempts``
conflicting commits (xend retries forever) and raises
``RuntimeError(EAGAIN, ...)``, so a livelock fails a test instead of
hanging it.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any, Callable

__all__ = ["XendApi", "decode_value", "encode_value"]

log = logging.getLogger(__name__)

_STOP_WATCH_PATH = "/"


def decode_value(data: bytes | None) -> str | None:
    """A stored value as xend sees it (a str), or None when missing."""
    if data is None:
        return None
    return data.decode("utf-8", "surrogateescape")


def encode_value(value: Any) -> bytes:
    """What ``write`` stores for ``value``; only str (or bytes) is accepted,
    as with xend's binding, so a stray int fails here as it would in xend."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise TypeError("xenstore values must be str, not %s"
                        % type(value).__name__)
    return value.encode("utf-8", "surrogateescape")


def _rewrap(exc: RuntimeError, what: str) -> RuntimeError:
    """xend's re-raise: RuntimeError(errno, '<message>, while <what>')."""
    args = exc.args
    err = args[0] if args else None
    message = args[1] if len(args) > 1 else (str(err) if err is not None else "")
    return RuntimeError(err, "%s, while %s" % (message, what))


class _XsTransact:
    """Base of the per-``XendApi`` ``xstransact`` class (see xend 3.1)."""

    _api: "XendApi"

    def __init__(self, path: str = ""):
        # Set first: if transaction_start raises, __del__ must not end it.
        self.in_transaction = False
        assert path is not None
        self.path = path.rstrip("/")
        self.transaction = self._api.handle.transaction_start()
        self.in_transaction = True

    def __del__(self):
        if getattr(self, "in_transaction", False):
            self.in_transaction = False
            try:
                self._api.handle.transaction_end(self.transaction, True)
            except Exception:
                pass  # a closed handle has no transactions left to end

    # -- ending ----------------------------------------------------------

    def commit(self) -> bool:
        """True when committed; False on a conflict (nothing was written)."""
        if not self.in_transaction:
            raise RuntimeError("transaction already ended")
        self.in_transaction = False
        rc = self._api.handle.transaction_end(self.transaction, False)
        self.transaction = "0"
        return rc

    def abort(self) -> bool:
        if not self.in_transaction:
            return True
        self.in_transaction = False
        rc = self._api.handle.transaction_end(self.transaction, True)
        self.transaction = "0"
        return rc

    # -- reading ---------------------------------------------------------

    def _read(self, key: str) -> str | None:
        path = self.prependPath(key)
        try:
            return decode_value(self._api.handle.read(self.transaction, path))
        except RuntimeError as exc:
            raise _rewrap(exc, "reading %s" % path) from exc

    def read(self, *args):
        """No argument: the value at this transaction's path; one: the value
        at that subpath; several: a list of the values at each subpath."""
        if len(args) == 0:
            return decode_value(self._api.handle.read(self.transaction,
                                                      self.path))
        if len(args) == 1:
            return self._read(args[0])
        return [self._read(key) for key in args]

    def _list(self, key: str) -> list[str]:
        names = self._api.handle.ls(self.transaction, self.prependPath(key))
        if names:
            return [key + "/" + name for name in names]
        return []

    def list(self, *args) -> list[str]:
        """No argument: the child names of this path ([] when missing);
        otherwise ``"key/child"`` entries of every given subpath."""
        if len(args) == 0:
            names = self._api.handle.ls(self.transaction, self.path)
            return [] if names is None else names
        ret = []
        for key in args:
            ret.extend(self._list(key))
        return ret

    def list_recursive_(self, subdir: str, keys):
        ret = []
        for key in keys:
            child = subdir + "/" + key
            names = self._api.handle.ls(self.transaction, child)
            if names:
                ret.append([key, self.list_recursive_(child, names)])
            else:
                ret.append([key, decode_value(
                    self._api.handle.read(self.transaction, child))])
        return ret

    def list_recursive(self, *args):
        if len(args) == 0:
            args = self.list()
            if not args:
                return []
        return self.list_recursive_(self.path, args)

    def gather(self, *args):
        """``(key, fn[, default])`` tuples: ``fn(value)`` of each, or the
        default (None) for a missing node; one tuple gives one value."""
        if len(args) and type(args[0]) != tuple:
            args = (args,)
        ret = []
        for tup in args:
            if len(tup) == 2:
                key, fn = tup
                default = None
            else:
                key, fn, default = tup
            value = self._read(key)
            # fn(None) would turn a missing node into "None" for fn=str.
            ret.append(default if value is None else fn(value))
        if len(ret) == 1:
            return ret[0]
        return ret

    def get_permissions(self, *args):
        if len(args) == 0:
            return self._api.handle.get_permissions(self.transaction, self.path)
        if len(args) == 1:
            return self._get_permissions(args[0])
        return [self._get_permissions(key) for key in args]

    def _get_permissions(self, key: str):
        path = self.prependPath(key)
        try:
            return self._api.handle.get_permissions(self.transaction, path)
        except RuntimeError as exc:
            raise _rewrap(exc, "getting permissions from %s" % path) from exc

    # -- writing ---------------------------------------------------------

    def _write(self, key: str, data) -> None:
        path = self.prependPath(key)
        try:
            self._api.handle.write(self.transaction, path, encode_value(data))
        except RuntimeError as exc:
            raise _rewrap(exc, "writing %s : %s" % (path, data)) from exc

    def write(self, *args) -> None:
        """``write(key, value, key, value, ...)``, ``write({key: value}, ...)``
        or ``write([key, value], ...)``."""
        if len(args) == 0:
            raise TypeError("write needs arguments")
        if isinstance(args[0], dict):
            for d in args:
                if not isinstance(d, dict):
                    raise TypeError("write: mixed dict and other arguments")
                for key in d.keys():
                    try:
                        self._write(key, d[key])
                    except TypeError as exc:
                        raise TypeError("Writing %s: %s: %s"
                                        % (key, d[key], exc)) from exc
        elif isinstance(args[0], list):
            for pair in args:
                if len(pair) != 2:
                    raise TypeError("write: lists must be [key, value]")
                self._write(pair[0], pair[1])
        elif len(args) % 2 == 0:
            for i in range(len(args) // 2):
                self._write(args[i * 2], args[i * 2 + 1])
        else:
            raise TypeError("write: odd number of key/value arguments")

    def store(self, *args) -> None:
        """``(key, value[, fmt])`` tuples; a None value removes the key."""
        if len(args) and type(args[0]) != tuple:
            args = (args,)
        for tup in args:
            if len(tup) == 2:
                key, value = tup
                try:
                    fmt = {str: "%s", int: "%i", float: "%f",
                           type(None): None}[type(value)]
                except KeyError:
                    raise TypeError("store: cannot format %s"
                                    % type(value).__name__) from None
            else:
                key, value, fmt = tup
            if value is None:
                self._remove(key)
            else:
                self._write(key, fmt % value)

    def _remove(self, key: str) -> None:
        self._api.handle.rm(self.transaction, self.prependPath(key))

    def remove(self, *args) -> None:
        """No argument: remove this path; otherwise each given subpath.
        Removing what is missing is not an error."""
        if len(args) == 0:
            self._api.handle.rm(self.transaction, self.path)
        else:
            for key in args:
                self._remove(key)

    def mkdir(self, *args) -> None:
        if len(args) == 0:
            self._api.handle.mkdir(self.transaction, self.path)
        else:
            for key in args:
                self._api.handle.mkdir(self.transaction, self.prependPath(key))

    def set_permissions(self, *args) -> None:
        if len(args) == 0:
            raise TypeError("set_permissions needs arguments")
        if isinstance(args[0], str):
            self.callRebased(args[0], self.set_permissions, *args[1:])
        else:
            if not self.path:
                raise RuntimeError("Cannot set permissions on the root")
            self._api.handle.set_permissions(self.transaction, self.path,
                                             list(args))

    def remove2(self, middlePath: str, *args) -> None:
        self.callRebased(middlePath, self.remove, *args)

    def write2(self, middlePath: str, *args) -> None:
        self.callRebased(middlePath, self.write, *args)

    def callRebased(self, middlePath: str, func: Callable, *args) -> None:
        oldpath = self.path
        self.path = self.prependPath(middlePath)
        try:
            func(*args)
        finally:
            self.path = oldpath

    def prependPath(self, key: str) -> str:
        if self.path:
            return self.path + "/" + key
        return key

    # -- one transaction per call, retried on conflicts ------------------

    @classmethod
    def complete(cls, path: str, f: Callable):
        """``f(t)`` in a fresh transaction, retried until it commits."""
        for _ in range(cls._api.max_attempts):
            t = cls(path)
            try:
                result = f(t)
                if t.commit():
                    return result
            except BaseException:
                t.abort()
                raise
        raise RuntimeError(errno.EAGAIN,
                           "transaction on %s still conflicting after %d "
                           "attempts" % (path, cls._api.max_attempts))

    @classmethod
    def Read(cls, path: str, *args):
        return cls.complete(path, lambda t: t.read(*args))

    @classmethod
    def Write(cls, path: str, *args) -> None:
        cls.complete(path, lambda t: t.write(*args))

    @classmethod
    def Remove(cls, path: str, *args) -> None:
        cls.complete(path, lambda t: t.remove(*args))

    @classmethod
    def List(cls, path: str, *args):
        return cls.complete(path, lambda t: t.list(*args))

    @classmethod
    def ListRecursive(cls, path: str, *args):
        return cls.complete(path, lambda t: t.list_recursive(*args))

    @classmethod
    def Gather(cls, path: str, *args):
        return cls.complete(path, lambda t: t.gather(*args))

    @classmethod
    def Store(cls, path: str, *args) -> None:
        cls.complete(path, lambda t: t.store(*args))

    @classmethod
    def SetPermissions(cls, path: str, *args) -> None:
        cls.complete(path, lambda t: t.set_permissions(*args))

    @classmethod
    def Mkdir(cls, path: str, *args) -> None:
        cls.complete(path, lambda t: t.mkdir(*args))


class _XsWatch:
    """Base of the per-``XendApi`` ``xswatch`` class (see xend 3.1)."""

    _api: "XendApi"

    def __init__(self, path: str, fn: Callable, *args, **kwargs):
        self.path = path
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self._api._watch_start()
        self._api.handle.watch(path, self)

    def unwatch(self) -> None:
        """Unregister; raises RuntimeError(ENOENT, ...) if not registered."""
        self._api.handle.unwatch(self.path, self)

    def __repr__(self) -> str:
        return "<xswatch %s -> %r>" % (self.path, self.fn)


class _StopToken:
    """Registered by ``close()``: its first event ends the watcher thread."""


class XendApi:
    """``xstransact`` / ``xswatch`` classes bound to one low-level handle.

    Guarantees: at most one watcher thread, started by the first
    ``xswatch``; ``close()`` ends it and closes the handle, and never
    returns with the thread still running (it raises instead).  It never
    closes the handle while the watcher thread may be blocked reading it.
    """

    def __init__(self, handle, *, max_attempts: int = 1000,
                 thread_name: str = "Watcher"):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.handle = handle
        self.max_attempts = max_attempts
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stop_token: _StopToken | None = None
        self._closed = False
        self._handle_closed = False
        api = self

        class xstransact(_XsTransact):
            _api = api

        class xswatch(_XsWatch):
            _api = api

        self.xstransact = xstransact
        self.xswatch = xswatch

    @property
    def watcher_thread(self) -> threading.Thread | None:
        return self._thread

    @property
    def closed(self) -> bool:
        return self._closed

    def complete(self, path: str, f: Callable):
        """xend's module-level ``complete(path, f)``."""
        return self.xstransact.complete(path, f)

    def store(self):
        """``xend_fastmig.store.XendStore`` over these classes."""
        from xend_fastmig.store import XendStore
        handle = self.handle

        def read(path: str) -> str | None:
            # xend's xshandle().read("", path): no transaction.
            try:
                return decode_value(handle.read("", path))
            except RuntimeError as exc:
                raise _rewrap(exc, "reading %s" % path) from None
        return XendStore(self.xstransact, self.xswatch, read)

    # -- the watcher thread ----------------------------------------------

    def _watch_start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(errno.EINVAL, "XendApi is closed")
            if self._thread is not None:
                return
            thread = threading.Thread(name=self._thread_name,
                                      target=self._watch_main, daemon=True)
            thread.start()
            self._thread = thread

    def _watch_main(self) -> None:
        handle = self.handle
        failures = 0
        while not self._stopping.is_set():
            try:
                path, watch = handle.read_watch()
            except Exception:
                if self._stopping.is_set():
                    break
                # A dead connection fails at once and for ever: say so
                # once, then back off instead of spinning (xend spins).
                if failures == 0:
                    log.exception("read_watch failed")
                else:
                    log.debug("read_watch failed again", exc_info=True)
                failures += 1
                self._stopping.wait(min(0.05 * failures, 1.0))
                continue
            failures = 0
            if watch is self._stop_token or self._stopping.is_set():
                break
            self._dispatch(path, watch)

    def _dispatch(self, path: str, watch) -> None:
        try:
            res = watch.fn(path, *watch.args, **watch.kwargs)
            if not res:
                try:
                    watch.unwatch()
                except RuntimeError as exc:
                    # Already unregistered (e.g. by its owner): fine.
                    if not exc.args or exc.args[0] != errno.ENOENT:
                        raise
        except Exception:
            log.exception("watch callback %r for %s failed", watch, path)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the watcher thread, then close the handle.  Idempotent.

        No new watch is accepted once called.  Raises RuntimeError if the
        thread is still running after ``timeout`` seconds (a callback that
        blocks); the handle is then left open and a later ``close()``
        finishes the job.
        """
        with self._lock:
            if self._handle_closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            if not self._stopping.is_set():
                self._stopping.set()
                self._stop_token = _StopToken()
                try:
                    # Its registration event wakes read_watch at once.
                    self.handle.watch(_STOP_WATCH_PATH, self._stop_token)
                except Exception:
                    pass  # dead connection: read_watch is failing already
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(
                    "watcher thread still running %.1fs after close(); "
                    "a watch callback must not block" % timeout)
        else:
            self._stopping.set()
        with self._lock:
            if self._handle_closed:
                return
            self._handle_closed = True
        try:
            self.handle.close()
        except Exception:
            log.debug("closing the xenstore handle failed", exc_info=True)

    def __enter__(self) -> "XendApi":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
