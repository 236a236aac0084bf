"""The guest's block I/O around the migration, and the source's xend model.

Before the suspend the guest has requests in flight on every disk; the
source's backend actors (``fastmig_tools.models.blkback``) complete each
one ``delay`` seconds after the suspend and its data then lands in the
shared disk file, whatever the toolstack does.  Wherever the guest runs
again (at the target after its unpause, or at the source after a resume)
it first re-issues every request that was in flight, as blkfront's
``blkif_recover`` does, and then writes newer data to the same blocks;
after a SUSPEND_CANCEL fast resume at the source it carries on with its
ring instead (``carry_on``).
"""
from __future__ import annotations

import functools
import threading
import time

from fastmig_tools.models.blkback import (
    ClassicBlkback, HungBlkback, InflightRequest, ShutdownRequestBlkback,
    advertise_shutdown_request)
from fastmig_tools.models.domain import ModelDomainInfo
from fastmig_tools.rehearse.disk import INFLIGHT, NEWER, SharedDisk, block_of
from fastmig_tools.rehearse.scenario import InflightSpec

__all__ = ["GuestIO", "RehearsalDomainInfo", "BACKEND_FACTORIES",
           "start_source_backends", "stop_backends"]

BACKEND_FACTORIES = {
    "classic": ClassicBlkback,
    "shutdown-request": ShutdownRequestBlkback,
    "hung": HungBlkback,
    "buggy": functools.partial(ClassicBlkback, remove_before_drain=True),
}


class GuestIO:
    """The guest's view of its disks across the migration.

    Thread safe.  ``run_again(host)`` happens at most once per host; the
    writes it makes land before it returns.
    """

    def __init__(self, disk: SharedDisk, specs: list[InflightSpec],
                 clock=time.monotonic):
        self.disk = disk
        self.specs = list(specs)
        self.clock = clock
        self._lock = threading.Lock()
        self.ran: dict[str, float] = {}
        self.suspended_at: float | None = None
        self._threads: list[threading.Thread] = []
        for spec in self.specs:
            disk.issue(spec.device, spec.slot, INFLIGHT)

    def shadow_ring(self) -> list[dict]:
        """The in-flight requests as blkfront's shadow ring holds them."""
        return [{"device": s.device, "slot": s.slot} for s in self.specs]

    def suspended(self, t: float) -> None:
        self.suspended_at = t
        self.disk.epoch = t

    def run_again(self, host: str, ring: list[dict] | None = None) -> float:
        """The guest runs on ``host``: re-issue, then write newer data."""
        with self._lock:
            if host in self.ran:
                return self.ran[host]
            self.ran[host] = t = self.clock()
        entries = ring if ring is not None else self.shadow_ring()
        for entry in entries:
            self.disk.write(host, entry["device"], entry["slot"], INFLIGHT)
        for entry in entries:
            self.disk.issue(entry["device"], entry["slot"], NEWER)
            self.disk.write(host, entry["device"], entry["slot"], NEWER)
        return t


    def carry_on(self, host: str, t: float, wait_for_inflight) -> None:
        """A SUSPEND_CANCEL fast resume on ``host``: blkfront carries on
        with its ring as it was (no ``blkif_recover``), so nothing is
        re-issued and the guest's next writes to those blocks come after
        their in-flight requests completed (``wait_for_inflight()``, on a
        thread of its own: xend's resume does not wait for it).
        ``join`` waits for those writes."""
        with self._lock:
            if host in self.ran:
                return
            self.ran[host] = t

        def write_newer():
            wait_for_inflight()
            for entry in self.shadow_ring():
                self.disk.issue(entry["device"], entry["slot"], NEWER)
                self.disk.write(host, entry["device"], entry["slot"], NEWER)
        thread = threading.Thread(target=write_newer, daemon=True,
                                  name="guest-carries-on")
        self._threads.append(thread)
        thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class RehearsalDomainInfo(ModelDomainInfo):
    """The source's ``XendDomainInfo`` model, telling the rehearsal when
    the guest runs again at the source (whichever path resumed it)."""

    def __init__(self, *args, on_resumed=None, **kwargs):
        self.on_resumed = on_resumed
        super().__init__(*args, **kwargs)

    def _set_state(self, state, t=None):
        t = super()._set_state(state, t)
        if state == "resumed" and self.on_resumed is not None:
            self.on_resumed(t)
        return t

    # XendDomain.domain_migrate calls these before connecting; the model
    # guest has nothing to check.
    def testMigrateDevices(self, network, dst):
        return 0

    def checkLiveMigrateMemory(self):
        return None


def start_source_backends(host_store, dominfo: ModelDomainInfo,
                          guest: GuestIO, backend: str,
                          teardown: float = 0.0) -> list:
    """One backend actor per disk of ``dominfo``, each on its own
    connection, holding that disk's in-flight requests; ``teardown``
    seconds pass between a drain and udev's hotplug cleanup.  On failure
    the actors already started are stopped."""
    factory = BACKEND_FACTORIES[backend]
    if backend == "shutdown-request":
        advertise_shutdown_request(dominfo.store, dominfo.backend_domid)
    actors = []
    try:
        for index, device in enumerate(dominfo.layout.block_devices):
            requests = [InflightRequest(sector=block_of(s.device, s.slot),
                                        delay=s.delay)
                        for s in guest.specs if s.device == index]

            def landed(request, t, index=index):
                guest.disk.write("source", index,
                                 request.sector - block_of(index, 0),
                                 INFLIGHT)
            api = host_store.api(thread_name="blkback-watcher")
            actor = factory(api.store(), device.backend, requests=requests,
                            on_complete=landed, hotplug_delay=teardown,
                            name="%s-%d" % (device.devclass, device.devid))
            actors.append((actor, api))
            actor.start()
    except BaseException:
        stop_backends(host_store, actors)
        raise
    return actors


def stop_backends(host_store, actors) -> None:
    for actor, api in actors:
        try:
            actor.stop()
        finally:
            host_store.release(api)
