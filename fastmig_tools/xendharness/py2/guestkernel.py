# -*- coding: utf-8 -*-
"""The guest kernel of each domain on one harness host (Python 2.7).

Only what xend can observe of a 3.1 PV guest is modelled:

* the xenbus ``control/shutdown`` handler (reboot.c in the 3.1 kernel):
  acknowledges by writing "" and then suspends, powers off or reboots,
  i.e. makes SCHEDOP_shutdown with the matching reason;
* blkfront: connects its devices (frontend ``state`` = Connected) when it
  runs, and at resume re-issues every request that was in flight at the
  suspend (``blkif_recover``) before it writes anything newer;
* its block requests go to the host's dom0 backend process over a Unix
  socket that stands for the shared ring + event channel.

The kernel's state (armed requests, requests in flight, block versions)
is kept in the domain's memory file, so that ``xc_save`` carries it in
the image and the target's kernel resumes from it.
"""

import errno
import json
import os
import socket
import sys
import threading
import time

import xen.lowlevel.xc as xcmod
import xen.lowlevel.xs

RING_SOCKET = os.environ.get("HARNESS_RING_SOCKET", "")
HOST = os.environ.get("HARNESS_HOST", "host")

_kernels = {}
_lock = threading.Lock()
events = []           # (t, what, detail) of every guest action
_events_lock = threading.Lock()


def _event(what, **detail):
    detail["t"] = time.time()
    detail["event"] = what
    _events_lock.acquire()
    try:
        events.append(detail)
    finally:
        _events_lock.release()


