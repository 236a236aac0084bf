"""A pure-Python, in-process xenstore: Xen 4.17's xenstored or Xen 3.1's.

``EmbeddedXenstore().connect()`` hands out handles with the methods and
semantics of ``xen.lowlevel.xs.xs()`` (see ``lowlevel``), so the tools run
with no daemon at all.  What both daemons do alike lives here:

* Writes and mkdir create missing parents with empty values; one watch
  event fires, for the written node, for watches at or above it.
* A watch fires once when registered.
* Every client is dom0: permissions are stored and reported, never
  enforced.

Where they differ (transactions and their conflicts, what a removal and a
special event fire) is the flavour's semantics object (``semantics``):

* ``flavour="xen417"`` (the default) is held to the real 4.17 daemon by
  tests/test_xenstore_conformance.py: per-node optimistic transactions;
  removing a subtree fires, per removed node, the watches set exactly on
  it, and for the removed root, watches at or above it too.
* ``flavour="xen31"`` follows Xen 3.1.0's source (what a CentOS 5 host
  runs): a transaction works on a copy of the whole store and fails with
  EAGAIN if *anything* changed meanwhile (any write, any other commit,
  even a read-only one); removing a node fires once, for watches at or
  above it with its path and for watches below it with their own paths.

The embedded store never imitates timing: events are queued synchronously
under the store's lock.  Fault injection (``fail_next``,
``reset_connections``) and the operation counters are public, for tests
and the rehearsal.
"""

from __future__ import annotations

import collections
import errno
import os
import threading
from dataclasses import dataclass
from typing import Any

from fastmig_tools.xenstore.lowlevel import IMPLICIT_ROOT, XenstoreError
from fastmig_tools.xenstore.semantics import (
    SEMANTICS, Node, StoreSemantics, Transaction, is_child, semantics_for)

__all__ = ["EmbeddedXenstore", "EmbeddedHandle", "REQUEST_OPS", "FLAVOURS"]

FLAVOURS = tuple(SEMANTICS)

# Every operation that is a request to the daemon (what op_count counts and
# fail_next can target).  "commit" is transaction_end without abort.
REQUEST_OPS = frozenset([
    "read", "write", "ls", "mkdir", "rm", "get_permissions",
    "set_permissions", "watch", "unwatch", "transaction_start",
    "transaction_end", "commit", "get_domain_path",
])

_VALID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@")
_MAX_PATH = 2048   # XENSTORE_REL_PATH_MAX, xenstored's default path quota
_MAX_PAYLOAD = 4096  # XENSTORE_PAYLOAD_MAX: a request's path, NUL and value
_PERM_READ = 1
_PERM_WRITE = 2


@dataclass
class _Watch:
    node: str                        # canonical path (or "@name")
    relative: bool
    token: Any


@dataclass
class _Fault:
    op: str
    err: int
    remaining: int
    path: str | None


def _fail(err: int) -> XenstoreError:
    return XenstoreError(err)


def _parent(name: str) -> str:
    slash = name.rfind("/")
    return name[:slash] if slash > 0 else "/"


def _basename(name: str) -> str:
    return name[name.rfind("/") + 1:]


def _canonical(path: str) -> str:
    if path.startswith("/") or path.startswith("@"):
        return path
    return IMPLICIT_ROOT + "/" + path


def _valid_name(name: str) -> bool:
    if not name.startswith("/"):
        return False
    if name.endswith("/") and name != "/":
        return False
    if "//" in name:
        return False
    # xenstored does not count a /local/domain/<id>/ prefix against the quota.
    budget = _MAX_PATH
    parts = name.split("/")
    if len(parts) > 4 and parts[1:3] == ["local", "domain"] and \
            parts[3].isdigit() and len(parts[3]) <= 5:
        budget += len("/local/domain/%s/" % parts[3])
    if len(name) > budget:
        return False
    return all(c in _VALID_CHARS for c in name)


def _node_name(path: str) -> str:
    if not isinstance(path, str):
        raise TypeError("path must be str, not %s" % type(path).__name__)
    name = _canonical(path)
    if not _valid_name(name):
        raise _fail(errno.EINVAL)
    return name


