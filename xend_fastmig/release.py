"""Our fork of ``XendDomainInfo._releaseDevices(suspend, force)``."""

import logging
import sys

from xend_fastmig.blockdevs import BLOCK_CLASSES, capture_block_devices

__all__ = ["release_devices"]

log = logging.getLogger("xend")


def release_devices(dominfo, store, suspend=False, force=False,
                    devices=None):
    """Release the domain's devices.  Never raises.

    Without ``force`` this is stock 3.1: an HVM domain being suspended only
    has its device model stopped; otherwise one transaction removes every
    ``device/<class>/<devid>`` entry of the domain.

    With ``force`` every block device is asked to tear down so that its
    backend drains the guest's in-flight requests and then says so:

    * a backend whose domain advertises shutdown-request gets
      ``shutdown-request = force`` and will write ``shutdown-done``;
    * a classic 3.1 blkback gets ``online = 0`` and loses its frontend
      directory, so it unregisters, drains, and udev's hotplug cleanup then
      removes the backend directory: that disappearance is the only drain
      signal a stock 3.1 kernel gives.  This path therefore never deletes a
      block backend's directory itself (the 2008 patch did, and so threw
      the signal away and waited for nothing).

    Other devices are released as stock's forced ``destroyDevice`` does and
    are not waited for.  ``devices`` is the list captured by
    ``capture_block_devices`` before anything was torn down; it is captured
    here when not given.  Returns the list of block devices (as
    ``"class/devid"``) whose release failed; the caller must not count on
    their drain.
    """
    if suspend and dominfo.image:
        dominfo.image.destroy(suspend)
        return []
    if not force:
        _release_stock(dominfo, store)
        return []

    if devices is None:
        devices, problems = capture_block_devices(
            store, dominfo.getDomid(), dominfo.dompath)
        for problem in problems:
            log.warning("fastmig: %s", problem)
    failed = []
    for device in devices:
        try:
            _release_block(dominfo, store, device)
        except Exception:
            log.error("fastmig: releasing %s of domain %s failed: %s",
                      device.name(), dominfo.getDomid(), sys.exc_info()[1])
            failed.append(device.name())
    try:
        _release_others(dominfo, store)
    except Exception:
        # Only listing them can fail here; they are not waited for, and
        # the domain's destruction releases them later in any case.
        log.error("fastmig: releasing the other devices of domain %s "
                  "failed: %s", dominfo.getDomid(), sys.exc_info()[1])
    return failed


def _release_block(dominfo, store, device):
    if device.protocol:
        store.xstransact.Write(device.backend, "shutdown-request", "force")
    else:
        store.xstransact.Write(device.backend, "online", "0")
        if device.frontend:
            store.xstransact.Remove(device.frontend)
    store.xstransact.Remove("%s/device/%s/%s" % (
        dominfo.vmpath, device.devclass, device.devid))


def _release_others(dominfo, store):
    root = "%s/device" % dominfo.dompath
    for devclass in store.xstransact.List(root):
        if devclass in BLOCK_CLASSES:
            continue
        for devid in store.xstransact.List("%s/%s" % (root, devclass)):
            try:
                dominfo.getDeviceController(devclass).destroyDevice(
                    devid, True)
            except Exception:
                log.warning("fastmig: releasing %s/%s of domain %s "
                            "failed: %s", devclass, devid,
                            dominfo.getDomid(), sys.exc_info()[1])


def _release_stock(dominfo, store):
    while True:
        t = store.xstransact("%s/device" % dominfo.dompath)
        try:
            for devclass in t.list():
                for dev in t.list(devclass):
                    try:
                        t.remove(dev)
                    except Exception:
                        log.exception("Device release failed: %s; %s; %s",
                                      dominfo.getName(), devclass, dev)
        except Exception:
            t.abort()
            log.exception("Device release failed: %s", dominfo.getName())
            return
        if t.commit():
            return