def ring_request(backend, slot, version, delay, writer, wait):
    """Put one request on the device's ring; with ``wait`` until it lands.

    Returns the backend's answer (a dict) or raises IOError if there is no
    connected backend for ``backend``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    try:
        s.connect(RING_SOCKET)
        s.sendall(json.dumps({"backend": backend, "slot": slot,
                              "version": version, "delay": delay,
                              "writer": writer, "wait": wait}) + "\n")
        f = s.makefile("r")
        line = f.readline()
        f.close()
    finally:
        s.close()
    if not line:
        raise IOError("backend closed the ring")
    answer = json.loads(line)
    if not answer.get("ok"):
        raise IOError(answer.get("error", "request refused"))
    return answer


class GuestKernel(object):
    def __init__(self, domid):
        self.domid = domid
        self.dompath = "/local/domain/%d" % domid
        self.stopped = False
        self.handle = xen.lowlevel.xs.xs()
        self.thread = threading.Thread(target=self._main,
                                       name="guest-%d" % domid)
        self.thread.setDaemon(True)

    # -- memory -------------------------------------------------------
    def memory(self):
        return xcmod.read_memory(self.domid)

    def store_memory(self, mem):
        xcmod.write_memory(self.domid, mem)

    # -- life cycle ---------------------------------------------------
    def start(self):
        if self.memory().get("hvm"):
            return     # no PV drivers: xend shuts it down via the hypervisor
        self.handle.watch(self.dompath + "/control/shutdown", "shutdown")
        self.thread.start()
        self.connect_frontends()
        mem = self.memory()
        if mem.get("suspended"):
            mem["suspended"] = False
            self.store_memory(mem)
            threading.Thread(target=self.recover, name="blkif_recover-%d"
                             % self.domid).start()

    def stop(self):
        self.stopped = True
        try:
            self.handle.close()
        except Exception:
            pass

    def devices(self):
        found = []
        # blkfront's frontends are device/vbd/<devid> whether the backend
        # is blkback (backend/vbd) or blktap (backend/tap).
        for cls in ("vbd",):
            base = "%s/device/%s" % (self.dompath, cls)
            for dev in self.handle.ls("", base) or []:
                backend = self.handle.read("", "%s/%s/backend" % (base, dev))
                if backend:
                    found.append((cls, dev, backend))
        return found

    def connect_frontends(self):
        for cls, dev, backend in self.devices():
            self.handle.write("", "%s/device/%s/%s/state"
                              % (self.dompath, cls, dev), "4")

    def _main(self):
        while not self.stopped:
            try:
                path, token = self.handle.read_watch()
            except Exception:
                return   # handle closed: the domain is gone
            if self.stopped:
                return
            try:
                reason = self.handle.read("", self.dompath + "/control/shutdown")
            except Exception:
                reason = None
            if not reason:
                continue
            if not xcmod.domain_exists(self.domid):
                return
            info = xcmod.domain_info(self.domid)
            if info["paused"] or info["shutdown"]:
                continue   # a paused guest does not run its xenbus thread
            self.handle.write("", self.dompath + "/control/shutdown", "")
            _event("control_shutdown", domid=self.domid, reason=reason)
            if reason == "suspend":
                self.suspend()
            elif reason in ("poweroff", "halt"):
                xcmod.guest_shutdown(self.domid, xcmod.SHUTDOWN_poweroff)
            elif reason == "reboot":
                xcmod.guest_shutdown(self.domid, xcmod.SHUTDOWN_reboot)

    # -- block I/O ----------------------------------------------------
    def suspend(self):
        """Requests armed by the test are on the ring when the guest stops."""
        mem = self.memory()
        backends = dict((dev, be) for cls, dev, be in self.devices())
        inflight = []
        versions = mem.setdefault("versions", {})
        for req in mem.get("armed", []):
            key = "%s/%s" % (req["dev"], req["slot"])
            version = versions.get(key, 0) + 1
            versions[key] = version
            be = backends.get(str(req["dev"]))
            entry = {"dev": str(req["dev"]), "class": req.get("class", "vbd"),
                     "slot": req["slot"], "version": version}
            try:
                ring_request(be, req["slot"], version, req["delay"],
                             "%s-dom%d" % (HOST, self.domid), False)
            except Exception:
                _event("io_error", domid=self.domid, error=str(sys.exc_info()[1]))
                continue
            inflight.append(entry)
        mem["armed"] = []
        mem["inflight"] = inflight
        mem["suspended"] = True
        self.store_memory(mem)
        _event("suspend", domid=self.domid, inflight=len(inflight))
        xcmod.guest_shutdown(self.domid, xcmod.SHUTDOWN_suspend)

    def recover(self):
        """blkif_recover: re-issue what was in flight, then write newer data."""
        mem = self.memory()
        backends = dict((dev, be) for cls, dev, be in self.devices())
        writer = "%s-dom%d" % (HOST, self.domid)
        versions = mem.setdefault("versions", {})
        try:
            for req in mem.get("inflight", []):
                be = backends.get(req["dev"])
                ring_request(be, req["slot"], req["version"], 0, writer, True)
            _event("recovered", domid=self.domid,
                   reissued=len(mem.get("inflight", [])))
            for req in mem.get("inflight", []):
                be = backends.get(req["dev"])
                key = "%s/%s" % (req["dev"], req["slot"])
                versions[key] = versions.get(key, 0) + 1
                ring_request(be, req["slot"], versions[key], 0, writer, True)
        except Exception:
            _event("io_error", domid=self.domid, error=str(sys.exc_info()[1]))
            return
        mem["inflight"] = []
        mem["versions"] = versions
        if xcmod.domain_exists(self.domid):
            self.store_memory(mem)
        _event("newer_written", domid=self.domid)


def arm(domid, requests):
    """Requests that will be in flight at the guest's next suspend."""
    mem = xcmod.read_memory(domid)
    mem.setdefault("armed", []).extend(requests)
    xcmod.write_memory(domid, mem)


def _on_hypervisor_event(event, domid):
    if event == "unpause":
        _lock.acquire()
        try:
            if domid in _kernels:
                return
            kernel = GuestKernel(domid)
            _kernels[domid] = kernel
        finally:
            _lock.release()
        _event("boot" if not kernel.memory().get("suspended") else "resume",
               domid=domid)
        kernel.start()
    elif event == "resume":
        domid, fast = domid
        _lock.acquire()
        try:
            kernel = _kernels.get(domid)
        finally:
            _lock.release()
        _event("resume_at_source", domid=domid, fast=fast)
        if kernel is not None:
            mem = kernel.memory()
            mem["suspended"] = False
            kernel.store_memory(mem)
            kernel.connect_frontends()
            if not fast:
                threading.Thread(target=kernel.recover).start()
    elif event == "destroyed":
        _lock.acquire()
        try:
            kernel = _kernels.pop(domid, None)
        finally:
            _lock.release()
        if kernel is not None:
            kernel.stop()


xcmod.add_listener(_on_hypervisor_event)
