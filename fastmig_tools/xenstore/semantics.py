"""Where Xen 3.1's and Xen 4.17's xenstored differ, one object per daemon.

``EmbeddedXenstore`` does everything both daemons agree on (paths, the
tree's shape, parents created on write, permissions, the first event of a
watch, the binding's quirks) and asks its semantics object at each point
where they part:

* how a transaction sees the store (``begin``, ``read``, ``write``,
  ``delete``) and when its commit conflicts (``commit``);
* which watches a change fires, and when (``changed``, ``removing``,
  ``removed``, ``fire_special``).

``Xen417Semantics`` is held to the real 4.17 daemon by
tests/test_xenstore_conformance.py; ``Xen31Semantics`` follows the 3.1.0
source, cited where it decides: ``tools/xenstore`` of xen.git at tag
3.1.0-branched (15f6eaada9, the commit of ../shared/xen/3.1.0, which
carries only ``tools/python`` and ``tools/examples``).  No 3.1 daemon runs here, so tests/test_xenstore_semantics.py
pins its decisions.

Both flavours share 4.17's limits (a 2048-byte path quota, E2BIG for a
request over 4096 bytes): 3.1 has no path quota and drops the connection
of a client sending more than PATH_MAX (handle_input), which nothing here
comes near.

A semantics object works on the store's committed tree (``nodes``, a dict
it changes in place) and reports events through ``fire(match)``: the store
calls ``match(watch_node)`` for every watch of every connection and queues
an event with the path it returns (None: this watch does not fire).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from fastmig_tools.xenstore.lowlevel import XenstoreError

__all__ = ["Node", "is_child", "StoreSemantics", "Xen417Semantics",
           "Xen31Semantics", "Transaction", "SEMANTICS", "semantics_for"]

# What ``fire`` is given: the event path a watch on the node gets, or None.
Match = Callable[[str], Optional[str]]
Fire = Callable[[Match], None]


@dataclass
class Node:
    value: bytes
    children: list[str]
    perms: list[tuple[int, int]]     # (domid, read/write bits)
    generation: int = 0              # 4.17's per-node generation

    def copy(self) -> "Node":
        return Node(self.value, list(self.children), list(self.perms),
                    self.generation)


def is_child(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or below it (xenstored's is_child; every
    name, ``@`` ones included, is below ``/``)."""
    if parent == "/":
        return True
    if not child.startswith(parent):
        return False
    return len(child) == len(parent) or child[len(parent)] == "/"


def _conflict() -> XenstoreError:
    return XenstoreError(errno.EAGAIN)


class StoreSemantics:
    """The points where the daemons differ.  ``tx`` is None outside a
    transaction, else what ``begin`` returned; callers touch a node with
    ``read`` before they ``write``, ``delete`` or report it changed, and
    copy a committed node (``tx`` None) before changing it."""

    flavour = ""

    def __init__(self, nodes: dict[str, Node], fire: Fire) -> None:
        self.nodes = nodes
        self._fire = fire

    def begin(self):
        """A new transaction's state."""
        raise NotImplementedError

    def read(self, tx, name: str) -> Node | None:
        """The node as ``tx`` sees it (None: absent)."""
        raise NotImplementedError

    def write(self, tx, name: str, node: Node) -> None:
        raise NotImplementedError

    def delete(self, tx, name: str) -> None:
        raise NotImplementedError

    def changed(self, tx, name: str) -> None:
        """``name`` was written, created or had its permissions set."""
        raise NotImplementedError

    def removing(self, tx, name: str, root: str) -> None:
        """``name`` went as part of removing ``root`` (deepest first)."""
        raise NotImplementedError

    def removed(self, tx, name: str) -> None:
        """The rm of ``name`` is done."""
        raise NotImplementedError

    def commit(self, tx) -> None:
        """Make ``tx`` the store; XenstoreError(EAGAIN) on a conflict."""
        raise NotImplementedError

    def fire_special(self, name: str) -> None:
        """An ``@`` event such as ``@releaseDomain``."""
        raise NotImplementedError


