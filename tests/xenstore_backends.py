"""Both xenstores behind one face, for suites that must pass on each.

``make_backend(request, kind)`` with kind "embedded" (an
``EmbeddedXenstore`` of its own) or "real" (the session's real xenstored,
through the ``real_xenstored`` / ``real_lowlevel`` / ``xs_root`` fixtures of
``tests/conftest.py``).  Every handle it opens is closed at teardown.
"""
from __future__ import annotations

import errno
import select
import time
import uuid

from fastmig_tools.xenstore.embedded import EmbeddedXenstore

__all__ = ["BACKENDS", "Backend", "make_backend", "next_event", "no_event"]

BACKENDS = ("embedded", "real")


class Backend:
    """One store for one test: ``handle`` (the first connection),
    ``connect()`` for more, ``root`` (a fresh path only this test uses)."""

    def __init__(self, kind: str, handle, opener, root: str, store=None):
        self.kind = kind
        self.handle = handle
        self.root = root
        self.store = store          # the EmbeddedXenstore, or None for real
        self._opener = opener
        self._opened = []

    def connect(self):
        handle = self._opener()
        self._opened.append(handle)
        return handle

    def path(self, *parts: str) -> str:
        return "/".join((self.root,) + parts)

    def close(self) -> None:
        for handle in self._opened:
            try:
                handle.close()
            except Exception:
                pass  # the test closed it already


def make_backend(request, kind: str) -> Backend:
    """The backend ``kind`` for the requesting test; closed at its end."""
    if kind == "embedded":
        store = EmbeddedXenstore()
        handle = store.connect()
        backend = Backend(kind, handle, store.connect,
                          "/test/%s" % uuid.uuid4().hex, store)

        def finish():
            backend.close()
            try:
                handle.close()
            except Exception:
                pass
    elif kind == "real":
        daemon = request.getfixturevalue("real_xenstored")
        handle = request.getfixturevalue("real_lowlevel")
        root = request.getfixturevalue("xs_root")
        backend = Backend(kind, handle, daemon.open_lowlevel, root)
        finish = backend.close
    else:
        raise ValueError("unknown xenstore backend %r" % kind)
    request.addfinalizer(finish)
    return backend


def next_event(handle, timeout: float = 5.0):
    """The next watch event of ``handle`` as ``(path, token)``; fails the
    test if none comes within ``timeout`` seconds.  Never blocks longer."""
    deadline = time.monotonic() + timeout
    fd = handle.fileno()
    while True:
        try:
            event = handle.check_watch()
        except RuntimeError as exc:
            if exc.args and exc.args[0] == errno.EAGAIN:
                continue        # an event of a watch removed since
            raise
        if event is not None:
            return event
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no watch event within %.1fs" % timeout)
        select.select([fd], [], [], remaining)


def no_event(handle, marker_path: str, timeout: float = 5.0) -> list:
    """Everything ``handle`` receives before the registration event of a
    fresh watch on ``marker_path``: events of one connection arrive in
    order, so anything caused earlier shows up here (no sleeping)."""
    token = object()
    handle.watch(marker_path, token)
    seen = []
    try:
        while True:
            path, tok = next_event(handle, timeout)
            if tok is token:
                return seen
            seen.append((path, tok))
    finally:
        handle.unwatch(marker_path, token)
