"""The two hosts' xenstores: embedded (default) or two real xenstored.

The hosts rehearsed are Xen 3.1 hosts, so the embedded store (the default)
runs Xen 3.1's xenstored semantics: a transaction fails if anything at all
changed in the store meanwhile, and an rm fires once, not per removed
node.  The real daemons are Xen 4.17's (what scripts/install-xenstored
installs), with per-node transaction conflicts.  ``STORE_NAMES`` is how
the scenario line names each.

A ``HostStore`` hands out low-level handles to one host's store; the xend
model of each host uses a ``CountingHandle`` so the rehearsal can say how
many xenstore requests a policy's toolstack made.
"""
from __future__ import annotations

import itertools
import threading

from fastmig_tools.xenstore.embedded import EmbeddedXenstore
from fastmig_tools.xenstore.xend_api import XendApi

__all__ = ["HostStore", "CountingHandle", "open_host_stores",
           "StoreUnavailable", "EMBEDDED_FLAVOUR", "STORE_NAMES"]

# EmbeddedXenstore's flavour for the rehearsed hosts: 3.1's stricter
# conflicts are what the 3.1 xend code being rehearsed retries against.
EMBEDDED_FLAVOUR = "xen31"
STORE_NAMES = {"embedded": "embedded Xen 3.1 xenstore",
               "real": "real Xen 4.17 xenstored"}

# What a handle does that is a request to the daemon (read_watch is not).
_REQUESTS = frozenset([
    "read", "write", "ls", "rm", "mkdir", "get_permissions",
    "set_permissions", "watch", "unwatch", "transaction_start",
    "transaction_end", "get_domain_path",
])


class StoreUnavailable(Exception):
    """The requested xenstore cannot run here; the message says why."""


class CountingHandle:
    """A low-level handle that counts the requests made through it."""

    def __init__(self, handle):
        self._handle = handle
        self._lock = threading.Lock()
        self.count = 0

    def __getattr__(self, name):
        attr = getattr(self._handle, name)
        if name not in _REQUESTS:
            return attr

        def counted(*args, **kwargs):
            with self._lock:
                self.count += 1
            return attr(*args, **kwargs)
        return counted


class HostStore:
    """One host's xenstore.  ``api()`` opens an ``XendApi`` on a new
    connection; ``close()`` closes every API opened and stops the daemon
    (if any).  Never leaves a daemon or a directory behind."""

    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind
        self.embedded: EmbeddedXenstore | None = None
        self.daemon = None
        self._apis: list[XendApi] = []
        self._lock = threading.Lock()

    def start(self) -> "HostStore":
        if self.kind == "embedded":
            self.embedded = EmbeddedXenstore(EMBEDDED_FLAVOUR)
            return self
        from fastmig_tools.xenstore.real import (
            ManagedXenstored, XenstoredUnavailable)
        try:
            self.daemon = ManagedXenstored(name="xenstored-%s" % self.name,
                                           trace=False).start()
        except XenstoredUnavailable as exc:
            raise StoreUnavailable(
                "--xenstored real: %s\n(or run without --xenstored real to "
                "use the embedded store)" % exc) from None
        return self

    def connect(self):
        if self.embedded is not None:
            return self.embedded.connect()
        return self.daemon.open_lowlevel()

    def api(self, counted: bool = False, thread_name: str = "Watcher",
            wrap=None):
        """An ``XendApi`` over a new connection (its handle counted if
        asked: ``api.handle.count``; passed through ``wrap(handle,
        embedded_store)`` first if given, e.g. a fault injector)."""
        handle = self.connect()
        if wrap is not None:
            handle = wrap(handle, self.embedded)
        if counted:
            handle = CountingHandle(handle)
        api = XendApi(handle, thread_name=thread_name)
        with self._lock:
            self._apis.append(api)
        return api

    def release(self, api: XendApi) -> None:
        with self._lock:
            if api in self._apis:
                self._apis.remove(api)
        api.close()

    @property
    def op_count(self) -> int | None:
        """Every request any client made (embedded store only)."""
        if self.embedded is not None:
            return self.embedded.op_count
        return None

    def close(self) -> None:
        with self._lock:
            apis, self._apis = self._apis, []
        errors = []
        for api in apis:
            try:
                api.close()
            except Exception as exc:   # keep closing the others
                errors.append(exc)
        if self.daemon is not None:
            self.daemon.stop()
        if errors:
            raise errors[0]


_counter = itertools.count(1)


def open_host_stores(kind: str) -> tuple[HostStore, HostStore]:
    """Start the source's and the target's store; both or neither."""
    n = next(_counter)
    source = HostStore("source%d" % n, kind).start()
    try:
        target = HostStore("target%d" % n, kind).start()
    except BaseException:
        source.close()
        raise
    return source, target
