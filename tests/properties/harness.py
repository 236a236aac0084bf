"""One migration's handover under a drawn schedule, and its invariants.

``run_schedule(schedule)`` builds a fresh world for one run: an embedded
xenstore (3.1 or 4.17 flavour), one xend connection, one modelled 3.1
block backend (classic blkback/blktap + hotplug, or shutdown-request) per
disk on a connection of its own, a netback for the vif, a modelled
``XendDomainInfo``, and a real TCP connection on 127.0.0.1 to a target
host of its own (the rehearsal's ``TargetHost``: 3.1's relocation server
and ``XendCheckpoint.restore``, on a xenstore of its own).  It runs the
model of the patched save (``fastmig_tools.models.patched_save.save``, as
the rehearsal does), which calls the REAL handover (``begin``,
``suspended``, ``run``, ``failed``, ``finish``) where the patched xend
does, with a ``FakePlatform`` in place of ``xc_save`` and the early
release on or off as the schedule says, injects the drawn faults (through
``fastmig_tools.rehearse.injection`` and the target's own fault), tears
everything down and returns an ``Outcome``.  ``tests.properties.observe``
judges it: the one oracle's invariants (``fastmig_tools.invariants``,
docs/design.md, "Invariants") and the world's own errors.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import itertools
import logging
import os
import socket
import threading
import time
import uuid as uuidlib

from fastmig_tools.models.blkback import (ClassicBlkback, HungBlkback,
                                          HungShutdownRequestBlkback,
                                          InflightRequest,
                                          ShutdownRequestBlkback,
                                          advertise_shutdown_request)
from fastmig_tools.models.domain import ModelDomainInfo
from fastmig_tools.models.netback import ClassicNetback
from fastmig_tools.models.xenbus_backend import Xenwatch
from fastmig_tools.xenstore.embedded import EmbeddedXenstore
from fastmig_tools.xenstore.xend_api import XendApi
from fastmig_tools.models.patched_save import save as patched_save
from fastmig_tools.rehearse.stores import HostStore
from fastmig_tools.rehearse.stream import (END, PAGE, RING, config_sxp,
                                           write_record)
from fastmig_tools.rehearse.target import TargetHost, TargetRun
from fastmig_tools.rehearse.leftovers import left_behind
from fastmig_tools.rehearse.stall import StallMeter
from fastmig_tools.rehearse.injection import (FaultyHandle, FaultySocket,
                                              break_destroy, break_resume)
from xend_fastmig.handover import Environment
from xend_fastmig.options import FastMigrationOptions

from tests.unit.fakes import FakePlatform

__all__ = ["Device", "TargetPlan", "StoreFault", "Schedule", "Outcome",
           "run_schedule", "run_schedules", "TARGET_STEPS", "FAIL_ACTIONS",
           "VERDICT_ACTIONS", "DRAIN_TIMEOUT", "VERDICT_TIMEOUT",
           "MIGRATE_TIMEOUT", "RESUME_GRACE", "SLACK"]

log = logging.getLogger(__name__)

# Small, so that a run takes a fraction of a second.
DRAIN_TIMEOUT = 0.2
VERDICT_TIMEOUT = 0.3
# Stock xend's device polls inside the re-creating resume (100 ms a device
# per round until this runs out).
MIGRATE_TIMEOUT = 0.3
# Scheduling noise on a 2-core machine running a dozen threads per run.
SLACK = 1.5
# Nothing in one run may take longer than this (every wait is bounded).
RUN_LIMIT = 20.0
# The handover's extra wait for old backends before a resume (5 s inside
# xend), scaled down like the drain timeout, and kept well above the
# slowest non-hung device's last write (2.5 drain timeouts) so that only
# a hung backend can outlast it.
RESUME_GRACE = 1.0

TARGET_STEPS = ("stream", "completeRestore", "waitForDevices", "unpause",
                "verdict")
FAIL_ACTIONS = ("err", "hangup", "reset", "hang")
VERDICT_ACTIONS = ("ok", "garbage", "oversized", "none", "reset", "hangup")

_domids = itertools.count(1000)


@dataclasses.dataclass(frozen=True)
class Device:
    """One disk: ``kind`` normal / hung / slow (drains after the drain
    timeout) / buggy (removes its directory before it drained: cannot be
    detected, never drawn by the properties); ``delays`` are its in-flight
    requests' completion times after the suspend."""

    devclass: str = "vbd"
    kind: str = "normal"
    delays: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class TargetPlan:
    """Where the target stops (``step``) and what it does there.

    At ``stream`` .. ``unpause`` the action is one of ``FAIL_ACTIONS`` (the
    target's copy is destroyed); at ``verdict`` (restore succeeded, copy
    running) it is one of ``VERDICT_ACTIONS``.
    """

    # (or ``last-round``: the restore fails ``delay`` s after the
    # source's suspend, while the last memory round is being sent; one of
    # ``FAIL_ACTIONS``)
    step: str = "verdict"
    action: str = "ok"
    # Seconds the target spends in its failing (or verdict) step first.
    delay: float = 0.0


