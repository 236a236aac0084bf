"""The one leftovers check (fastmig_tools.rehearse.leftovers): what a
destroyed source copy left is counted, what its kernel keeps is not."""
from __future__ import annotations

import types

import pytest

from fastmig_tools.models.blkback import HungBlkback
from fastmig_tools.rehearse.leftovers import kept_by_their_kernel, left_behind
from fastmig_tools.xenstore.embedded import EmbeddedXenstore
from fastmig_tools.xenstore.xend_api import XendApi

pytestmark = pytest.mark.timeout(30)

VBD = "/local/domain/0/backend/vbd/7/51712"
TAP = "/local/domain/0/backend/tap/7/51728"


class _Backend:
    """A kernel's backend as the check sees it."""


def _actor(backend, cls=_Backend, errors=()):
    # The check reads attributes only: no threads, no store.
    actor = cls.__new__(cls)
    actor.backend = backend
    actor.errors = list(errors)
    return actor


@pytest.fixture
def xst():
    store = EmbeddedXenstore()
    api = XendApi(store.connect())
    try:
        yield api.xstransact
    finally:
        api.close()


def test_what_a_destroyed_copy_left_is_counted(xst):
    xst.Write("/local/domain/7", "name", "guest")
    xst.Write(VBD, "state", "6")
    xst.Write(TAP, "state", "6")
    dominfo = types.SimpleNamespace(destroyed_domid=7)
    actors = [_actor(VBD), _actor(TAP)]
    assert left_behind(xst, dominfo, actors, timeout=0.05) == [
        "/local/domain/7", VBD, TAP]
    # A hung kernel keeps its directory; so does one whose requests failed.
    kept = [_actor(VBD, HungBlkback), _actor(TAP, errors=[OSError()])]
    assert kept_by_their_kernel(kept) == {VBD, TAP}
    assert left_behind(xst, dominfo, kept, timeout=0.05) == [
        "/local/domain/7"]
    assert left_behind(xst, dominfo, actors, all_stuck=True,
                       timeout=0.05) == ["/local/domain/7"]


def test_a_live_copy_owns_its_nodes(xst):
    xst.Write(VBD, "state", "4")
    dominfo = types.SimpleNamespace(destroyed_domid=None)
    assert left_behind(xst, dominfo, [_actor(VBD)], timeout=0.05) == []


def test_it_waits_for_the_backends_own_teardown(xst):
    import threading
    xst.Write(VBD, "state", "6")
    dominfo = types.SimpleNamespace(destroyed_domid=7)
    timer = threading.Timer(0.1, xst.Remove, (VBD,))
    timer.start()
    try:
        assert left_behind(xst, dominfo, [_actor(VBD)], timeout=5.0) == []
    finally:
        timer.join()
