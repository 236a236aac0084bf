"""One rehearsal run: set up two hosts, migrate, check the disk, report.

Times are taken on one monotonic clock (both hosts live in this process):

* blackout: the guest suspended at the source → it runs again (unpaused
  at the target, or resumed at the source); None when it never runs again;
* gate: the source finished sending the image → the target's EOF gate
  opened (its ``os.read(fd, 1)`` returned);
* release after last write: the gate opened minus the moment the last
  in-flight write landed; negative means the target was released while
  the source still had guest writes outstanding;
* backends confirmed: the last block backend model said it drained
  (its directory removed by udev's hotplug cleanup, or ``shutdown-done``);
  None when one never did (a directory xend itself deleted says nothing);
* the limit: ``limit_ms`` = max(image sent, last drain confirmed by a
  backend) - suspend + the target's work after its EOF (``restore_ms``:
  unpause - release), the shortest blackout a pre-copy migration that
  keeps shared storage safe can have; ``over_limit_ms`` = blackout -
  limit (None unless the guest runs at the target and every drain was
  confirmed).  ``suspend_ms`` (0), ``image_sent_ms``, ``drains_confirmed``
  ([device, how, ms]: when each backend wrote ``shutdown-done`` or its
  directory went), ``released_ms`` (the target's EOF) and ``unpaused_ms``
  are the timeline, in ms after the suspend;
* xenstore ops: requests the source's xend made from the image sent to the
  end of its migration (backend models not counted); ``store_ops`` is
  the embedded source store's own ``op_count`` over the whole run, every
  client included (None on the real xenstored).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import tempfile
import time

from fastmig_tools.invariants import AT_TARGET, LOST, RESUMED, TWICE
from fastmig_tools.rehearse import catalogue, injection
from fastmig_tools.rehearse.disk import SharedDisk
from fastmig_tools.rehearse.leftovers import left_behind
from fastmig_tools.rehearse.observe import violations
from fastmig_tools.rehearse.platform import ModelPlatform
from fastmig_tools.rehearse.policies import run_policy
from fastmig_tools.rehearse.scenario import FASTMIG_POLICIES, Scenario
from fastmig_tools.rehearse.stall import StallMeter
from fastmig_tools.rehearse.stores import open_host_stores
from fastmig_tools.rehearse.target import READY_REPLY, TargetHost
from fastmig_tools.rehearse.workload import (
    GuestIO, RehearsalDomainInfo, start_source_backends, stop_backends)

__all__ = ["RunResult", "run_once", "AT_TARGET", "RESUMED", "LOST", "TWICE",
           "TEMP_PREFIX"]


TEMP_PREFIX = "fastmig-rehearse-"

_domids = itertools.count(5)
_runs = itertools.count(1)
# Slack after the slowest in-flight request is due before giving up on it.
_LANDING_SLACK = 5.0


@dataclasses.dataclass
class RunResult:
    """What one run measured; ``to_json()`` is the --json record."""

    policy: str
    memory_gb: float
    outcome: str
    blackout_ms: float | None
    gate_ms: float | None
    release_after_last_write_ms: float | None
    xs_ops: int
    store_ops: int | None
    disk_clean: bool
    stale_blocks: list[str]
    last_write_ms: float | None
    backends_confirmed_ms: float | None
    released_ms: float | None
    unpaused_ms: float | None
    resumed_ms: float | None
    source_done_ms: float | None
    handover: str | None
    error: str | None
    target_error: str | None
    core_log: list[str]
    scenario: dict
    # For the invariants (fastmig_tools.rehearse.observe).
    source_destroyed_ms: float | None = None
    handover_ms: float | None = None
    # Of those, how long this process could not run (a loaded machine;
    # fastmig_tools.rehearse.stall): the deadlines' budget adds it.
    stalled_ms: float = 0.0
    target_sent_err: bool = False
    # xend's own destroyDomain raised (a store fault hit stock code).
    destroy_failed: bool = False
    leftovers: list = dataclasses.field(default_factory=list)
    violations: list = dataclasses.field(default_factory=list)
    # How the source learnt that each block backend drained: the core's
    # [(device, "backend-gone" | "shutdown-done", seconds)] (fastmig only:
    # the other policies wait for no confirmation), and the core's path
    # ("fast", "stock-order"; None without a report).
    drain_confirmations: list = dataclasses.field(default_factory=list)
    handover_path: str | None = None
    # The timeline and the limit (see the module's docstring).
    early_release: bool | None = None
    suspend_ms: float | None = None
    image_sent_ms: float | None = None
    drains_confirmed: list = dataclasses.field(default_factory=list)
    # The first block backend that saw its teardown (None: none did).
    devices_released_ms: float | None = None
    restore_ms: float | None = None
    limit_ms: float | None = None
    over_limit_ms: float | None = None
    # How the source copy was resumed: "fast" (SUSPEND_CANCEL),
    # "recreate" (devices re-created), None if it was not.
    resume_path: str | None = None
    # A fast resume after the handover force-released the block devices:
    # the guest would run on torn-down devices.
    fast_resume_after_release: bool = False
    # The core's HandoverReport.outcome (fastmig only).
    handover_outcome: str | None = None
    # For the one oracle (fastmig_tools.rehearse.observe), in ms after the
    # suspend: the source copy's destroy began; the target's copies ran
    # ([unpaused, destroyed or None]); what the target said and when;
    # each block backend's drain confirmed and its device's writes all
    # landed ([device, ms or None]); the block devices force-released;
    # each fast (SUSPEND_CANCEL) resume; the migration raised.
    source_destroy_started_ms: float | None = None
    target_ran: list = dataclasses.field(default_factory=list)
    target_said: str | None = None
    target_said_ms: float | None = None
    backend_drains: list = dataclasses.field(default_factory=list)
    writes_landed: list = dataclasses.field(default_factory=list)
    devices_force_released_ms: float | None = None
    fast_resumes_ms: list = dataclasses.field(default_factory=list)
    migration_failed: bool | None = None
    # Other guests' devices the run touched (the guest-rewrites-backend
    # faults watch a bystander's), and what a second migration of the
    # domain said (the second-migrate fault; None: there was none).
    bystanders_touched: list = dataclasses.field(default_factory=list)
    second_migration: str | None = None

    @property
    def disk_verdict(self) -> str:
        if self.disk_clean:
            return "clean"
        return "CORRUPT (%d stale)" % len(self.stale_blocks)

    def to_json(self) -> dict:
        record = dataclasses.asdict(self)
        record["disk_verdict"] = "clean" if self.disk_clean else "corrupt"
        return record


class _Capture(logging.Handler):
    """Keeps the core's log lines of one run (``RunResult.core_log``)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append("%s %s" % (record.levelname, record.getMessage()))


