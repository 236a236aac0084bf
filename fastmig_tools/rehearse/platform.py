"""The rehearsal's side of the core's platform seam (no hypervisor).

``ModelPlatform`` is the hypervisor side that the model of the patched
save (``fastmig_tools.models.patched_save``) calls: it writes a modest image in
rounds that take a stated fixed time, asks for the suspend before the last
round, and records when the image was sent and when the guest was resumed.
The last round starts when the suspend handler tells xc_save ``done``
(``xc_save_told_done``), as the real xc_save, a process of its own, goes
on while xend's handler still runs.
"""
from __future__ import annotations

import json
import time

from fastmig_tools.rehearse.stream import (
    END, PAGE, RING, config_sxp, write_record)

__all__ = ["ModelPlatform", "PRECOPY_ROUNDS", "XcSaveFailed"]

PRECOPY_ROUNDS = 4


class XcSaveFailed(RuntimeError):
    """xend's forkHelper raising because xc_save exited non-zero."""


class ModelPlatform:
    """xc_save, xc.domain_resume and xenstore's resume, modelled.

    ``run_xc_save`` never calls ``on_suspend`` more than once and never
    returns before the whole image (ending with the shadow ring and the
    terminator) was written to ``fd``.
    """

    def __init__(self, scenario, guest_io, disks, clock=time.monotonic):
        self.scenario = scenario
        self.guest_io = guest_io
        self.disks = list(disks)          # [(dev, uname)]
        self.clock = clock
        self.suspend_asked_at: float | None = None
        # xc_save was told "done" (its last round began).
        self.last_round_started_at: float | None = None
        self.xc_save_failed_at: float | None = None
        self.image_sent_at: float | None = None
        self.image_bytes = 0
        self.resumed: list[tuple[float, object, int]] = []
        self.store_resumed: list[tuple[float, object]] = []

    def config_string(self, dominfo) -> str:
        return config_sxp(dominfo.getName(), dominfo.uuid,
                          int(dominfo.memory_gb * 1024), self.disks,
                          dominfo.getDomid())

    def xc_save_told_done(self):
        """The suspend handler wrote ``done``: xc_save's last round starts
        (in xc_save's own process, concurrently with what xend does next)."""
        if self.last_round_started_at is None:
            self.last_round_started_at = self.clock()

    def run_xc_save(self, fd, dominfo, live, hvm, on_suspend):
        scenario = self.scenario
        chunk = b"\xa5" * (scenario.image_kib * 1024 // (PRECOPY_ROUNDS + 1))
        for _round in range(PRECOPY_ROUNDS):
            write_record(fd, PAGE, chunk)
            self.image_bytes += len(chunk)
            if scenario.precopy_seconds > 0:
                # A modelled duration (the live rounds), not a wait.
                time.sleep(scenario.precopy_seconds / PRECOPY_ROUNDS)
        self.suspend_asked_at = self.clock()
        on_suspend()
        # A caller that never says "done" (the other policies' models)
        # lets xc_save go on once its handler returned.
        self.xc_save_told_done()
        started = self.last_round_started_at
        if scenario.xc_save_fails:
            self._sleep_until(started + scenario.last_round_seconds / 2)
            self.xc_save_failed_at = self.clock()
            raise XcSaveFailed("xc_save failed in the last memory round "
                               "(injected)")
        self._sleep_until(started + scenario.last_round_seconds)
        write_record(fd, PAGE, chunk)
        ring = json.dumps(self.guest_io.shadow_ring()).encode("ascii")
        write_record(fd, RING, ring)
        write_record(fd, END)
        self.image_bytes += len(chunk) + len(ring)
        self.image_sent_at = self.clock()

    def _sleep_until(self, when):
        # A modelled duration (the last round), not a wait.
        left = when - self.clock()
        if left > 0:
            time.sleep(left)

    def write_device_model_state(self, fd, domid):
        # The qemu record is not modelled: the target's model reads the
        # image up to its terminator only.
        self.device_model_saved_at = self.clock()

    def domain_resume(self, domid, fast):
        t = self.clock()
        self.resumed.append((t, domid, fast))
        self.guest_io.run_again("source")

    def resume_store(self, domid):
        self.store_resumed.append((self.clock(), domid))

    def error(self, message):
        return RuntimeError(message)

    def invalid_domain(self, domid):
        return LookupError("invalid domain %s" % domid)
