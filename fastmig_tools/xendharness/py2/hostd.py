# -*- coding: utf-8 -*-
"""One harness host's dom0 toolstack: the tree's real xend (Python 2.7).

Run by the Python 3 driver as
``python2.7 hostd.py CONTROL_SOCKET RELOCATION_PORT HELPER_DIR`` with
PYTHONPATH pointing at the prepared tree's tools/python, XEND_CONFIG at the
host's xend-config.sxp and XENSTORED_PATH at the host's xenstored.

It starts what ``xend`` starts that migration needs (XendDomain, the
relocation server on 127.0.0.1) and then answers requests on a Unix
socket: one JSON object per line, ``{"op": ..., "args": {...}}``, answered
by ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``.
Every request runs on its own thread, as xend's server does, so a
migration can be watched while it runs.

The operations call the same xend entry points ``xm`` reaches through
xend's servers (XendDomain.domain_migrate, domain_save, ...), never
anything below them.
"""

import Queue
import json
import os
import socket
import sys
import threading
import time
import traceback

CONTROL, RELOCATION_PORT, HELPER_DIR = sys.argv[1], int(sys.argv[2]), sys.argv[3]

# The helpers are where auxbin would find them on an installed dom0
# (/usr/lib/xen/bin); the harness keeps them per tree instead.
import xen.util.auxbin
xen.util.auxbin.path = lambda: HELPER_DIR

import xen.lowlevel.xc as xcmod
import guestkernel
from xen.xend import XendOptions, XendLogging, sxp
xoptions = XendOptions.instance()   # also opens xend.log (logfile option)
from xen.xend import XendDomain
from xen.xend.xenstore.xswatch import xswatch
from xen.xend.xenstore.xstransact import xstransact

VIRQ_NODE = "/harness/virq-dom-exc"
_virq_lock = threading.Lock()
_virq_count = [0]


def _raise_virq(event, domid):
    """VIRQ_DOM_EXC: what xenstored turns into @releaseDomain on a real host."""
    if event not in ("shutdown", "destroyed", "dying"):
        return
    _virq_lock.acquire()
    try:
        _virq_count[0] += 1
        n = _virq_count[0]
    finally:
        _virq_lock.release()
    xstransact.Write(VIRQ_NODE, "count", str(n))


xd = XendDomain.instance()


def _on_virq(_):
    # The callback xend itself registered for @releaseDomain.
    return xd._on_domains_changed(None)


xswatch(VIRQ_NODE, _on_virq)
xcmod.add_listener(_raise_virq)

from xen.xend.server import relocate
relocate.listenRelocation()


class _StreamEnds(object):
    """XendCheckpoint's ``os``, observed where the kernel hands xend the
    end of a stream: restore's ``os.read(fd, 1)`` returning nothing is the
    target's EOF gate opening.  Stamped here because xend makes no
    hypervisor call until completeRestore has introduced the domain,
    written its details and registered its watches.  Everything else is
    the real ``os``."""

    def __init__(self, real):
        self._real = real
        self.lock = threading.Lock()
        self.seen = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def read(self, fd, n):
        data = self._real.read(fd, n)
        if not data:
            entry = {"t": time.time(), "fd": fd,
                     "thread_id": threading.currentThread().ident}
            self.lock.acquire()
            try:
                self.seen.append(entry)
            finally:
                self.lock.release()
        return data

    def forget(self):
        self.lock.acquire()
        try:
            del self.seen[:]
        finally:
            self.lock.release()


from xen.xend import XendCheckpoint
stream_ends = _StreamEnds(XendCheckpoint.os)
XendCheckpoint.os = stream_ends


def _dominfo(domid):
    d = xd.domain_lookup_nr(domid)
    if d is None:
        raise ValueError("no domain %s" % domid)
    return d


def op_ping():
    return {"pid": os.getpid(), "time": time.time()}


def op_create(config):
    """xm create: the config as an sxp string; unpaused as xm does."""
    dominfo = xd.domain_create(sxp.from_string(config))
    dominfo.waitForDevices()       # xm create waits for the hotplug scripts
    xd.domain_unpause(dominfo.getDomid())
    return dominfo.getDomid()


def op_migrate(domid, dst, live, port):
    t0 = time.time()
    xd.domain_migrate(domid, dst, live, 0, port)
    return {"start": t0, "end": time.time()}