def _transaction_id(t: str) -> int:
    if not isinstance(t, str):
        raise TypeError("argument 1 must be str, not %s"
                        % ("None" if t is None else type(t).__name__))
    # The binding parses with strtoul(t, NULL, 16): leading hex digits only.
    digits = ""
    for c in t.strip():
        if c not in "0123456789abcdefABCDEF":
            break
        digits += c
    return int(digits, 16) if digits else 0


class EmbeddedXenstore:
    """An in-process xenstore; every method is thread safe.

    Starts with xenstored's initial tree: ``/``, ``/tool``,
    ``/tool/xenstored``.  ``op_count`` counts the requests all handles
    made (``op_counts`` by operation); watch events are not requests.
    """

    def __init__(self, flavour: str = "xen417") -> None:
        self.flavour = flavour
        self._nodes: dict[str, Node] = {}
        # Raises ValueError for an unknown flavour.
        self._semantics: StoreSemantics = semantics_for(
            flavour, self._nodes, self._fire_watches)
        self._lock = threading.RLock()
        self._handles: list[EmbeddedHandle] = []
        self._faults: list[_Fault] = []
        self.op_count = 0
        self.op_counts: collections.Counter[str] = collections.Counter()
        for name, child in (("/", "tool"), ("/tool", "xenstored"),
                            ("/tool/xenstored", None)):
            self._semantics.write(None, name, Node(
                b"", [child] if child else [], [(0, 0)]))

    # -- public face -----------------------------------------------------

    def connect(self) -> "EmbeddedHandle":
        """A new connection, like ``xen.lowlevel.xs.xs()``."""
        with self._lock:
            handle = EmbeddedHandle(self)
            self._handles.append(handle)
            return handle

    def fail_next(self, op: str, err: int, count: int = 1,
                  path: str | None = None) -> None:
        """Make the next ``count`` requests ``op`` (on any handle; only those
        on ``path`` or below it, if given) fail with ``err`` and do nothing.

        ``op`` is a name in ``REQUEST_OPS``; "commit" is a transaction_end
        without abort.  As with the binding, an injected ENOENT makes
        read/ls return None and rm succeed, and an injected EAGAIN makes a
        commit return False; a failed transaction_end discards the
        transaction either way.
        """
        if op not in REQUEST_OPS:
            raise ValueError("unknown operation %r (one of %s)"
                             % (op, ", ".join(sorted(REQUEST_OPS))))
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            canonical = _canonical(path) if path is not None else None
            self._faults.append(_Fault(op, err, count, canonical))

    def clear_faults(self) -> None:
        """Forget every fault not yet triggered."""
        with self._lock:
            del self._faults[:]

    def reset_connections(self) -> None:
        """Drop every current connection, as if the daemon restarted its
        sockets: their watches and transactions vanish, their requests fail
        with EBADF, ``read_watch`` returns what was queued and then raises
        EINVAL.  The data stays; new ``connect()`` calls work."""
        with self._lock:
            for handle in list(self._handles):
                handle._die()
            del self._handles[:]

    def fire_special(self, name: str) -> None:
        """Fire a special watch such as ``@releaseDomain`` (no hypervisor
        ever does here)."""
        if not name.startswith("@"):
            raise ValueError("special watch names start with @")
        with self._lock:
            self._semantics.fire_special(name)

    def dump(self, path: str = "/") -> dict[str, bytes]:
        """Every node at or below ``path`` with its value (committed data)."""
        with self._lock:
            root = _canonical(path)
            return {name: node.value for name, node in sorted(self._nodes.items())
                    if is_child(name, root)}

    def exists(self, path: str) -> bool:
        with self._lock:
            return _canonical(path) in self._nodes

    @property
    def connections(self) -> int:
        """How many handles are open."""
        with self._lock:
            return len(self._handles)

    # -- requests (called with the lock held) ---------------------------

    def _begin(self, op: str, path: str | None) -> None:
        self.op_count += 1
        self.op_counts[op] += 1
        self._inject((op,), path)

    def _inject(self, kinds: tuple[str, ...], path: str | None) -> None:
        for fault in self._faults:
            if fault.op not in kinds:
                continue
            if fault.path is not None and (
                    not isinstance(path, str) or
                    not is_child(_canonical(path), fault.path)):
                continue
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.remove(fault)
            raise _fail(fault.err)

    def _fire_watches(self, match) -> None:
        """Queue an event for every watch ``match(watch node)`` names a
        path for (the semantics object decides which)."""
        for handle in self._handles:
            for watch in handle._watches:
                path = match(watch.node)
                if path is not None:
                    handle._deliver(self._event_path(watch, path),
                                    watch.token)

    @staticmethod
    def _event_path(watch: _Watch, name: str) -> str:
        if not watch.relative:
            return name
        rest = name[len(IMPLICIT_ROOT):]
        return rest[1:] if rest.startswith("/") else rest

    def _create(self, tx: Transaction | None, name: str, value: bytes) -> None:
        """construct_node + create_node: ``name`` and its missing parents."""
        missing = [name]
        parent_name = _parent(name)
        parent = self._semantics.read(tx, parent_name)
        while parent is None:
            missing.append(parent_name)
            parent_name = _parent(parent_name)
            parent = self._semantics.read(tx, parent_name)
        if tx is None:
            parent = parent.copy()
        for child_name in reversed(missing):
            parent.children.append(_basename(child_name))
            self._semantics.write(tx, parent_name, parent)
            node = Node(b"", [], list(parent.perms))
            parent, parent_name = node, child_name
        parent.value = value
        self._semantics.write(tx, name, parent)

    def _remove_tree(self, tx: Transaction | None, name: str, root: str) -> None:
        node = self._semantics.read(tx, name)
        if node is None:
            return
        for child in list(node.children):
            self._remove_tree(tx, name + "/" + child, root)
        self._semantics.delete(tx, name)
        self._semantics.removing(tx, name, root)