def _deadline(scenario):
    """Seconds any wait of one run may take: the run's own deadline plus
    its destroy, which stock waits for before it lets the target go."""
    return scenario.run_timeout + scenario.destroy_seconds


def _ms(t, origin):
    if t is None or origin is None:
        return None
    return (t - origin) * 1000.0


def _forget_domain(api, domid, uuid):
    """Remove what a run left of a domain in a store that outlives it."""
    xst = api.xstransact
    xst.Remove("/local/domain/%d" % domid)
    xst.Remove("/vm/%s" % uuid)
    for devclass in ("vbd", "tap", "vif"):
        xst.Remove("/local/domain/0/backend/%s/%d" % (devclass, domid))
        xst.Remove("/local/domain/0/error/backend/%s/%d" % (devclass, domid))


def _forget_on(host_store, domid, uuid):
    api = host_store.api(thread_name="cleanup")
    try:
        _forget_domain(api, domid, uuid)
    finally:
        host_store.release(api)


def run_once(scenario: Scenario, stores=None,
             workdir: str | None = None) -> RunResult:
    """Run one migration of ``scenario``; never leaves a thread, a daemon
    or a temporary file behind (also on KeyboardInterrupt).

    ``stores``: a ``(source, target)`` pair of ``HostStore`` to reuse (the
    caller closes them); by default the run opens and closes its own.
    """
    scenario.validate()
    own_stores = stores is None
    if own_stores:
        stores = open_host_stores(scenario.xenstored)
    source_store, target_store = stores
    tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=workdir)
    cleanups = []
    try:
        return _run(scenario, source_store, target_store, tmp, cleanups)
    finally:
        errors = []
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:
                errors.append(exc)
        shutil.rmtree(tmp, ignore_errors=True)
        if own_stores:
            for store in (source_store, target_store):
                try:
                    store.close()
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]


