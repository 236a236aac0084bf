"""Small stand-ins for the unit tests of ``xend_fastmig``.

These tests run on Python 2.7 as well as 3 (the code they test runs inside
xend), so this file keeps to syntax both understand.  The fakes pin down
the core's decisions; behaviour against a real xenstored is proven by the
integration tests.
"""

import sys
import threading

from fastmig_tools.models.resume31 import resume_domain


class FakeXenstore(object):
    """A dict-backed xenstore with xend's xstransact/xswatch API.

    Watch callbacks run on one watcher thread, as in xend.  ``ops`` records
    every write and removal as ``(op, path)`` in order.
    """

    def __init__(self, watches=True):
        self.nodes = {}
        self.lock = threading.RLock()
        self.ops = []
        self.watches = []
        self.events = []
        self.event_ready = threading.Condition(self.lock)
        self.stopped = False
        self.fail = {}
        store = self

        class xstransact(object):
            def __init__(self, path=""):
                self.path = path.rstrip("/")

            def _full(self, key):
                if self.path:
                    return self.path + "/" + key
                return key

            def read(self, key):
                return store.read(self._full(key))

            def write(self, key, value):
                store.write(self._full(key), value)

            def remove(self, key):
                store.remove(self._full(key))

            def list(self, *keys):
                if not keys:
                    return store.list(self.path)
                out = []
                for key in keys:
                    for child in store.list(self._full(key)):
                        out.append(key + "/" + child)
                return out

            def commit(self):
                return True

            def abort(self):
                return True

            def Read(cls, path, *keys):
                if keys:
                    path = path + "/" + keys[0]
                return store.read(path)
            Read = classmethod(Read)

            def Write(cls, path, *args):
                for index in range(0, len(args), 2):
                    store.write(path + "/" + args[index], args[index + 1])
            Write = classmethod(Write)

            def Remove(cls, path, *keys):
                if not keys:
                    store.remove(path)
                for key in keys:
                    store.remove(path + "/" + key)
            Remove = classmethod(Remove)

            def List(cls, path, *keys):
                return store.list(path)
            List = classmethod(List)

        class xswatch(object):
            def __init__(self, path, fn, *args):
                self.path = path
                self.fn = fn
                self.args = args
                store.add_watch(self)

            def unwatch(self):
                store.remove_watch(self)

        self.xstransact = xstransact
        if watches:
            self.xswatch = xswatch
            self.thread = threading.Thread(target=self._watcher)
            self.thread.daemon = True
            self.thread.start()
        else:
            self.xswatch = None

    # -- store operations -------------------------------------------------

    def _check_fail(self, op, path):
        error = self.fail.get(op)
        if error is not None and path.startswith(error[0]):
            raise RuntimeError(error[1], "injected failure")

    def read(self, path):
        self._check_fail("read", path)
        self.lock.acquire()
        try:
            return self.nodes.get(path)
        finally:
            self.lock.release()

    def write(self, path, value):
        self._check_fail("write", path)
        self.lock.acquire()
        try:
            parts = path.split("/")
            for depth in range(2, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in self.nodes:
                    self.nodes[parent] = ""
            self.nodes[path] = value
            self.ops.append(("write", path))
            self._fire(path)
        finally:
            self.lock.release()

    def remove(self, path):
        self.lock.acquire()
        try:
            for node in list(self.nodes.keys()):
                if node == path or node.startswith(path + "/"):
                    del self.nodes[node]
            self.ops.append(("remove", path))
            self._fire(path)
        finally:
            self.lock.release()

    def list(self, path):
        self.lock.acquire()
        try:
            prefix = path.rstrip("/") + "/"
            children = []
            for node in self.nodes.keys():
                if node.startswith(prefix):
                    child = node[len(prefix):].split("/")[0]
                    if child not in children:
                        children.append(child)
            children.sort()
            return children
        finally:
            self.lock.release()

    def exists(self, path):
        return self.read(path) is not None

    # -- watches ----------------------------------------------------------

    def add_watch(self, watch):
        self.lock.acquire()
        try:
            self.watches.append(watch)
            self.events.append((watch, watch.path))
            self.event_ready.notify()
        finally:
            self.lock.release()

    def remove_watch(self, watch):
        self.lock.acquire()
        try:
            if watch in self.watches:
                self.watches.remove(watch)
        finally:
            self.lock.release()

    def _fire(self, path):
        for watch in self.watches:
            if path == watch.path or path.startswith(watch.path + "/") \
                    or watch.path.startswith(path + "/"):
                self.events.append((watch, path))
        self.event_ready.notify()

    def _watcher(self):
        while True:
            self.lock.acquire()
            try:
                while not self.events and not self.stopped:
                    self.event_ready.wait()
                if self.stopped:
                    return
                watch, path = self.events.pop(0)
            finally:
                self.lock.release()
            # Delivered even if unwatched meanwhile: late calls happen.
            if not watch.fn(path, *watch.args):
                self.remove_watch(watch)

    def stop(self):
        self.lock.acquire()
        try:
            self.stopped = True
            self.event_ready.notify()
        finally:
            self.lock.release()

    def active_watches(self):
        return len(self.watches)


def write_pv_domain(store, domid, vbds=(51712,), taps=(), vifs=(0,),
                    backend_domid=0, protocol=False):
    """Write a running 3.1 PV domain's device entries; returns dompath.

    As xend 3.1's DevController writes them: the frontend names its
    backend (``backend``, ``backend-id``: guest-writable), the backend its
    frontend (``frontend``, ``frontend-id``: dom0's own tree).
    """
    dompath = "/local/domain/%d" % domid
    store.write(dompath + "/vm", "/vm/uuid-%d" % domid)
    for devclass, devids in (("vbd", vbds), ("tap", taps), ("vif", vifs)):
        # 3.1's blktap frontends live under device/vbd like any disk.
        frontclass = devclass
        if devclass == "tap":
            frontclass = "vbd"
        for devid in devids:
            front = "%s/device/%s/%s" % (dompath, frontclass, devid)
            back = "/local/domain/%d/backend/%s/%d/%s" % (
                backend_domid, devclass, domid, devid)
            store.write(front + "/backend", back)
            store.write(front + "/backend-id", str(backend_domid))
            store.write(front + "/state", "4")
            store.write(back + "/frontend", front)
            store.write(back + "/frontend-id", str(domid))
            store.write(back + "/online", "1")
            store.write(back + "/state", "4")
            store.write("/vm/uuid-%d/device/%s/%s/frontend" % (
                domid, devclass, devid), front)
    if protocol:
        store.write("/local/domain/%d/control/feature-shutdown-request"
                    % backend_domid, "1")
    return dompath


class FakeInfo(dict):
    def __init__(self, hvm=False, notes=None):
        dict.__init__(self, name_label="guest")
        self.hvm = hvm
        self.notes = notes or {}

    def is_hvm(self):
        return self.hvm

    def get_notes(self):
        return self.notes


class VmError(Exception):
    """xend's VmError, as 3.1's DevController.createDevice raises it."""


class FakeDomInfo(object):
    """The XendDomainInfo surface the handover uses; records calls in order.

    ``journal`` is shared with whatever else a test wants ordered against
    these calls (socket events, backend drains).  The patched methods
    follow the series' hunks: ``_releaseDevices(force=True)`` runs
    ``release.release_block_devices``, ``testDeviceComplete(io_done=True)``
    runs ``drain.wait_for_drain``, ``resumeDomain(devices_released=True)``
    re-creates the devices even for a SUSPEND_CANCEL guest.  As 3.1, the
    re-creating resume refuses a device whose old backend directory is
    still there, and libxc refuses a non-cooperative HVM resume; both are
    logged and swallowed, as xend's resumeDomain does.  ``layout`` (the
    keywords of ``write_pv_domain``) is what ``_createDevices`` writes
    again.
    """

    def __init__(self, store, domid=7, journal=None, hvm=False, notes=None,
                 layout=None, backend_domid=0):
        self.store = store
        self.domid = domid
        self.dompath = "/local/domain/%d" % domid
        self.vmpath = "/vm/uuid-%d" % domid
        self.name = "guest"
        self.info = FakeInfo(hvm, notes)
        self.image = None
        if journal is None:
            journal = []
        self.journal = journal
        self.layout = layout
        self.backend_domid = backend_domid
        self.state = "suspended"
        self.releases = []
        self.resume_errors = []
        self.destroyed_devices = []

    def _note(self, what):
        self.journal.append(what)

    def getDomid(self):
        return self.domid

    def getName(self):
        return self.name

    def setName(self, name):
        self.name = name

    def shutdown(self, reason):
        self._note("shutdown:" + reason)

    def waitForShutdown(self):
        self._note("waitForShutdown")

    def migrateDevices(self, network, dst, step, name):
        self._note("migrateDevices:%d" % step)

    def destroyDomain(self):
        self._note("destroyDomain")
        self.domid = None
        self.state = "destroyed"
        self.store.remove(self.dompath + "/device")

    def _releaseDevices(self, suspend=False, force=False):
        self.releases.append((suspend, force))
        if force:
            from xend_fastmig import release
            return release.release_block_devices(self, self.store)
        if suspend and self.image:
            self.image.destroy(suspend)
            return None
        self._note("_releaseDevices")
        self.store.remove(self.dompath + "/device")
        return None

    def testDeviceComplete(self, io_done=False):
        if io_done:
            from xend_fastmig import drain
            return drain.wait_for_drain(self)
        self._note("testDeviceComplete")
        return None

    def resumeDomain(self, devices_released=False):
        self._note("resumeDomain")
        if self.domid is None:
            return
        try:
            resume_domain(self, devices_released)
            self.state = "resumed"
        except Exception:
            self.resume_errors.append(str(sys.exc_info()[1]))

    # The steps of 3.1's re-creating resume that change nothing here.
    def testvifsComplete(self):
        self._note("testvifsComplete")

    def _resetChannels(self):
        self._note("_resetChannels")

    def _removeDom(self, key):
        self.store.remove("%s/%s" % (self.dompath, key))

    def _createChannels(self):
        self._note("_createChannels")

    def _introduceDomain(self):
        self._note("_introduceDomain")

    def _storeDomDetails(self):
        self._note("_storeDomDetails")

    def xc_domain_resume(self, fast):
        self._note("domain_resume:%d" % fast)

    def _createDevices(self):
        for devclass in ("vbd", "tap"):
            root = "/local/domain/%d/backend/%s/%d" % (
                self.backend_domid, devclass, self.domid)
            left = self.store.list(root)
            if left:
                raise VmError("Device %s/%s is already connected."
                              % (devclass, left[0]))
        self._note("_createDevices")
        if self.layout is not None:
            write_pv_domain(self.store, self.domid,
                            backend_domid=self.backend_domid, **self.layout)

    def getDeviceController(self, devclass):
        dominfo = self

        class Controller(object):
            def destroyDevice(self, devid, force):
                dominfo.destroyed_devices.append((devclass, devid, force))
                dominfo.store.remove("%s/device/%s/%s" % (
                    dominfo.dompath, devclass, devid))
        return Controller()


class FakePlatform(object):
    """xc_save and the handover's platform seam.

    ``run_xc_save`` writes a small image and suspends on the way;
    ``domain_running`` asks the domain objects in ``domains``; ``error``
    is the XendError stand-in.
    """

    def __init__(self, journal, image=b"IMAGE" * 10, fail_save=None,
                 domains=()):
        self.journal = journal
        self.image = image
        self.fail_save = fail_save
        self.domains = list(domains)
        self.errors = []

    def config_string(self, dominfo):
        return "(domain (name guest))"

    def run_xc_save(self, fd, dominfo, live, hvm, on_suspend):
        import os
        os.write(fd, self.image[:10])
        on_suspend()
        self.journal.append("suspended")
        if self.fail_save is not None:
            raise self.fail_save
        os.write(fd, self.image[10:])
        self.journal.append("image sent")

    def write_device_model_state(self, fd, domid):
        self.journal.append("device model state")

    def domain_running(self, domid):
        for dominfo in self.domains:
            if dominfo.getDomid() == domid and domid is not None:
                return dominfo.state in ("running", "resumed")
        return False

    def error(self, message):
        return PlatformError(message)


class PlatformError(Exception):
    """The platform's error (XendError inside xend)."""
