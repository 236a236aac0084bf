# -*- coding: utf-8 -*-
"""Stand-in for Xen 3.1's ``xen.lowlevel.xc`` (tools/python/xen/lowlevel/xc/xc.c).

There is no hypervisor on this machine, so this module *is* the
hypervisor for one harness host: it keeps the domain table, answers the
calls xend makes with the shapes xc.c returns, and records every call so a
test can compare two trees' hypervisor traffic.

Where xend's behaviour depends on a hypervisor/libxc decision, this follows
3.1's libxc:

* ``domain_destroy`` relinquishes the domain's memory inside the hypercall
  (non-preemptible in 3.1): it takes ``destroy_seconds_per_gb`` per GB and
  the domain reads as ``dying`` meanwhile.
* ``domain_resume(dom, 0)`` of an HVM guest fails with "Cannot resume
  uncooperative HVM guests" (tools/libxc/xc_resume.c).
* a domain changing state (shutdown, destroyed) raises VIRQ_DOM_EXC; on a
  real host xenstored turns that into ``@releaseDomain``.  The
  hypervisor-less xenstored never does, so the stand-in writes a private
  node that the host process watches through xend's own ``xswatch`` and
  answers with the very callback xend registered for ``@releaseDomain``.

Guest memory lives in files under ``$HARNESS_HV_DIR/mem/<domid>`` so that
the ``xc_save``/``xc_restore`` helper processes can read and write it, as
the real helpers map guest pages.  Runs on Python 2.7 inside xend.
"""

import os
import sys
import threading
import time
import json

__all__ = ["xc", "Error"]


XEN_SCHEDULER_SEDF = 4
XEN_SCHEDULER_CREDIT = 5


class Error(RuntimeError):
    """xen.lowlevel.xc.Error, a RuntimeError as in xc.c."""


_HV_DIR = os.environ.get("HARNESS_HV_DIR", "/tmp/harness-hv")
_FIRST_DOMID = int(os.environ.get("HARNESS_FIRST_DOMID", "1"))
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend, SHUTDOWN_crash = 0, 1, 2, 3

# Mutable by the host process (control channel): the hypervisor's timing
# and the faults a test injects.
settings = {
    "destroy_seconds_per_gb": float(os.environ.get(
        "HARNESS_DESTROY_SECONDS_PER_GB", "0.05")),
    "total_memory_kb": 64 * 1024 * 1024,
    "fail_unpause": False,
    "fail_create": False,
}

_lock = threading.RLock()
_calls = []
_listeners = []        # fn(event, domid) called after a state change
_next_domid = [_FIRST_DOMID]
_domains = {}
_handle_fd = [None]
_next_port = [10]


def _now():
    return time.time()


class _Domain(object):
    def __init__(self, domid, hvm, handle, ssidref):
        self.domid = domid
        self.hvm = hvm
        self.handle = list(handle or [0] * 16)
        self.ssidref = ssidref
        self.paused = True
        self.shutdown = False
        self.shutdown_reason = 0
        self.dying = False
        self.crashed = False
        self.max_vcpus = 1
        self.maxmem_kb = 0
        self.mem_kb = 0
        self.shadow_mb = 0
        self.created = _now()
        self.params = {}

    def info(self):
        running = (not self.paused and not self.shutdown and not self.dying)
        return {
            "domid": self.domid, "online_vcpus": self.max_vcpus,
            "max_vcpu_id": self.max_vcpus - 1, "hvm": int(self.hvm),
            "dying": int(self.dying), "crashed": int(self.crashed),
            "shutdown": int(self.shutdown), "paused": int(self.paused),
            "blocked": 0, "running": int(running),
            "mem_kb": long(self.mem_kb),
            "cpu_time": long((_now() - self.created) * 1e9),
            "maxmem_kb": long(self.maxmem_kb), "ssidref": self.ssidref,
            "shutdown_reason": self.shutdown_reason,
            "handle": list(self.handle),
        }


def _dom0():
    d = _Domain(0, False, [0] * 16, 0)
    d.paused = False
    d.mem_kb = d.maxmem_kb = 1024 * 1024
    return d