def _run(scenario, source_store, target_store, tmp, cleanups):
    clock = time.monotonic
    meter = StallMeter().start()
    cleanups.append(meter.stop)
    store_ops_before = source_store.op_count
    disk_path = os.path.join(tmp, "disk.img")
    disk = SharedDisk(disk_path, scenario.devices, run=next(_runs))
    cleanups.append(disk.close)
    guest = GuestIO(disk, scenario.inflight_requests())

    # xend's own connection goes through the fault injector (armed only
    # if the run's fault needs it).
    source_api = source_store.api(counted=True,
                                  thread_name="source-xend-watcher",
                                  wrap=injection.FaultyHandle)
    xend_handle = source_api.handle._handle
    cleanups.append(lambda: source_store.release(source_api))
    store = source_api.store()
    domid = next(_domids)
    disks = [("xvd%s" % chr(ord("a") + i), "file:%s" % disk_path)
             for i in range(scenario.devices)]
    specs = [{"dev": dev, "uname": uname} for dev, uname in disks]
    actors: list = []

    def suspended(t):
        guest.suspended(t)
        for actor, _api in actors:
            actor.set_suspend_time(t)

    def resumed(t):
        if dominfo.resume_path == "fast":
            guest.carry_on("source", t, lambda: _wait_for_landings(
                guest, actors, scenario))
        else:
            guest.run_again("source")

    dominfo = RehearsalDomainInfo(
        store, domid, "guest%d" % domid,
        vbds=specs if scenario.disk_class == "vbd" else [],
        taps=specs if scenario.disk_class == "tap" else [],
        notes={"SUSPEND_CANCEL": 1} if scenario.suspend_cancel else None,
        hvm=scenario.hvm,
        memory_gb=scenario.memory_gb,
        destroy_seconds_per_gb=scenario.destroy_per_gb,
        on_suspend=suspended,
        on_resumed=lambda t: guest.run_again("source"))
    destroy_failures = []
    stock_destroy = dominfo.destroyDomain

    def destroy_domain():
        try:
            stock_destroy()
        except Exception:
            destroy_failures.append(True)
            raise
    dominfo.destroyDomain = destroy_domain
    # Through a connection of its own: a fault may have reset xend's.
    cleanups.append(lambda: _forget_on(source_store, domid, dominfo.uuid))
    actors.extend(start_source_backends(source_store, dominfo, guest,
                                        scenario.backend,
                                        scenario.teardown_ms / 1000.0))
    dominfo.on_resumed = resumed
    cleanups.append(lambda: stop_backends(source_store, actors))

    target = TargetHost(target_store, guest, memory_gb=scenario.memory_gb,
                        destroy_per_gb=scenario.destroy_per_gb,
                        restore_seconds=scenario.restore_seconds,
                        fail_after_image=scenario.target_fails_after_image,
                        timeout=_deadline(scenario),
                        first_domid=next(_domids),
                        fault=catalogue.FAULTS[scenario.fault].target
                        if scenario.fault else None,
                        fault_delay=(scenario.fault_when or 0.0) / 1000.0
                        ).start()
    cleanups.append(target.stop)

    def forget_target():
        for run in target.runs:
            if run.dominfo is not None:
                _forget_domain(target.api, run.dominfo.destroyed_domid
                               or run.dominfo.domid or 0, run.dominfo.uuid)
    cleanups.append(forget_target)

    platform = ModelPlatform(scenario, guest, disks, clock=clock)
    ops_at_image = []
    real_run_xc_save = platform.run_xc_save

    def run_xc_save(*args, **kwargs):
        real_run_xc_save(*args, **kwargs)
        ops_at_image.append(source_api.handle.count)
        injection.arm_store_fault(scenario, source_store, xend_handle)
    platform.run_xc_save = run_xc_save

    from xend_fastmig.options import FastMigrationOptions
    options = FastMigrationOptions(enabled=True,
                                   drain_timeout=scenario.drain_timeout,
                                   verdict_timeout=scenario.verdict_timeout,
                                   relocation_port=target.port,
                                   early_release=scenario.early_release)
    capture = _Capture()
    core_log = logging.getLogger("xend")
    core_log.addHandler(capture)
    if core_log.level == logging.NOTSET or core_log.level > logging.INFO:
        previous_level = core_log.level
        core_log.setLevel(logging.INFO)
    else:
        previous_level = None
    report = None
    error = None
    failures: list = []
    socket_wrappers: list = []

    def wrap_socket(sock):
        for wrap in socket_wrappers:
            sock = wrap(sock)
        return sock
    injected = injection.Injected()

    def migrate_again(**kwargs):
        return run_policy(scenario.policy, dominfo, target.port, platform,
                          store, options, timeout=_deadline(scenario),
                          **kwargs)
    try:
        with injection.source_faults(scenario, dominfo, xend_handle,
                                     socket_wrappers,
                                     host_store=source_store,
                                     migrate_again=migrate_again,
                                     record=injected):
            report = run_policy(scenario.policy, dominfo, target.port,
                                platform, store, options,
                                timeout=_deadline(scenario),
                                wrap_socket=wrap_socket, failures=failures)
    except Exception as exc:
        error = "%s: %s" % (type(exc).__name__, exc)
    finally:
        core_log.removeHandler(capture)
        if previous_level is not None:
            core_log.setLevel(previous_level)
    source_done = clock()
    xs_ops = source_api.handle.count - (ops_at_image[0] if ops_at_image
                                        else source_api.handle.count)

    target.wait_idle(_deadline(scenario))
    _wait_for_landings(guest, actors, scenario)
    guest.join(_LANDING_SLACK)
    if source_store.embedded is not None:
        # A fault no request took must not hit the checks.
        source_store.embedded.clear_faults()
    leftovers = _leftovers(source_store, dominfo, actors)
    verdict = disk.check()
    store_ops = None
    if store_ops_before is not None:
        store_ops = source_store.op_count - store_ops_before
    result = _result(scenario, guest, platform, target, dominfo, actors,
                     verdict, report, error, source_done, xs_ops, store_ops)
    result.core_log = list(capture.lines)
    result.leftovers = leftovers
    result.destroy_failed = bool(destroy_failures)
    result.source_destroyed_ms = _ms(dominfo.times.get("domid_cleared"),
                                     guest.suspended_at)
    if platform.image_sent_at is not None:
        result.handover_ms = (source_done - platform.image_sent_at) * 1000.0
        result.stalled_ms = meter.stalled(platform.image_sent_at,
                                          source_done) * 1000.0
    # The migration's own connection is the first (a second migration's
    # comes later).
    result.target_sent_err = any(
        run.reply is not None and "(err" in run.reply
        for run in target.runs[:1])
    result.migration_failed = bool(failures) or error is not None
    result.bystanders_touched = list(injected.bystanders_touched)
    result.second_migration = injected.second_migration
    result.violations = violations(result)
    return result