@dataclasses.dataclass(frozen=True)
class StoreFault:
    """A xenstore fault.

    ``who``: ``xend`` (the ``at``-th request ``op`` of xend's connection
    fails with ``err``, ``count`` times in a row: ``FaultyHandle.fail_at``
    of ``fastmig_tools.rehearse.injection``), ``any`` (``fail_next`` armed before
    the handover on one of the guest's paths: whoever asks first gets it),
    ``reset-xend`` (xend's connection dies at its ``at``-th request) or
    ``reset-all`` (``reset_connections()`` at xend's ``at``-th request:
    every connection, the backends' too).
    """

    who: str = "xend"
    op: str = "read"
    err: int = errno.EAGAIN
    at: int = 0
    count: int = 1
    path_index: int = 0


@dataclasses.dataclass(frozen=True)
class Schedule:
    devices: tuple[Device, ...] = ()
    protocol: bool = False
    shared_xenwatch: bool = True
    flavour: str = "xen417"
    suspend_cancel: bool = False
    hvm: bool = False
    # Seconds from a classic backend's drain to its hotplug cleanup (the
    # rehearsal's --teardown; 0.03 is what Xen 3.1's script took here),
    # and of xc_save's last round after the suspend.
    teardown: float = 0.0
    last_round: float = 0.0
    target: TargetPlan = TargetPlan()
    store_fault: StoreFault | None = None
    # Source-side failures: "save" (xc_save fails), "destroy" (destroying
    # the source copy raises after the hypercall), "resume" (re-creating
    # the devices raises), "verdict" (reading the verdict raises, through
    # the relocation socket).
    source_fault: str | None = None
    destroy_cost: float = 0.0
    drain_timeout: float = DRAIN_TIMEOUT
    # Release the block devices in xc_save's suspend handler (the option
    # xend-fast-migration-early-release) or only once the image is out.
    early_release: bool = True


class _Guest:
    """The guest as the target host sees it: when it was suspended, and
    that it runs again (the property world has no disk to write)."""

    def __init__(self):
        self.suspended_at: float | None = None

    def run_again(self, host: str, ring=None) -> float:
        return time.monotonic()


def _target_fault(plan: TargetPlan) -> dict:
    """``TargetHost``'s fault for ``plan``."""
    action = "silent" if plan.action == "none" else plan.action
    if plan.step == "last-round":
        return dict(fault=(plan.step, action), fault_delay=plan.delay)
    return dict(fault=(plan.step, action), step_delay=plan.delay)


@dataclasses.dataclass
class Outcome:
    schedule: Schedule
    report: object = None
    save_error: BaseException | None = None
    started: float = 0.0
    image_sent_at: float | None = None
    ended: float = 0.0
    # Seconds between the image and the end in which this process could
    # not run (fastmig_tools.rehearse.stall): the budget adds them.
    stalled: float = 0.0
    unleashed_at: float | None = None
    # What the target host did with this migration (its connection).
    target: TargetRun | None = None
    dominfo: ModelDomainInfo | None = None
    journal: list = dataclasses.field(default_factory=list)
    backends: list = dataclasses.field(default_factory=list)
    completions: list = dataclasses.field(default_factory=list)
    fault_fired: bool = False
    fault_at: float | None = None
    xend_dead: bool = False
    xend_watches_left: int = 0
    leftover_paths: list = dataclasses.field(default_factory=list)
    leaked_threads: list = dataclasses.field(default_factory=list)
    leaked_fds: int = 0
    # xend's connection through the fault injector (a test's
    # ``before_save`` may tell it a fault of its own).
    xend_handle: FaultyHandle | None = None
    # A hung backend (this guest's or another's) holds the dom0 xenwatch
    # thread this guest's backends share: they are stuck as well.
    xenwatch_held: bool = False
    problems: list = dataclasses.field(default_factory=list)


def _factory(schedule: Schedule, device: Device):
    if device.kind == "buggy":
        # A kernel whose hotplug cleanup runs before its drain: looks
        # drained to anyone (docs/design.md, "What cannot be detected").
        return functools.partial(ClassicBlkback, remove_before_drain=True)
    if device.kind == "hung":
        if schedule.protocol:
            return HungShutdownRequestBlkback
        return HungBlkback
    if schedule.protocol:
        return ShutdownRequestBlkback
    return ClassicBlkback