def op_save(domid, path, checkpoint=False):
    t0 = time.time()
    xd.domain_save(domid, path, checkpoint)
    return {"start": t0, "end": time.time()}


def op_restore(path, paused=False):
    return xd.domain_restore(path, paused).getDomid()


def op_destroy(domid):
    xd.domain_destroy(domid)


def op_shutdown(domid, reason):
    _dominfo(domid).shutdown(reason)


def op_unpause(domid):
    xd.domain_unpause(domid)


def op_list():
    xd.domains_lock.acquire()
    try:
        xd._refresh()
        found = []
        for d in xd.domains.values():
            found.append({"domid": d.getDomid(), "name": d.getName(),
                          "state": d._stateGet(),
                          "hvm": bool(d.info.is_hvm())})
        return found
    finally:
        xd.domains_lock.release()


def op_hypervisor():
    found = []
    for info in xcmod.xc().domain_getinfo():
        found.append(info)
    return found


def op_xc_calls():
    return xcmod.calls()


def op_forget_xc_calls():
    xcmod.forget_calls()
    stream_ends.forget()


def op_stream_ends():
    """When XendCheckpoint's reads met the end of their stream."""
    stream_ends.lock.acquire()
    try:
        return list(stream_ends.seen)
    finally:
        stream_ends.lock.release()


def op_xc(method, args):
    """Call the hypervisor stand-in directly (as a later patch's code would)."""
    return getattr(xcmod.xc(), method)(*args)


def op_option(name):
    """An xend-config.sxp option as xend reads it (None if unset)."""
    return xoptions.get_config_value(name)


def op_guest_events():
    return list(guestkernel.events)


def op_arm_inflight(domid, requests):
    guestkernel.arm(domid, requests)


def op_settings(**changes):
    xcmod.settings.update(changes)
    return dict(xcmod.settings)


def op_threads():
    return [t.getName() for t in threading.enumerate()]


def op_stacks():
    """Every thread's stack (to see where xend waits)."""
    names = dict((t.ident, t.getName()) for t in threading.enumerate())
    out = {}
    for ident, frame in sys._current_frames().items():
        out["%s-%s" % (names.get(ident, "?"), ident)] = "".join(
            traceback.format_stack(frame))
    return out


def op_exit():
    threading.Timer(0.05, lambda: os._exit(0)).start()


OPS = dict((k[3:], v) for k, v in globals().items() if k.startswith("op_"))


def _native(value):
    """JSON gives unicode; xend (like xm's requests) works with str."""
    if isinstance(value, unicode):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_native(v) for v in value]
    if isinstance(value, dict):
        return dict((_native(k), _native(v)) for k, v in value.items())
    return value


def _serve(conn):
    f = conn.makefile("r")
    try:
        while True:
            line = f.readline()
            if not line:
                return
            request = json.loads(line)
            try:
                result = OPS[request["op"]](**_native(request.get("args", {})))
                answer = {"ok": True, "result": result}
            except Exception:
                answer = {"ok": False, "error": "%s: %s" % (
                    sys.exc_info()[0].__name__, sys.exc_info()[1]),
                    "traceback": traceback.format_exc()}
            conn.sendall(json.dumps(answer, default=str) + "\n")
    finally:
        f.close()
        conn.close()


# More than the harness ever has open at once (a blocking migrate or
# restore, its polls, a stack dump).
CONTROL_WORKERS = 32


def _work(connections):
    while True:
        conn = connections.get()
        try:
            _serve(conn)
        except Exception:
            traceback.print_exc()


def main():
    if os.path.exists(CONTROL):
        os.unlink(CONTROL)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(CONTROL)
    server.listen(16)
    sys.stdout.write("ready %d\n" % os.getpid())
    sys.stdout.flush()
    # A fixed pool, started before xend forks anything: Python 2.7's
    # fork child stops every other thread through that thread's own lock
    # (threading._after_fork), and blocks for good on one held at the
    # fork, as a thread starting or ending holds it.  A thread per
    # connection (the harness polls several times a second) left one in
    # three of test_save_to_file_and_restore's xc_restore children hung
    # between fork and exec.
    connections = Queue.Queue()
    for _ in range(CONTROL_WORKERS):
        t = threading.Thread(target=_work, args=(connections,),
                             name="control")
        t.setDaemon(True)
        t.start()
    while True:
        conn, _ = server.accept()
        connections.put(conn)


main()