class EmbeddedHandle:
    """One connection to an ``EmbeddedXenstore``; see ``lowlevel.XsHandle``.

    Safe to share between threads (one thread may block in ``read_watch``
    while others make requests, as xend does).
    """

    def __init__(self, store: EmbeddedXenstore) -> None:
        self._store = store
        self._cond = threading.Condition(store._lock)
        self._events: collections.deque[tuple[str, Any]] = collections.deque()
        self._watches: list[_Watch] = []        # what the daemon knows
        self._tokens: list[Any] = []            # what the binding matches
        self._transactions: dict[int, Transaction] = {}
        self._next_transaction = 1
        self._closed = False
        self._dead = False
        self._pipe: tuple[int, int] | None = None

    # -- plumbing --------------------------------------------------------

    def _request(self, op: str, path: str | None = None) -> None:
        """Called with the lock held at the start of every request."""
        if self._closed:
            raise _fail(errno.EINVAL)
        self._store._begin(op, path)
        if self._dead:
            raise _fail(errno.EBADF)

    def _transaction(self, t: str) -> Transaction | None:
        ident = _transaction_id(t)
        if ident == 0:
            return None
        tx = self._transactions.get(ident)
        if tx is None:
            raise _fail(errno.ENOENT)
        return tx

    def _deliver(self, path: str, token: Any) -> None:
        if not self._events and self._pipe is not None:
            os.write(self._pipe[1], b"!")
        self._events.append((path, token))
        self._cond.notify_all()

    def _pop_event(self) -> tuple[str, Any]:
        event = self._events.popleft()
        if not self._events and self._pipe is not None:
            try:
                os.read(self._pipe[0], 1)
            except BlockingIOError:
                pass
        return event

    def _registered(self, token: Any) -> bool:
        return any(t is token for t in self._tokens)

    def _die(self) -> None:
        self._dead = True
        self._watches = []
        self._transactions.clear()
        self._cond.notify_all()

    # -- the xen.lowlevel.xs methods -------------------------------------

    def read(self, t: str, path: str) -> bytes | None:
        with self._cond:
            try:
                self._request("read", path)
                tx = self._transaction(t)
                node = self._store._semantics.read(tx, _node_name(path))
                if node is None:
                    raise _fail(errno.ENOENT)
                return node.value
            except XenstoreError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise

    def write(self, t: str, path: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("a bytes-like object is required, not '%s'"
                            % type(data).__name__)
        data = bytes(data)
        with self._cond:
            self._request("write", path)
            if isinstance(path, str) and \
                    len(path.encode("utf-8")) + 1 + len(data) > _MAX_PAYLOAD:
                raise _fail(errno.E2BIG)
            tx = self._transaction(t)
            store = self._store
            name = _node_name(path)
            node = store._semantics.read(tx, name)
            if node is None:
                store._create(tx, name, data)
            else:
                node = node if tx is not None else node.copy()
                node.value = data
                store._semantics.write(tx, name, node)
            store._semantics.changed(tx, name)

    def mkdir(self, t: str, path: str) -> None:
        with self._cond:
            self._request("mkdir", path)
            tx = self._transaction(t)
            store = self._store
            name = _node_name(path)
            if store._semantics.read(tx, name) is None:
                store._create(tx, name, b"")
                store._semantics.changed(tx, name)

    def ls(self, t: str, path: str) -> list[str] | None:
        with self._cond:
            try:
                self._request("ls", path)
                tx = self._transaction(t)
                node = self._store._semantics.read(tx, _node_name(path))
                if node is None:
                    raise _fail(errno.ENOENT)
                return list(node.children)
            except XenstoreError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise

    def rm(self, t: str, path: str) -> None:
        with self._cond:
            try:
                self._request("rm", path)
                tx = self._transaction(t)
                store = self._store
                name = _node_name(path)
                if store._semantics.read(tx, name) is None:
                    if store._semantics.read(tx, _parent(name)) is None:
                        raise _fail(errno.ENOENT)
                    return
                if name == "/":
                    raise _fail(errno.EINVAL)
                parent_name = _parent(name)
                parent = store._semantics.read(tx, parent_name)
                store._remove_tree(tx, name, name)
                parent = parent if tx is not None else parent.copy()
                parent.children.remove(_basename(name))
                store._semantics.write(tx, parent_name, parent)
                store._semantics.removed(tx, name)
            except XenstoreError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    def get_permissions(self, t: str, path: str) -> list[dict]:
        with self._cond:
            self._request("get_permissions", path)
            tx = self._transaction(t)
            node = self._store._semantics.read(tx, _node_name(path))
            if node is None:
                raise _fail(errno.ENOENT)
            return [{"dom": dom, "read": bits & _PERM_READ,
                     "write": bits & _PERM_WRITE} for dom, bits in node.perms]

    def set_permissions(self, t: str, path: str, perms: list[dict]) -> None:
        if not isinstance(perms, list):
            raise _fail(errno.EINVAL)
        parsed = []
        for entry in perms:
            if not isinstance(entry, dict) or "dom" not in entry:
                raise TypeError("each permission is a dict with 'dom'")
            bits = (_PERM_READ if entry.get("read") else 0) | \
                (_PERM_WRITE if entry.get("write") else 0)
            parsed.append((int(entry["dom"]), bits))
        # The binding makes dom0 the owner when the first entry restricts
        # access to another domain (it could not be its own owner).
        if parsed and parsed[0][1] and parsed[0][0]:
            parsed.insert(0, (0, 0))
        with self._cond:
            self._request("set_permissions", path)
            if not parsed:
                raise _fail(errno.EINVAL)
            tx = self._transaction(t)
            store = self._store
            name = _node_name(path)
            node = store._semantics.read(tx, name)
            if node is None:
                raise _fail(errno.ENOENT)
            node = node if tx is not None else node.copy()
            node.perms = parsed
            store._semantics.write(tx, name, node)
            store._semantics.changed(tx, name)

    def watch(self, path: str, token: Any) -> None:
        with self._cond:
            self._tokens.append(token)
            try:
                self._request("watch", path)
                if not isinstance(path, str):
                    raise TypeError("path must be str")
                if path.startswith("@"):
                    relative, name = False, path
                    if len(path) > _MAX_PATH:
                        raise _fail(errno.EINVAL)
                else:
                    relative = not path.startswith("/")
                    name = _node_name(path)
                for w in self._watches:
                    if w.node == name and w.token is token:
                        raise _fail(errno.EEXIST)
                watch = _Watch(name, relative, token)
                self._watches.append(watch)
                # xenstored fires once up front.
                self._deliver(self._store._event_path(watch, name), token)
            except BaseException:
                self._forget_token(token)
                raise

    def unwatch(self, path: str, token: Any) -> None:
        with self._cond:
            try:
                self._request("unwatch", path)
                name = _canonical(path)
                for i, w in enumerate(self._watches):
                    if w.node == name and w.token is token:
                        del self._watches[i]
                        return
                raise _fail(errno.ENOENT)
            finally:
                self._forget_token(token)

    def _forget_token(self, token: Any) -> None:
        for i, t in enumerate(self._tokens):
            if t is token:
                del self._tokens[i]
                return

    def read_watch(self) -> tuple[str, Any]:
        with self._cond:
            while True:
                if self._closed:
                    raise _fail(errno.EINVAL)
                while self._events:
                    path, token = self._pop_event()
                    # Events of a watch removed since are still in transit.
                    if self._registered(token):
                        return path, token
                if self._dead:
                    raise _fail(errno.EINVAL)
                self._cond.wait()

    def check_watch(self) -> tuple[str, Any] | None:
        with self._cond:
            if self._closed:
                raise _fail(errno.EINVAL)
            if not self._events:
                if self._dead:
                    raise _fail(errno.EINVAL)
                return None
            path, token = self._pop_event()
            if not self._registered(token):
                raise _fail(errno.EAGAIN)
            return path, token

    def fileno(self) -> int:
        """A descriptor readable while watch events are queued."""
        with self._cond:
            if self._closed:
                raise _fail(errno.EINVAL)
            if self._pipe is None:
                r, w = os.pipe()
                os.set_blocking(r, False)
                self._pipe = (r, w)
                if self._events:
                    os.write(w, b"!")
            return self._pipe[0]

    def transaction_start(self) -> str:
        with self._cond:
            self._request("transaction_start")
            ident = self._next_transaction
            while ident in self._transactions or ident == 0:
                ident = (ident + 1) & 0xFFFFFFFF
            self._next_transaction = (ident + 1) & 0xFFFFFFFF
            tx = self._store._semantics.begin()
            self._transactions[ident] = tx
            return "%X" % ident

    def transaction_end(self, t: str, abort: bool = False) -> bool:
        with self._cond:
            if self._closed:
                raise _fail(errno.EINVAL)
            store = self._store
            store.op_count += 1
            store.op_counts["transaction_end"] += 1
            ident = _transaction_id(t)
            try:
                store._inject(("transaction_end",) if abort else
                              ("transaction_end", "commit"), None)
                if self._dead:
                    raise _fail(errno.EBADF)
                tx = self._transactions.get(ident)
                if tx is None:
                    raise _fail(errno.ENOENT)
                if not abort:
                    store._semantics.commit(tx)
                return True
            except XenstoreError as exc:
                if exc.errno == errno.EAGAIN:
                    return False
                raise
            finally:
                self._transactions.pop(ident, None)

    def get_domain_path(self, domid: int) -> str:
        with self._cond:
            self._request("get_domain_path")
            return "/local/domain/%d" % int(domid)

    def close(self) -> None:
        """Close the connection; wakes a blocked ``read_watch`` (EINVAL)."""
        with self._cond:
            if self._closed:
                raise _fail(errno.EINVAL)
            self._closed = True
            self._die()
            self._tokens = []
            self._events.clear()
            if self in self._store._handles:
                self._store._handles.remove(self)
            if self._pipe is not None:
                os.close(self._pipe[0])
                os.close(self._pipe[1])
                self._pipe = None
