"""Each semantics object's decisions, pinned on a bare tree.

Xen417Semantics is also held to the real daemon by the conformance suite;
Xen31Semantics has no daemon to be held to, so these tests, read against
tools/xenstore at xen.git 3.1.0-branched, are what keeps it honest.
"""
from __future__ import annotations

import errno

import pytest

from fastmig_tools.xenstore.embedded import EmbeddedXenstore
from fastmig_tools.xenstore.lowlevel import XenstoreError
from fastmig_tools.xenstore.semantics import (
    Node, Xen31Semantics, Xen417Semantics, is_child, semantics_for)


class Tree:
    """A committed tree, some watches, and the events they got."""

    def __init__(self, cls, watches=("/",)):
        self.nodes: dict[str, Node] = {}
        self.watches = list(watches)
        self.events: list[tuple[str, str]] = []   # (watch node, event path)
        self.semantics = cls(self.nodes, self._fire)
        self.semantics.write(None, "/", Node(b"", [], [(0, 0)]))

    def _fire(self, match):
        for watched in self.watches:
            path = match(watched)
            if path is not None:
                self.events.append((watched, path))

    def add(self, tx, name, value=b""):
        """Write ``name`` (its parent exists) as a request would."""
        s = self.semantics
        node = s.read(tx, name)
        if node is None:
            parent_name = name.rsplit("/", 1)[0] or "/"
            parent = s.read(tx, parent_name)
            parent = parent if tx is not None else parent.copy()
            parent.children.append(name.rsplit("/", 1)[1])
            s.write(tx, parent_name, parent)
            node = Node(value, [], [(0, 0)])
        else:
            node = node if tx is not None else node.copy()
            node.value = value
        s.write(tx, name, node)
        s.changed(tx, name)

    def remove(self, tx, name):
        """rm of a leaf-or-subtree ``name``, as a request would."""
        s = self.semantics

        def down(n):
            for child in list(s.read(tx, n).children):
                down(n + "/" + child)
            s.delete(tx, n)
            s.removing(tx, n, name)
        parent_name = name.rsplit("/", 1)[0] or "/"
        parent = s.read(tx, parent_name)
        down(name)
        parent = parent if tx is not None else parent.copy()
        parent.children.remove(name.rsplit("/", 1)[1])
        s.write(tx, parent_name, parent)
        s.removed(tx, name)

    def take_events(self):
        events, self.events = self.events, []
        return events


def conflicts(semantics, tx) -> bool:
    try:
        semantics.commit(tx)
    except XenstoreError as exc:
        assert exc.errno == errno.EAGAIN
        return True
    return False


def test_is_child_puts_every_name_below_the_root():
    assert is_child("/a/b", "/a") and is_child("/a", "/a")
    assert not is_child("/ab", "/a") and not is_child("/a", "/a/b")
    assert is_child("@releaseDomain", "/")


def test_flavour_picks_the_semantics_and_refuses_others():
    assert isinstance(semantics_for("xen31", {}, lambda m: None),
                      Xen31Semantics)
    assert isinstance(semantics_for("xen417", {}, lambda m: None),
                      Xen417Semantics)
    assert isinstance(EmbeddedXenstore("xen31")._semantics, Xen31Semantics)
    assert isinstance(EmbeddedXenstore()._semantics, Xen417Semantics)
    with pytest.raises(ValueError):
        EmbeddedXenstore(flavour="xen40")


# ---------------------------------------------------------------------------
# Xen 3.1
# ---------------------------------------------------------------------------

def test_xen31_transaction_reads_the_store_as_it_was_at_its_start():
    t = Tree(Xen31Semantics)
    t.add(None, "/a", b"old")
    tx = t.semantics.begin()
    t.add(None, "/a", b"new")
    assert t.semantics.read(tx, "/a").value == b"old"
    assert t.semantics.read(None, "/a").value == b"new"


@pytest.mark.parametrize("meanwhile", ["unrelated write", "empty commit",
                                       "rm"])
def test_xen31_any_change_or_commit_meanwhile_conflicts(meanwhile):
    t = Tree(Xen31Semantics)
    t.add(None, "/gone")
    tx = t.semantics.begin()
    t.add(tx, "/mine", b"1")
    if meanwhile == "unrelated write":
        t.add(None, "/elsewhere")
    elif meanwhile == "empty commit":
        t.semantics.commit(t.semantics.begin())
    else:
        t.remove(None, "/gone")
    assert conflicts(t.semantics, tx)
    assert "/mine" not in t.nodes