_domains[0] = _dom0()


def mem_path(domid):
    """Where the guest's memory (its kernel state) of ``domid`` lives."""
    return os.path.join(_HV_DIR, "mem", str(domid))


def read_memory(domid):
    try:
        f = open(mem_path(domid))
    except IOError:
        return {}
    try:
        return json.load(f)
    finally:
        f.close()


def write_memory(domid, state):
    d = os.path.dirname(mem_path(domid))
    if not os.path.isdir(d):
        os.makedirs(d)
    tmp = mem_path(domid) + ".new"
    f = open(tmp, "w")
    try:
        json.dump(state, f)
    finally:
        f.close()
    os.rename(tmp, mem_path(domid))


def calls():
    """Every call so far: dicts with t, thread, call, args, result/error."""
    _lock.acquire()
    try:
        return list(_calls)
    finally:
        _lock.release()


def forget_calls():
    """Drop the log so far: a host reused for many runs (benchmarks) would
    otherwise hand the whole history over the control socket each time."""
    _lock.acquire()
    try:
        del _calls[:]
    finally:
        _lock.release()


def add_listener(fn):
    _listeners.append(fn)


def _notify(event, domid):
    for fn in list(_listeners):
        try:
            fn(event, domid)
        except Exception:
            sys.stderr.write("xc stand-in listener failed: %s\n"
                             % (sys.exc_info()[1],))


def _record(name, args, result=None, error=None, t=None):
    entry = {"t": t or _now(), "end": _now(),
             "thread": threading.currentThread().getName(),
             "thread_id": threading.currentThread().ident,
             "call": name, "args": args}
    if error is not None:
        entry["error"] = error
    else:
        entry["result"] = result
    _lock.acquire()
    try:
        _calls.append(entry)
    finally:
        _lock.release()


def _domain(domid):
    d = _domains.get(int(domid))
    if d is None:
        raise Error(3, "No such process")
    return d


def _logged(name):
    """Record a call's arguments and outcome in the call log."""
    def wrap(fn):
        def call(self, *args, **kwargs):
            t = _now()
            shown = list(args) + ["%s=%s" % kv for kv in sorted(kwargs.items())]
            try:
                result = fn(self, *args, **kwargs)
            except Error:
                _record(name, shown, error=str(sys.exc_info()[1]), t=t)
                raise
            _record(name, shown, result=_loggable(result), t=t)
            return result
        call.__name__ = fn.__name__
        return call
    return wrap


def _loggable(value):
    if isinstance(value, (int, long, float, str, type(None))):
        return value
    if isinstance(value, dict):
        return dict((k, _loggable(v)) for k, v in value.items())
    return str(value)


def guest_shutdown(domid, reason):
    """SCHEDOP_shutdown from the guest kernel: the domain stops running and
    VIRQ_DOM_EXC fires.  Not an xc call (the guest makes it)."""
    _lock.acquire()
    try:
        d = _domain(domid)
        d.shutdown = True
        d.shutdown_reason = reason
    finally:
        _lock.release()
    _record("guest:SCHEDOP_shutdown", [domid, reason], result=0)
    _notify("shutdown", domid)


def domain_exists(domid):
    return int(domid) in _domains


def domain_info(domid):
    _lock.acquire()
    try:
        d = _domains.get(int(domid))
        return d and d.info()
    finally:
        _lock.release()


