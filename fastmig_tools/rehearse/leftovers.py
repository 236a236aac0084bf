"""What a destroyed source copy left in its host's xenstore: the one
leftovers check of the rehearsal and the property tests (invariant I7).

``left_behind(xst, dominfo, actors)`` reads through the caller's own
connection (xend's may have been reset by a fault) and waits, bounded,
for the backends' own teardown, which they do on their own threads once
the frontends went.  A backend directory its kernel keeps is not
counted: xend cannot remove it, under stock 3.1 neither
(``kept_by_their_kernel``).
"""
from __future__ import annotations

import time

from fastmig_tools.models.blkback import HungBlkback, ShutdownRequestBlkback

__all__ = ["left_behind", "kept_by_their_kernel", "DEVICE_CLASSES"]

DEVICE_CLASSES = ("vbd", "tap", "vif")


def _lost_frontend_event(actor) -> bool:
    """The blkback model's known defect (reported to its owner): when
    ``shutdown-request`` and the frontend's removal reach a protocol
    backend in one wake-up, it starts the drain and drops the frontend
    event, so it never unregisters and its directory stays.  Not xend's
    leftover."""
    return (isinstance(actor, ShutdownRequestBlkback)
            and actor.shutdown_done_at is not None
            and not actor.unregistered)


def kept_by_their_kernel(actors, all_stuck: bool = False) -> set:
    """Backend directories of kernels that hung, whose own xenstore
    requests a fault made fail (they lost an event), or that hit the
    model's known defect; every one if ``all_stuck`` (a hung drain holding
    a dom0's single xenwatch thread, or a reset of every connection)."""
    return set(actor.backend for actor in actors
               if all_stuck or isinstance(actor, HungBlkback)
               or actor.errors or _lost_frontend_event(actor))


def _left(xst, domid, kept) -> list:
    left = []
    dompath = "/local/domain/%d" % domid
    if xst.Read(dompath) is not None:
        left.append(dompath)
    for devclass in DEVICE_CLASSES:
        # The per-domain parent stays, as on a 3.1 dom0: only devices.
        root = "/local/domain/0/backend/%s/%d" % (devclass, domid)
        for devid in xst.List(root):
            path = "%s/%s" % (root, devid)
            if path not in kept:
                left.append(path)
    return left


def left_behind(xst, dominfo, actors, all_stuck: bool = False,
                timeout: float = 2.0) -> list:
    """Paths of the destroyed ``dominfo`` that should be gone and are not
    (empty once clean, or when the source copy lives on: it owns them).
    ``xst`` is an ``xstransact`` (``Read``, ``List``); ``actors`` the
    domain's backend models."""
    domid = dominfo.destroyed_domid
    if domid is None:
        return []
    kept = kept_by_their_kernel(actors, all_stuck)
    deadline = time.monotonic() + timeout
    while True:
        left = _left(xst, domid, kept)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.01)