# ---------------------------------------------------------------------------
# Xen 4.17
# ---------------------------------------------------------------------------

@dataclass
class _Access:
    """A node as one transaction sees it (xenstored's accessed_node)."""
    generation: int | None           # global generation at first touch
    check: bool                      # verify the generation at commit
    node: Node | None                # this transaction's view; None: absent
    existed: bool                    # present globally at first touch
    modified: bool = False
    fire: bool = False
    exact: bool = True


@dataclass
class Xen417Transaction:
    accessed: dict[str, _Access] = field(default_factory=dict)


class Xen417Semantics(StoreSemantics):
    """Per-node optimistic transactions; events per changed node."""

    flavour = "xen417"

    def __init__(self, nodes: dict[str, Node], fire: Fire) -> None:
        super().__init__(nodes, fire)
        self._generation = 0

    def begin(self) -> Xen417Transaction:
        return Xen417Transaction()

    def read(self, tx, name):
        if tx is None:
            return self.nodes.get(name)
        acc = tx.accessed.get(name)
        if acc is None:
            node = self.nodes.get(name)
            acc = _Access(generation=node.generation if node else None,
                          check=True, node=node.copy() if node else None,
                          existed=node is not None)
            tx.accessed[name] = acc
        return acc.node

    def write(self, tx, name, node):
        self._generation += 1
        node.generation = self._generation
        if tx is None:
            self.nodes[name] = node
            return
        acc = tx.accessed.get(name)
        if acc is None:
            acc = _Access(generation=None, check=False, node=None,
                          existed=False)
            tx.accessed[name] = acc
        acc.node = node
        acc.modified = True

    def delete(self, tx, name):
        self._generation += 1
        if tx is None:
            self.nodes.pop(name, None)
            return
        acc = tx.accessed[name]
        acc.node = None
        acc.modified = True

    def changed(self, tx, name):
        self._note(tx, name, exact=False)

    def removing(self, tx, name, root):
        # Each removed node fires the watches set exactly on it; the root,
        # watches at or above it too.
        self._note(tx, name, exact=name != root)

    def removed(self, tx, name):
        pass                         # removing() fired for every node

    def _note(self, tx, name: str, exact: bool) -> None:
        if tx is None:
            self._fire_now(name, exact)
            return
        acc = tx.accessed[name]
        if not acc.fire:
            acc.fire = True
            acc.exact = exact
        elif not exact:
            acc.exact = False

    def _fire_now(self, name: str, exact: bool) -> None:
        if exact:
            self._fire(lambda watched: name if watched == name else None)
        else:
            self._fire(lambda watched:
                       name if is_child(name, watched) else None)

    def commit(self, tx):
        for name, acc in tx.accessed.items():
            if acc.check:
                node = self.nodes.get(name)
                if (node.generation if node else None) != acc.generation:
                    raise _conflict()
        for name, acc in tx.accessed.items():
            if not acc.modified:
                continue
            if acc.node is not None:
                self._generation += 1
                node = acc.node.copy()
                node.generation = self._generation
                self.nodes[name] = node
            else:
                self.nodes.pop(name, None)
            # xenstored checks read permission against the node as it was
            # or is: one created and removed inside the transaction fires
            # nothing.
            if acc.fire and (acc.existed or acc.node is not None):
                self._fire_now(name, acc.exact)

    def fire_special(self, name):
        self._fire_now(name, exact=True)


# ---------------------------------------------------------------------------
# Xen 3.1 (tools/xenstore at 3.1.0-branched)
# ---------------------------------------------------------------------------

@dataclass
class Xen31Transaction:
    # The whole store as of the start: a new dict of the committed nodes,
    # which nobody changes in place (a change outside a transaction copies
    # its node first); a node this transaction reads is copied into it
    # then, so that the caller may change it.
    snapshot: dict[str, Node]
    start_generation: int
    changes: dict[str, bool] = field(default_factory=dict)  # name -> recurse
    own: set = field(default_factory=set)   # names copied into the snapshot