class _Platform(FakePlatform):
    """FakePlatform writing the stream a 3.1 target reads (signature,
    config, image records: ``fastmig_tools.rehearse.stream``), and saying
    when the image is out."""

    def __init__(self, journal, fail_save=None):
        FakePlatform.__init__(self, journal, fail_save=fail_save)
        self.image_sent_at = None
        self.on_suspended = None

    def config_string(self, dominfo):
        return config_sxp(dominfo.getName(), dominfo.uuid, 1024, [],
                          dominfo.getDomid())

    def run_xc_save(self, fd, dominfo, live, hvm, on_suspend):
        write_record(fd, PAGE, b"\0" * 64)
        on_suspend()
        if self.on_suspended is not None:
            self.on_suspended()
        self.journal.append("suspended")
        if self.fail_save is not None:
            raise self.fail_save
        write_record(fd, RING, b"[]")
        write_record(fd, END)
        self.journal.append("image sent")
        self.image_sent_at = time.monotonic()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_schedule(schedule: Schedule, before_save=None,
                 after_save=None) -> Outcome:
    """Run one handover; never raises on the run's own behaviour.

    ``before_save(outcome)``, if given, is called once everything is set up
    (``outcome.target`` and ``outcome.dominfo`` exist), just before save;
    ``after_save(outcome)`` once the run settled, while the store is still
    open.
    """
    return run_schedules([schedule], before_save, after_save)[0]