def _leftovers(host_store, dominfo, actors):
    """What a destroyed source copy left in the source's xenstore, read
    through a connection of its own (``leftovers.left_behind``)."""
    if dominfo.destroyed_domid is None:
        return []
    api = host_store.api(thread_name="leftover-check")
    try:
        return left_behind(api.xstransact, dominfo,
                           [actor for actor, _api in actors])
    finally:
        host_store.release(api)


def _wait_for_landings(guest, actors, scenario):
    """In-flight writes complete on their own after the suspend: wait for
    the last one (bounded by its due time plus slack)."""
    if guest.suspended_at is None or not guest.specs:
        return
    due = guest.suspended_at + max(s.delay for s in guest.specs)
    deadline = due + _LANDING_SLACK
    for actor, _api in actors:
        left = deadline - time.monotonic()
        actor.wait_for(lambda a: a.pending() == 0, max(left, 0.0))


def _result(scenario, guest, platform, target, dominfo, actors, verdict,
            report, error, source_done, xs_ops, store_ops):
    suspend = guest.suspended_at
    # The migration's own connection (a second migration's comes later).
    run = target.runs[0] if target.runs else None
    at_target = run is not None and run.running
    at_source = "source" in guest.ran and dominfo.state != "destroyed"
    if at_target and at_source:
        outcome = TWICE
    elif at_target:
        outcome = AT_TARGET
    elif at_source:
        outcome = RESUMED
    else:
        outcome = LOST
    completions = [r.completed_at for actor, _api in actors
                   for r in actor.requests]
    last_write = None
    if completions and None not in completions:
        last_write = max(completions)
    confirmed = []
    for actor, _api in actors:
        confirmed.append(getattr(actor, "shutdown_done_at", None)
                         or actor.removed_at)
    backends_confirmed = None
    if confirmed and None not in confirmed:
        backends_confirmed = max(confirmed)
    released = run.released_at if run is not None else None
    unpaused = run.unpaused_at if run is not None else None
    resumed = guest.ran.get("source")
    if outcome in (AT_TARGET, TWICE):
        back = unpaused
    elif outcome == RESUMED:
        back = resumed
    else:
        back = None
    gate = None
    if released is not None and platform.image_sent_at is not None:
        gate = (released - platform.image_sent_at) * 1000.0
    after_write = None
    if released is not None and last_write is not None:
        after_write = (released - last_write) * 1000.0
    drains = []
    for actor, _api in actors:
        done_at = getattr(actor, "shutdown_done_at", None)
        if done_at is not None:
            drains.append([actor.name, "shutdown-done", _ms(done_at, suspend)])
        elif actor.removed_at is not None:
            drains.append([actor.name, "backend-gone",
                           _ms(actor.removed_at, suspend)])
    seen = [t for actor, _api in actors
            for t in (actor.unregistered_at,
                      getattr(actor, "shutdown_requested_at", None))
            if t is not None]
    restore = None
    if unpaused is not None and released is not None:
        restore = (unpaused - released) * 1000.0
    limit = over = None
    if (outcome == AT_TARGET and restore is not None and suspend is not None
            and platform.image_sent_at is not None
            and (backends_confirmed is not None or not actors)):
        ready = platform.image_sent_at
        if backends_confirmed is not None:
            ready = max(ready, backends_confirmed)
        limit = (ready - suspend) * 1000.0 + restore
        over = _ms(back, suspend) - limit
    destroy_started = dominfo.times.get("destroy_started")
    said = None
    said_at = None
    if run is not None and run.replied_at is not None:
        verdict_text = run.reply.replace(READY_REPLY, "", 1).lstrip()
        if verdict_text.startswith("(err"):
            said = "err"
        elif verdict_text.startswith("(ok"):
            said = "ok"
        said_at = run.replied_at
    backend_drains = []
    writes_landed = []
    for actor, _api in actors:
        backend_drains.append([actor.name, _ms(
            getattr(actor, "shutdown_done_at", None) or actor.removed_at,
            suspend)])
        if actor.requests:
            landed = [r.completed_at for r in actor.requests]
            writes_landed.append([actor.name, None if None in landed
                                  else _ms(max(landed), suspend)])
    released_force = dominfo.force_releases()
    fast_resumes = dominfo.fast_resumes()
    return RunResult(
        source_destroy_started_ms=_ms(destroy_started, suspend),
        target_ran=[[_ms(r.unpaused_at, suspend), _ms(r.destroyed_at, suspend)]
                    for r in target.runs if r.unpaused_at is not None],
        target_said=said,
        target_said_ms=_ms(said_at, suspend),
        backend_drains=backend_drains,
        writes_landed=writes_landed,
        devices_force_released_ms=(_ms(min(released_force), suspend)
                                   if released_force else None),
        fast_resumes_ms=[_ms(t, suspend) for t in fast_resumes],
        early_release=(scenario.early_release
                       if scenario.policy in FASTMIG_POLICIES else None),
        suspend_ms=0.0 if suspend is not None else None,
        image_sent_ms=_ms(platform.image_sent_at, suspend),
        drains_confirmed=drains,
        devices_released_ms=_ms(min(seen), suspend) if seen else None,
        restore_ms=restore,
        limit_ms=limit,
        over_limit_ms=over,
        resume_path=dominfo.resume_path,
        # A fast resume after the devices were force-released.
        fast_resume_after_release=bool(
            released_force and fast_resumes
            and min(released_force) <= max(fast_resumes)),
        handover_outcome=report.outcome if report is not None else None,
        policy=scenario.policy,
        memory_gb=scenario.memory_gb,
        outcome=outcome,
        blackout_ms=_ms(back, suspend),
        gate_ms=gate,
        release_after_last_write_ms=after_write,
        xs_ops=xs_ops,
        store_ops=store_ops,
        disk_clean=verdict.clean,
        stale_blocks=[p.describe() for p in verdict.problems],
        last_write_ms=_ms(last_write, suspend),
        backends_confirmed_ms=_ms(backends_confirmed, suspend),
        released_ms=_ms(released, suspend),
        unpaused_ms=_ms(unpaused, suspend),
        resumed_ms=_ms(resumed, suspend),
        source_done_ms=_ms(source_done, suspend),
        handover=report.summary() if report is not None else None,
        drain_confirmations=[
            [device, how, seconds * 1000.0]
            for device, how, seconds in (report.devices if report is not None
                                         else [])],
        handover_path=report.path if report is not None else None,
        error=error,
        target_error=run.error if run is not None else None,
        core_log=[],
        scenario=scenario.knobs(),
    )

