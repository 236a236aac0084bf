"""A domain's block devices, captured before anything is torn down.

The drain wait must know every block backend of the domain even after its
frontend entries were removed and after the domain was destroyed (3.1.0's
destroyDomain clears the domid, which made the stock wait vacuous), so the
device list is captured once, from the domid and paths of the live domain,
and handed to every later step.
"""

import logging
import re

from xend_fastmig.store import backend_root, frontend_root

__all__ = ["BLOCK_CLASSES", "BlockDevice", "capture_block_devices",
           "advertises_shutdown_request"]

log = logging.getLogger("xend")

# blktap1 devices ("tap") hold guest I/O exactly like vbds; stock 3.1's
# testDeviceComplete forgot them.
BLOCK_CLASSES = ("vbd", "tap")

_BACKEND_PATH = re.compile(r"^/local/domain/(\d+)/backend/([^/]+)/\d+/[^/]+$")


class BlockDevice:
    """One block device: where its backend lives and how it reports a drain.

    ``devclass`` is the backend's class: a blktap device has its frontend
    under ``device/vbd`` like any disk, but its backend under
    ``backend/tap``.

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


def capture_block_devices(store, domid, dompath):
    """Return ``(devices, problems)`` for the domain's block devices.

    Devices come from the frontend entries (which name their backend,
    wherever it lives) and from dom0's backend directories for the domain
    (a backend whose frontend is already gone may still be draining).
    ``problems`` lists entries that cannot be trusted: the caller must not
    take the fast path when it is not empty, since an unknown backend can
    never positively confirm its drain.  Never writes to the store.
    """
    devices = []
    problems = []
    by_backend = {}
    protocol_of = {}

    def protocol(backend_domid):
        if backend_domid not in protocol_of:
            protocol_of[backend_domid] = advertises_shutdown_request(
                store, backend_domid)
        return protocol_of[backend_domid]

    for devclass in BLOCK_CLASSES:
        for devid in store.xstransact.List(frontend_root(dompath, devclass)):
            frontend = "%s/%s" % (frontend_root(dompath, devclass), devid)
            if not devid.isdigit():
                problems.append("%s: device id %r is not a number"
                                % (frontend, devid))
                continue
            backend = store.xstransact.Read(frontend, "backend")
            if not backend:
                problems.append("%s has no backend key" % frontend)
                continue
            match = _BACKEND_PATH.match(backend)
            if match is None:
                problems.append("%s names an unexpected backend path %r"
                                % (frontend, backend))
                continue
            backend_domid = int(match.group(1))
            if match.group(2) not in BLOCK_CLASSES:
                problems.append("%s names a backend of unknown class %r"
                                % (frontend, match.group(2)))
                continue
            device = BlockDevice(match.group(2), devid, backend,
                                 backend_domid, frontend,
                                 protocol(backend_domid))
            devices.append(device)
            by_backend[backend] = device

        root = backend_root(0, devclass, domid)
        for devid in store.xstransact.List(root):
            backend = "%s/%s" % (root, devid)
            if backend in by_backend:
                continue
            if not devid.isdigit():
                problems.append("%s: device id %r is not a number"
                                % (backend, devid))
                continue
            device = BlockDevice(devclass, devid, backend, 0, None,
                                 protocol(0))
            devices.append(device)
            by_backend[backend] = device
    return devices, problems