class _Run:
    """One guest's migration inside ``run_schedules``."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.out = Outcome(schedule)
        self.actors: list = []
        self.source: socket.socket | None = None
        self.platform: _Platform | None = None
        self.env: Environment | None = None
        self.guest = _Guest()
        self.target_store: HostStore | None = None
        self.target_host: TargetHost | None = None

    def target_join(self) -> None:
        """Stop the target host (any number of times)."""
        if self.target_host is not None:
            self.target_host.stop()
        store, self.target_store = self.target_store, None
        if store is not None:
            store.close()


def run_schedules(schedules, before_save=None,
                  after_save=None) -> list[Outcome]:
    """Migrate one guest per schedule from the same source host at once.

    They share the host's xenstore (the first schedule's flavour), xend's
    one connection and watcher thread (with the first schedule's store
    fault) and dom0's xenwatch thread (if the first schedule shares one);
    each has its own backends, target and connection.  Leak checks
    (threads, descriptors, xend's watches) are for the whole run.
    """
    first = schedules[0]
    threads_before = set(threading.enumerate())
    fds_before = _fd_count()
    store = EmbeddedXenstore(first.flavour)
    apis: list[XendApi] = []
    runs = [_Run(s) for s in schedules]
    problems: list[str] = []
    # (the embedded store's fault record, its count) of "any" faults.
    armed_any: list = []
    meter = StallMeter().start()

    def connect(faulty=None) -> XendApi:
        api = XendApi(faulty or store.connect())
        apis.append(api)
        return api

    faulty = _xend_handle(store, first.store_fault)
    try:
        xend = connect(faulty)
        if first.protocol:
            advertise_shutdown_request(xend.store())
        xenwatch = Xenwatch() if first.shared_xenwatch else None
        for run in runs:
            _set_up(run, store, xend, connect, xenwatch, first.protocol,
                    armed_any)
        for run in runs:
            run.out.xend_handle = faulty
        if before_save is not None:
            for run in runs:
                before_save(run.out)
        faulty.arm()
        threads = [threading.Thread(target=_save, args=(run,),
                                    name="save-%d" % i, daemon=True)
                   for i, run in enumerate(runs[1:])]
        for thread in threads:
            thread.start()
        _save(runs[0])
        for thread in threads:
            thread.join(RUN_LIMIT)
            if thread.is_alive():
                problems.append("a save did not end within %.0f s"
                                % RUN_LIMIT)
        # A fault armed for anyone counts once somebody took a part of it
        # (with several guests, whichever guest's fault it was).
        any_taken = any(fault.remaining < count or fault not in store._faults
                        for fault, count in armed_any)
        # Teardown is not under test: no fault may hit it.
        faulty.disarm()
        store.clear_faults()
        watches_left = 0
        if not faulty.dead:
            watches_left = len(faulty._handle._watches)
        for run in runs:
            out = run.out
            out.fault_fired = faulty.fired or any_taken
            out.fault_at = faulty.fired_at
            out.xend_dead = faulty.dead
            out.xend_watches_left = watches_left
            run.target_join()
        everyone = [a for run in runs for a in run.actors]
        held = first.shared_xenwatch and any(
            isinstance(a, HungBlkback) for a in everyone)
        for run in runs:
            run.out.xenwatch_held = held
        # Through a connection of its own: a fault may have reset xend's.
        checker = connect()
        for run in runs:
            _finish(run, checker.xstransact, faulty)
        if after_save is not None:
            for run in runs:
                after_save(run.out)
    except Exception as exc:
        problems.append("the harness failed: %r" % (exc,))
        log.exception("harness")
    finally:
        store.clear_faults()
        for run in runs:
            for actor in run.actors:
                try:
                    actor.stop()
                except Exception as exc:
                    problems.append("stopping %s: %r" % (actor.name, exc))
        for api in apis:
            try:
                api.close()
            except Exception as exc:
                problems.append("closing a XendApi: %r" % (exc,))
        for run in runs:
            if run.source is not None:
                run.source.close()
            run.target_join()
        meter.stop()
    for run in runs:
        if run.out.image_sent_at is not None:
            run.out.stalled = meter.stalled(run.out.image_sent_at,
                                            run.out.ended)
    leaked_threads = _wait_threads(threads_before)
    leaked_fds = _fd_count() - fds_before
    for run in runs:
        run.out.problems.extend(problems)
        run.out.leaked_threads = leaked_threads
        run.out.leaked_fds = leaked_fds
    return [run.out for run in runs]


def _set_up(run: _Run, store, xend, connect, xenwatch, protocol,
            armed_any) -> None:
    schedule = run.schedule
    out = run.out
    domid = next(_domids)
    vbds = ["/dev/vg/d%d" % i for i, d in enumerate(schedule.devices)
            if d.devclass == "vbd"]
    taps = ["/img/t%d" % i for i, d in enumerate(schedule.devices)
            if d.devclass == "tap"]
    notes = {"SUSPEND_CANCEL": 1} if schedule.suspend_cancel else None
    # destroy_cost is per GB, and the guest has 1 GB.
    dominfo = ModelDomainInfo(
        xend.store(), domid, "guest%d" % domid, str(uuidlib.uuid4()),
        vbds=vbds, taps=taps, vifs=[{}], notes=notes, hvm=schedule.hvm,
        destroy_seconds_per_gb=schedule.destroy_cost,
        migrate_timeout=MIGRATE_TIMEOUT)
    out.dominfo = dominfo
    if schedule.source_fault == "destroy":
        break_destroy(dominfo, RuntimeError("injected: cleanupDomain failed"))
    elif schedule.source_fault == "resume":
        break_resume(dominfo, RuntimeError("injected: device creation "
                                           "failed"))
    # Disks in the order write_devices laid them out: vbds, then taps.
    ordered = [d for d in schedule.devices if d.devclass == "vbd"] + \
        [d for d in schedule.devices if d.devclass == "tap"]
    disks = [d for d in dominfo.layout.devices
             if d.devclass in ("vbd", "tap")]
    assert len(disks) == len(ordered)
    schedule_protocol = dataclasses.replace(schedule, protocol=protocol)
    for index, (layout, device) in enumerate(zip(disks, ordered)):
        requests = [InflightRequest(sector=index * 64 + n, data=b"x",
                                    delay=delay)
                    for n, delay in enumerate(device.delays)]
        run.actors.append(_factory(schedule_protocol, device)(
            connect().store(), layout.backend, requests=requests,
            xenwatch=xenwatch, hotplug_delay=schedule.teardown).start())
    for layout in dominfo.layout.vifs:
        run.actors.append(ClassicNetback(connect().store(),
                                         layout.backend).start())
    out.backends = run.actors

    # The target: a 3.1 host of its own (store, relocation listener).
    run.target_store = HostStore("target%d" % domid, "embedded").start()
    run.target_host = TargetHost(
        run.target_store, run.guest, memory_gb=1.0, destroy_per_gb=0.0,
        restore_seconds=0.0, timeout=RUN_LIMIT, first_domid=domid + 5000,
        **_target_fault(schedule.target)).start()
    # domain_migrate, up to save: connect, "receive", read the ready.
    run.source = socket.create_connection(("127.0.0.1",
                                           run.target_host.port))
    run.source.sendall(b"receive\n")
    run.source.recv(80)
    out.target = run.target_host.runs[0]
    platform = _Platform(out.journal, fail_save=(
        RuntimeError("xc_save failed")
        if schedule.source_fault == "save" else None))
    run.platform = platform

    def suspended():
        t = time.monotonic()
        for actor in run.actors:
            actor.set_suspend_time(t)
        if schedule.store_fault is not None and \
                schedule.store_fault.who == "any":
            with store._lock:
                _arm_any(store, dominfo, schedule.store_fault)
                armed_any.append((store._faults[-1],
                                  schedule.store_fault.count))
        run.guest.suspended_at = t
        if schedule.last_round > 0:
            # xc_save's last round: the rest of the image comes after it.
            time.sleep(schedule.last_round)
    platform.on_suspended = suspended
    run.env = Environment(xend.store(), platform, FastMigrationOptions(
        drain_timeout=schedule.drain_timeout,
        verdict_timeout=VERDICT_TIMEOUT,
        early_release=schedule.early_release, resume_grace=RESUME_GRACE))


def _save(run: _Run) -> None:
    """What domain_migrate does once connected: save, then close.

    ``save_error`` is what save raised: ``MigrationFailed`` (xend's
    XendError) whenever the guest did not end up running at the target.
    """
    out = run.out
    out.started = time.monotonic()
    handovers: list = []
    try:
        sock = run.source
        if run.schedule.source_fault == "verdict":
            sock = FaultySocket(sock, MemoryError("injected: reading the "
                                                  "verdict failed"))
        patched_save(sock.fileno(), out.dominfo, True, True,
                     "127.0.0.1", sock=sock, env=run.env,
                     platform=run.platform, handovers=handovers)
    except Exception as exc:
        out.save_error = exc
    if handovers:
        out.report = handovers[0].report
    out.ended = time.monotonic()
    out.image_sent_at = run.platform.image_sent_at
    if out.report is not None:
        out.unleashed_at = out.report.unleashed_at
    run.source.close()
    run.source = None


def _finish(run: _Run, xst, faulty) -> None:
    out = run.out
    _settle_backends(run.actors, run.schedule)
    out.completions = [r.completed_at for a in run.actors
                       for r in a.requests]
    out.leftover_paths = _leftovers(xst, run, faulty)


def _xend_handle(store, fault: StoreFault | None) -> FaultyHandle:
    """xend's connection, through the one fault injector, told the
    schedule's fault (``any`` goes through the store's ``fail_next``
    instead, at the suspend)."""
    faulty = FaultyHandle(store.connect(), store)
    if fault is None:
        return faulty
    if fault.who == "xend":
        faulty.fail_at(fault.op, fault.err, fault.at, fault.count)
    elif fault.who == "reset-xend":
        faulty.reset_after(fault.at)
    elif fault.who == "reset-all":
        faulty.reset_after(fault.at, everyone=True)
    return faulty


def _arm_any(store, dominfo, fault: StoreFault) -> None:
    paths = [dominfo.dompath + "/device"]
    for layout in dominfo.layout.devices:
        paths.append(layout.backend)
    path = paths[fault.path_index % len(paths)]
    if fault.op in ("commit", "transaction_start"):
        path = None  # these requests name no path
    store.fail_next(fault.op, fault.err, fault.count, path=path)


def _settle_backends(actors, schedule: Schedule) -> None:
    """Let what still drains finish: every request's due time has a bound."""
    deadline = time.monotonic() + 3.0
    for actor in actors:
        if isinstance(actor, HungBlkback):
            continue
        actor.wait_for(lambda a: a.pending() == 0 and not a._draining
                       and a._cleanup_due is None,
                       max(deadline - time.monotonic(), 0.0))


def _leftovers(xst, run: _Run, faulty: FaultyHandle) -> list[str]:
    """Nodes of the migrated guest that should be gone and are not
    (``leftovers.left_behind``, the rehearsal's check).

    Not counted: what xend's own ``destroyDomain`` could not remove
    because the injected fault hit it (stock runs that same code), and
    backend directories of a kernel that hung or whose own xenstore
    requests were made to fail (udev's cleanup is the kernel side's job,
    not xend's).
    """
    out = run.out
    started = out.dominfo.times.get("destroy_started")
    destroy_hit = faulty.dead or (started is not None and any(
        t >= started for t in faulty.failed_at))
    if destroy_hit:
        # xend's own destroyDomain failed: neither the frontends nor
        # (so) the backends could go; stock runs the same code.
        return []
    fault = run.schedule.store_fault
    reset_all = fault is not None and fault.who == "reset-all" and \
        faulty.fired
    return left_behind(xst, out.dominfo, run.actors,
                       all_stuck=reset_all or out.xenwatch_held)


def _wait_threads(before: set) -> list[str]:
    deadline = time.monotonic() + 5.0
    while True:
        extra = [t for t in threading.enumerate()
                 if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            return [t.name for t in extra]
        extra[0].join(0.05)