class xc(object):
    """The xc handle object xend creates with ``xen.lowlevel.xc.xc()``."""

    def handle(self):
        # forkHelper passes this fd to the helpers (privcmd on a real host).
        if _handle_fd[0] is None:
            _handle_fd[0] = os.open("/dev/null", os.O_RDWR)
        _record("handle", [], result=_handle_fd[0])
        return _handle_fd[0]

    @_logged("domain_create")
    def domain_create(self, domid=0, ssidref=0, handle=None, hvm=0):
        if settings["fail_create"]:
            raise Error(12, "Cannot allocate memory")
        _lock.acquire()
        try:
            if domid == 0:
                domid = _next_domid[0]
                _next_domid[0] += 1
            if domid in _domains:
                raise Error(17, "File exists")
            _domains[domid] = _Domain(domid, bool(hvm), handle, ssidref)
        finally:
            _lock.release()
        return domid

    @_logged("domain_max_vcpus")
    def domain_max_vcpus(self, dom, max):
        _domain(dom).max_vcpus = int(max)
        return 0

    @_logged("domain_dumpcore")
    def domain_dumpcore(self, dom, corefile):
        _domain(dom)
        open(corefile, "w").close()
        return 0

    @_logged("domain_pause")
    def domain_pause(self, dom):
        _domain(dom).paused = True
        return 0

    @_logged("domain_unpause")
    def domain_unpause(self, dom):
        d = _domain(dom)
        if settings["fail_unpause"] and dom != 0:
            raise Error(22, "Invalid argument")
        was_paused = d.paused
        d.paused = False
        if was_paused:
            _notify("unpause", int(dom))
        return 0

    @_logged("domain_destroy")
    def domain_destroy(self, dom):
        d = _domain(dom)
        if d.domid == 0:
            raise Error(1, "Operation not permitted")
        first = not d.dying
        d.dying = True
        d.paused = True
        if first:
            _notify("dying", d.domid)
            # Relinquishing the memory happens inside the hypercall.
            gb = max(d.maxmem_kb, d.mem_kb) / (1024.0 * 1024.0)
            time.sleep(gb * settings["destroy_seconds_per_gb"])
            _lock.acquire()
            try:
                _domains.pop(d.domid, None)
            finally:
                _lock.release()
            try:
                os.unlink(mem_path(d.domid))
            except OSError:
                pass
            _notify("destroyed", d.domid)
        return 0

    @_logged("domain_destroy_hook")
    def domain_destroy_hook(self, dom):
        # The 2007-06-08 tree's xc.c: an ia64-only NVRAM save; nothing on x86.
        return 0

    def nvram_init(self, *args, **kwargs):
        return 0

    @_logged("domain_shutdown")
    def domain_shutdown(self, dom, reason):
        d = _domain(dom)
        d.shutdown = True
        d.shutdown_reason = int(reason)
        _notify("shutdown", d.domid)
        return 0

    @_logged("domain_resume")
    def domain_resume(self, dom, fast):
        d = _domain(dom)
        if not fast and d.hvm:
            raise Error(1, "Internal error",
                        "Cannot resume uncooperative HVM guests")
        d.shutdown = False
        d.shutdown_reason = 0
        d.paused = False
        _notify("resume", (d.domid, int(fast)))
        return 0

    @_logged("vcpu_setaffinity")
    def vcpu_setaffinity(self, domid, vcpu=0, cpumap=None):
        _domain(domid)
        return 0

    @_logged("domain_setcpuweight")
    def domain_setcpuweight(self, domid, cpuweight=256):
        _domain(domid)
        return 0

    def domain_getinfo(self, first_dom=0, max_doms=1024):
        t = _now()
        _lock.acquire()
        try:
            found = [_domains[k].info() for k in sorted(_domains)
                     if k >= first_dom][:max_doms]
        finally:
            _lock.release()
        _record("domain_getinfo", [first_dom, max_doms],
                result=[i["domid"] for i in found], t=t)
        return found

    def vcpu_getinfo(self, domid, vcpu=0):
        _domain(domid)
        return {"online": 1, "blocked": 0, "running": 1, "cpu_time": 0L,
                "cpu": 0, "cpumap": [0]}

    @_logged("linux_build")
    def linux_build(self, domid, store_evtchn=0, memsize=0, console_evtchn=0,
                    image="", ramdisk="", cmdline="", flags=0, features=""):
        d = _domain(domid)
        d.mem_kb = int(memsize) * 1024
        write_memory(domid, {"kernel": image, "cmdline": cmdline,
                             "mem_kb": d.mem_kb, "devices": {},
                             "inflight": [], "armed": []})
        notes = {"SUSPEND_CANCEL": 1} if "suspend_cancel" in (cmdline or "") else {}
        return {"store_mfn": 1000 + domid, "console_mfn": 2000 + domid,
                "notes": notes}

    @_logged("hvm_build")
    def hvm_build(self, domid, store_evtchn=0, memsize=0, image="", vcpus=1,
                  pae=0, acpi=0, apic=0):
        d = _domain(domid)
        d.mem_kb = int(memsize) * 1024
        write_memory(domid, {"kernel": image, "mem_kb": d.mem_kb, "hvm": 1,
                             "devices": {}, "inflight": [], "armed": []})
        return {"store_mfn": 1000 + domid}

    @_logged("hvm_get_param")
    def hvm_get_param(self, domid, param):
        return _domain(domid).params.get(int(param), 0)

    @_logged("hvm_set_param")
    def hvm_set_param(self, domid, param, value):
        _domain(domid).params[int(param)] = value
        return 0

    @_logged("evtchn_alloc_unbound")
    def evtchn_alloc_unbound(self, domid, remote_dom):
        _domain(domid)
        _lock.acquire()
        try:
            _next_port[0] += 1
            return _next_port[0]
        finally:
            _lock.release()

    @_logged("evtchn_reset")
    def evtchn_reset(self, dom):
        _domain(dom)
        return 0

    def physinfo(self):
        used = sum([d.mem_kb for d in _domains.values()])
        return {"nr_cpus": 2, "threads_per_core": 1, "cores_per_socket": 2,
                "sockets_per_node": 1, "nr_nodes": 1,
                "total_memory": settings["total_memory_kb"],
                "free_memory": settings["total_memory_kb"] - used,
                "scrub_memory": 0, "cpu_khz": 2000000,
                "hw_caps": "00000000:00000000:00000000:00000000"}

    def xeninfo(self):
        return {"xen_major": 3, "xen_minor": 1, "xen_extra": ".0-harness",
                "xen_caps": "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32 "
                            "hvm-3.0-x86_32p hvm-3.0-x86_64",
                "xen_pagesize": 4096, "platform_params": "virt_start=0x0",
                "xen_changeset": "harness", "cc_compiler": "none",
                "cc_compile_by": "harness", "cc_compile_domain": "local",
                "cc_compile_date": "2007"}

    def pages_to_kib(self, pages):
        return long(pages) * 4

    def sched_id_get(self):
        return XEN_SCHEDULER_CREDIT

    def sched_credit_domain_get(self, domid):
        _domain(domid)
        return {"weight": 256, "cap": 0}

    @_logged("sched_credit_domain_set")
    def sched_credit_domain_set(self, domid, weight=256, cap=0):
        _domain(domid)
        return 0

    def sedf_domain_get(self, domid):
        return {"domid": domid, "period": 0, "slice": 0, "latency": 0,
                "extratime": 0, "weight": 0}

    def sedf_domain_set(self, *args, **kwargs):
        return 0

    def shadow_control(self, dom, op=0):
        return 0

    @_logged("shadow_mem_control")
    def shadow_mem_control(self, dom, mb=-1):
        d = _domain(dom)
        if mb is not None and mb >= 0:
            d.shadow_mb = int(mb)
        return d.shadow_mb

    @_logged("domain_setmaxmem")
    def domain_setmaxmem(self, dom, maxmem_kb):
        _domain(dom).maxmem_kb = int(maxmem_kb)
        return 0

    @_logged("domain_set_memmap_limit")
    def domain_set_memmap_limit(self, dom, map_limitkb):
        return 0

    @_logged("domain_set_time_offset")
    def domain_set_time_offset(self, domid):
        return 0

    def domain_ioport_permission(self, *args, **kwargs):
        return 0

    def domain_irq_permission(self, *args, **kwargs):
        return 0

    def domain_iomem_permission(self, *args, **kwargs):
        return 0

    def domain_send_trigger(self, *args, **kwargs):
        return 0

    def readconsolering(self, clear=0):
        return ""

    def send_debug_keys(self, keys):
        return 0