class Xen31Semantics(StoreSemantics):
    """Whole-store transactions that fail on any change; one event per
    request."""

    flavour = "xen31"

    def __init__(self, nodes: dict[str, Node], fire: Fire) -> None:
        super().__init__(nodes, fire)
        # xenstored_transaction.c's one global "generation": nodes have
        # none in 3.1, so a commit can only ask "did anything happen?".
        self._generation = 0

    def begin(self) -> Xen31Transaction:
        # do_transaction_start: tdb_copy() of the whole database, so reads
        # inside see the store as it was then, whatever commits meanwhile.
        # Its nodes are copied when first read: copying every node at
        # every start held the harness's one CPU for seconds per run.
        return Xen31Transaction(dict(self.nodes), self._generation)

    def read(self, tx, name):
        if tx is None:
            return self.nodes.get(name)
        node = tx.snapshot.get(name)
        if node is not None and name not in tx.own:
            node = node.copy()
            tx.snapshot[name] = node
            tx.own.add(name)
        return node

    def write(self, tx, name, node):
        if tx is None:
            self.nodes[name] = node
            return
        tx.snapshot[name] = node
        tx.own.add(name)

    def delete(self, tx, name):
        store = self.nodes if tx is None else tx.snapshot
        store.pop(name, None)

    def changed(self, tx, name):
        self._change(tx, name, recurse=False)

    def removing(self, tx, name, root):
        # do_rm reports the removal once, for its root (see removed), never
        # per node of the subtree.
        pass

    def removed(self, tx, name):
        # do_rm: add_change_node(name, true) + fire_watches(name, true).
        self._change(tx, name, recurse=True)

    def _change(self, tx, name: str, recurse: bool) -> None:
        if tx is not None:
            # add_change_node keeps one entry per name, the first, in
            # order; fire_watches does nothing inside a transaction.
            tx.changes.setdefault(name, recurse)
            return
        # add_change_node(NULL, ...) bumps the generation: every change
        # outside a transaction fails every transaction open meanwhile.
        self._generation += 1
        self._fire_changed(name, recurse)

    def _fire_changed(self, name: str, recurse: bool) -> None:
        # xenstored_watch.c fire_watches: watches at or above the node get
        # its path; on rm (recurse) watches below it get their own path,
        # whether or not that node ever existed (add_event only asks
        # whether dom0 may read it, and a missing node is no refusal).
        def match(watched: str) -> str | None:
            if is_child(name, watched):
                return name
            if recurse and is_child(watched, name):
                return watched
            return None
        self._fire(match)

    def commit(self, tx):
        # do_transaction_end: "FIXME: Merge, rather failing on any change":
        # EAGAIN if the generation moved since the start, whatever moved it.
        if tx.start_generation != self._generation:
            raise _conflict()
        # replace_tdb: the copy becomes the store, wholesale.
        self.nodes.clear()
        self.nodes.update(tx.snapshot)
        for name, recurse in tx.changes.items():
            self._fire_changed(name, recurse)
        # Bumped after every commit, even one that changed nothing: two
        # read-only transactions open together cannot both commit.
        self._generation += 1

    def fire_special(self, name):
        # domain_cleanup / do_release: fire_watches(..., "@releaseDomain",
        # false) matches with is_child, under which every name is below
        # "/": a watch on "/" hears @releaseDomain too.  The generation is
        # not bumped (no add_change_node).
        self._fire_changed(name, recurse=False)


# What ``begin`` returns; only the semantics object that made it looks inside.
Transaction = Union[Xen417Transaction, Xen31Transaction]

SEMANTICS = {cls.flavour: cls for cls in (Xen417Semantics, Xen31Semantics)}


def semantics_for(flavour: str, nodes: dict[str, Node],
                  fire: Fire) -> StoreSemantics:
    try:
        cls = SEMANTICS[flavour]
    except KeyError:
        raise ValueError("flavour must be one of %s"
                         % (tuple(SEMANTICS),)) from None
    return cls(nodes, fire)
