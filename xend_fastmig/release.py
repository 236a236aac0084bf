"""Releasing a suspended guest's block devices so that they drain.

What ``XendDomainInfo._releaseDevices(force=True)`` runs.  Only block
devices are released: they hold the guest's in-flight writes, which must
land before the target runs.  Network and other devices stay until the
source copy is destroyed (or re-created by a resume), and nothing here is
ever called on a path the guest could have written.
"""

import logging
import sys

from xend_fastmig import registry
from xend_fastmig.blockdevs import capture_block_devices

__all__ = ["release_block_devices", "release_block_device",
           "tear_down_confirmed", "COMMIT_ATTEMPTS"]

log = logging.getLogger("xend")

# A transaction conflicts only with a concurrent writer of the same
# nodes (the backend's own hotplug scripts); a few retries are plenty.
COMMIT_ATTEMPTS = 20


def release_block_devices(dominfo, store=None):
    """Ask every block backend of ``dominfo`` to drain.  Never raises.

    Uses the devices its handover captured (see ``registry``), else
    captures them now.  Returns the names (``"class/devid"``) of the
    devices whose release failed: their drain cannot be counted on.
    """
    handover = registry.lookup(dominfo)
    devices = None
    if handover is not None:
        store = handover.env.store
        devices = handover.devices
    if store is None:
        from xend_fastmig.store import xend_store
        store = xend_store()
    failed = []
    try:
        if devices is None:
            devices, problems = capture_block_devices(
                store, dominfo.getDomid(), dominfo.dompath)
            for problem in problems:
                log.warning("fastmig: %s", problem)
    except Exception:
        log.error("fastmig: cannot list the block devices of domain %s: %s",
                  dominfo.getDomid(), sys.exc_info()[1])
        return ["(all)"]
    for device in devices:
        try:
            release_block_device(store, device)
        except Exception:
            log.error("fastmig: releasing %s of domain %s failed: %s",
                      device.name(), dominfo.getDomid(), sys.exc_info()[1])
            failed.append(device.name())
    return failed


def release_block_device(store, device):
    """Start one backend's teardown, in one transaction.

    Writes only to a backend directory that still exists: a hotplug
    cleanup may remove it at any moment, and a write would re-create it
    for good (and make the drain wait for a directory nobody removes).

    * a backend whose domain speaks shutdown-request gets
      ``shutdown-request = force`` and will write ``shutdown-done``;
    * a classic 3.1 blkback gets ``online = 0`` and loses its frontend
      directory, so it unregisters, drains, and its hotplug cleanup then
      removes the backend directory: the only drain signal a stock 3.1
      kernel gives.  Its directory is therefore never removed from here.

    Returns False when the backend was already gone (it has drained).
    """
    attempt = 0
    while attempt < COMMIT_ATTEMPTS:
        attempt = attempt + 1
        t = store.xstransact("")
        try:
            if t.read(device.backend + "/frontend-id") is None:
                t.abort()
                return False
            if device.protocol:
                t.write(device.backend + "/shutdown-request", "force")
            else:
                t.write(device.backend + "/online", "0")
                if device.frontend:
                    t.remove(device.frontend)
        except Exception:
            t.abort()
            raise
        if t.commit():
            return True
    raise RuntimeError("%s: the transaction conflicted %d times"
                       % (device.backend, COMMIT_ATTEMPTS))


def tear_down_confirmed(store, device):
    """After ``shutdown-done``: let the drained backend go away.

    The classic teardown (``online = 0``, frontend removed) makes a
    backend that has already flushed unregister, and its hotplug cleanup
    removes its directory, which a resume must see gone before it
    re-creates the device.  Returns False when it was already gone.
    """
    if not device.protocol:
        return True
    plain = device.__class__(device.devclass, device.devid, device.backend,
                             device.backend_domid, device.frontend, False)
    return release_block_device(store, plain)