def test_xen31_special_events_and_failed_commits_do_not_conflict():
    t = Tree(Xen31Semantics)
    tx, loser = t.semantics.begin(), t.semantics.begin()
    t.add(loser, "/l")
    other = t.semantics.begin()
    t.semantics.fire_special("@releaseDomain")
    t.semantics.commit(other)
    assert conflicts(t.semantics, loser)      # the commit of "other"
    fresh = t.semantics.begin()
    assert conflicts(t.semantics, tx)          # also the commit of "other"
    t.semantics.fire_special("@releaseDomain")
    assert not conflicts(t.semantics, fresh)   # neither event nor failure


def test_xen31_commit_replaces_the_store_and_fires_in_first_change_order():
    # A watch below /te/a hears nothing: the rm's recursive entry lost to
    # the write's (add_change_node keeps the first entry of a name).
    t = Tree(Xen31Semantics, watches=["/te", "/te/a/never"])
    t.add(None, "/te")
    t.take_events()
    tx = t.semantics.begin()
    t.add(tx, "/te/a")
    t.add(tx, "/te/a/b", b"1")
    t.remove(tx, "/te/a")
    assert t.take_events() == []               # nothing until the commit
    t.semantics.commit(tx)
    assert t.take_events() == [("/te", "/te/a"), ("/te", "/te/a/b")]
    assert sorted(t.nodes) == ["/", "/te"]


def test_xen31_rm_fires_once_up_and_for_every_watch_below():
    t = Tree(Xen31Semantics,
             watches=["/r/a/b", "/r/a", "/r", "/r/a/b/never", "/elsewhere"])
    t.add(None, "/r")
    t.add(None, "/r/a")
    t.add(None, "/r/a/b")
    t.take_events()
    t.remove(None, "/r/a")
    assert t.take_events() == [
        ("/r/a/b", "/r/a/b"), ("/r/a", "/r/a"), ("/r", "/r/a"),
        ("/r/a/b/never", "/r/a/b/never")]


def test_xen31_special_event_reaches_a_watch_on_the_root():
    t = Tree(Xen31Semantics, watches=["/", "@releaseDomain", "/local"])
    t.semantics.fire_special("@releaseDomain")
    assert t.take_events() == [("/", "@releaseDomain"),
                               ("@releaseDomain", "@releaseDomain")]


# ---------------------------------------------------------------------------
# Xen 4.17
# ---------------------------------------------------------------------------

def test_xen417_conflicts_only_on_a_node_the_transaction_touched():
    t = Tree(Xen417Semantics)
    t.add(None, "/mine", b"0")
    t.add(None, "/seen", b"0")
    tx = t.semantics.begin()
    t.add(tx, "/mine", b"1")
    t.add(None, "/elsewhere")
    t.semantics.commit(t.semantics.begin())    # an empty commit meanwhile
    assert not conflicts(t.semantics, tx)
    assert t.nodes["/mine"].value == b"1"
    tx = t.semantics.begin()
    t.semantics.read(tx, "/seen")
    t.add(None, "/seen", b"1")
    assert conflicts(t.semantics, tx)


def test_xen417_rm_fires_per_node_exactly_and_up_from_the_root():
    t = Tree(Xen417Semantics,
             watches=["/r/a/b", "/r/a", "/r", "/r/a/b/never"])
    t.add(None, "/r")
    t.add(None, "/r/a")
    t.add(None, "/r/a/b")
    t.take_events()
    t.remove(None, "/r/a")
    assert t.take_events() == [("/r/a/b", "/r/a/b"), ("/r/a", "/r/a"),
                               ("/r", "/r/a")]


def test_xen417_node_created_and_removed_in_a_transaction_fires_nothing():
    t = Tree(Xen417Semantics, watches=["/x"])
    t.add(None, "/x")
    t.take_events()
    tx = t.semantics.begin()
    t.add(tx, "/x/tmp")
    t.remove(tx, "/x/tmp")
    t.add(tx, "/x/kept")
    t.semantics.commit(tx)
    assert t.take_events() == [("/x", "/x/kept")]


def test_xen417_special_event_reaches_only_its_own_watch():
    t = Tree(Xen417Semantics, watches=["/", "@releaseDomain"])
    t.semantics.fire_special("@releaseDomain")
    assert t.take_events() == [("@releaseDomain", "@releaseDomain")]
