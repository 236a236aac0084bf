"""A domain's block devices, named from dom0's own tree.

A guest owns its frontend directories (``/local/domain/<domid>/device``):
it can rewrite their ``backend`` key to name another guest's backend, or
``/local/domain/0/backend`` itself.  So every path the handover writes,
removes or waits on is built here from trusted parts: the backend
domain's own tree, ``/local/domain/<backend-domid>/backend/<class>/<domid>/<devid>``,
indexed by the migrating domain's id, and kept only when its ``frontend``
and ``frontend-id`` (written by xend when it created the device) name
this domain.  What the guest wrote is at most a hint of which backend
domains to look in, and is logged when it disagrees.

The list is captured once, from the live domain's id: the drain wait must
know every block backend even after the domain was destroyed (3.1.0's
destroyDomain clears the domid, which made the stock wait vacuous).
"""

import logging

from xend_fastmig.store import backend_root, frontend_root

__all__ = ["BLOCK_CLASSES", "FRONTEND_CLASSES", "BlockDevice",
           "capture_block_devices", "advertises_shutdown_request"]

log = logging.getLogger("xend")

# blktap1 devices ("tap") hold guest I/O exactly like vbds; stock 3.1's
# testDeviceComplete forgot them.
BLOCK_CLASSES = ("vbd", "tap")
# Where a block device's frontend lives: a tap device's frontend is a
# vbd like any disk.
FRONTEND_CLASSES = ("vbd", "tap")
DOM0_ID = 0


class BlockDevice:
    """One block device: where its backend lives and how it reports a drain.

    ``backend`` is always dom0-tree-built and checked; ``frontend`` is the
    frontend path the backend names, kept only when it is this domain's.
    ``protocol`` is True when the backend domain implements the
    shutdown-request protocol (it then writes ``shutdown-done``).
    """

    def __init__(self, devclass, devid, backend, backend_domid,
                 frontend=None, protocol=False):
        self.devclass = devclass
        self.devid = devid
        self.backend = backend
        self.backend_domid = backend_domid
        self.frontend = frontend
        self.protocol = protocol

    def name(self):
        return "%s/%s" % (self.devclass, self.devid)

    def __repr__(self):
        return "BlockDevice(%s, backend=%s, protocol=%s)" % (
            self.name(), self.backend, self.protocol)


def advertises_shutdown_request(store, backend_domid):
    """Does the backend domain implement shutdown-request/shutdown-done?"""
    value = store.xstransact.Read(
        "/local/domain/%s/control/feature-shutdown-request" % backend_domid)
    return value is not None and value.strip() == "1"


def _is_number(text):
    return text is not None and text.isdigit()


def _backend_domain_hints(store, domid, dompath):
    """Backend domains the guest's frontends mention: hints, not names.

    A hint only chooses a tree to look in; that tree is indexed by this
    domain's id, so a hint can never lead to another guest's backend.
    """
    hints = [DOM0_ID]
    for fclass in FRONTEND_CLASSES:
        root = frontend_root(dompath, fclass)
        for devid in store.xstransact.List(root):
            value = store.xstransact.Read("%s/%s" % (root, devid),
                                          "backend-id")
            if _is_number(value) and int(value) not in hints:
                hints.append(int(value))
    return hints


def _guest_claims(store, dompath):
    """``{frontend path: backend path}`` as the guest's frontends say."""
    claims = {}
    for fclass in FRONTEND_CLASSES:
        root = frontend_root(dompath, fclass)
        for devid in store.xstransact.List(root):
            frontend = "%s/%s" % (root, devid)
            claims[frontend] = store.xstransact.Read(frontend, "backend")
    return claims


def capture_block_devices(store, domid, dompath):
    """Return ``(devices, problems)`` for the domain's block devices.

    ``devices`` holds only backends found in a backend domain's own tree
    under this domain's id.  ``problems`` lists what makes a positive
    drain confirmation impossible (a backend whose own keys do not name
    this domain): the caller must then not take the fast path.  A
    guest-written ``backend`` key that disagrees with the trusted name is
    logged and never used.  Never writes to the store.
    """
    devices = []
    problems = []
    trusted_frontends = {}
    for backend_domid in _backend_domain_hints(store, domid, dompath):
        protocol = None
        for devclass in BLOCK_CLASSES:
            root = backend_root(backend_domid, devclass, domid)
            for devid in store.xstransact.List(root):
                backend = "%s/%s" % (root, devid)
                if not devid.isdigit():
                    problems.append("%s: device id %r is not a number"
                                    % (backend, devid))
                    continue
                owner = store.xstransact.Read(backend, "frontend-id")
                if owner is None:
                    # Removed by its hotplug cleanup since the listing:
                    # it has drained.
                    continue
                if owner.strip() != str(domid):
                    problems.append("%s names frontend domain %r, not %s"
                                    % (backend, owner, domid))
                    continue
                frontend = store.xstransact.Read(backend, "frontend")
                if frontend not in _own_frontends(dompath, devid):
                    log.warning("fastmig: %s names frontend %r, which is "
                                "not domain %s's device %s; its frontend "
                                "is left alone", backend, frontend, domid,
                                devid)
                    frontend = None
                if protocol is None:
                    protocol = advertises_shutdown_request(store,
                                                           backend_domid)
                devices.append(BlockDevice(devclass, devid, backend,
                                           backend_domid, frontend,
                                           protocol))
                if frontend is not None:
                    trusted_frontends[frontend] = backend
    _log_disagreements(store, domid, dompath, trusted_frontends)
    return devices, problems


def _own_frontends(dompath, devid):
    paths = []
    for fclass in FRONTEND_CLASSES:
        paths.append("%s/%s" % (frontend_root(dompath, fclass), devid))
    return paths


def _log_disagreements(store, domid, dompath, trusted_frontends):
    for frontend, claimed in _guest_claims(store, dompath).items():
        trusted = trusted_frontends.get(frontend)
        if claimed != trusted:
            log.warning("fastmig: domain %s's frontend %s names backend %r; "
                        "dom0's tree says %r: the guest's name is not used",
                        domid, frontend, claimed, trusted)
