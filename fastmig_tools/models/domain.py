"""A model of xend 3.1's ``XendDomainInfo`` around a migration.

``ModelDomainInfo`` has exactly the dominfo surface the core uses
(docs/architecture.md, "The dominfo surface") and does on the store what
xend 3.1.0 does (``tools/python/xen/xend/XendDomainInfo.py``,
``server/DevController.py``, ``server/BlktapController.py``), recording
when each step happened so a rehearsal can check the order.  The domain's
xenstore layout it writes and re-creates is ``models.layout``'s.

Everything goes through the store handle (``.xstransact`` / ``.xswatch``).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from typing import Callable

from fastmig_tools.models.resume31 import resume_domain
from fastmig_tools.models.layout import (
    DomainLayout,
    write_devices,
    write_domain_layout,
    write_keys,
)

__all__ = [
    "VmError",
    "ModelXendConfig",
    "ModelImage",
    "ModelDevController",
    "ModelDomainInfo",
    "MIGRATE_TIMEOUT",
    "VALID_DEVICES",
]

log = logging.getLogger(__name__)

MIGRATE_TIMEOUT = 30.0
# XendDevices.valid_devices() in 3.1: the classes _releaseDevices walks.
VALID_DEVICES = ("vbd", "vif", "vtpm", "pci", "ioports", "irq", "usb",
                 "tap", "vfb", "vkbd", "console")
_CLOSING = "5"


class VmError(Exception):
    """xend's VmError, as DevController raises it."""


class ModelXendConfig(dict):
    """The bits of XendConfig the handover reads."""

    def __init__(self, *args, hvm: bool = False, notes: dict | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._hvm = hvm
        self._notes = dict(notes or {})

    def is_hvm(self) -> bool:
        return self._hvm

    def get_notes(self) -> dict:
        return self._notes


class ModelImage:
    """An HVM image: ``destroy(suspend)`` stops qemu-dm (recorded only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.destroyed: list[tuple[float, bool]] = []
        self.device_model_created: list[float] = []

    def destroy(self, suspend: bool = False) -> None:
        self.destroyed.append((self.clock(), bool(suspend)))

    def createDeviceModel(self) -> None:
        self.device_model_created.append(self.clock())


class ModelDevController:
    """3.1's DevController for one class (blkif/Blktap/netif rules)."""

    def __init__(self, vm: "ModelDomainInfo", deviceClass: str):
        self.vm = vm
        self.deviceClass = deviceClass

    @property
    def _xst(self):
        return self.vm.store.xstransact

    def frontendRoot(self) -> str:
        # BlktapController: tap frontends are blkfront's, under device/vbd.
        cls = "vbd" if self.deviceClass == "tap" else self.deviceClass
        return "%s/device/%s" % (self.vm.getDomainPath(), cls)

    def frontendPath(self, devid) -> str:
        return "%s/%d" % (self.frontendRoot(), int(devid))

    def backendRoot(self) -> str:
        """Like 3.1: assumes dom0 is the backend, and uses the *current*
        domid (None once the domain was destroyed)."""
        return "/local/domain/0/backend/%s/%s" % (self.deviceClass,
                                                  self.vm.getDomid())

    def deviceIDs(self, transaction=None) -> list[int]:
        root = self.backendRoot()
        if transaction is not None:
            return [int(x.split("/")[-1]) for x in transaction.list(root)]
        return [int(x) for x in self._xst.List(root)]

    def readBackend(self, devid, *args):
        backpath = self._xst.Read(self.frontendPath(devid), "backend")
        if not backpath:
            raise VmError("Device %s not connected" % devid)
        return self._xst.Read(backpath, *args)

    def writeBackend(self, devid, key: str, value: str) -> None:
        backpath = self._xst.Read(self.frontendPath(devid), "backend")
        if not backpath:
            raise VmError("Device %s not connected" % devid)
        self._xst.Write(backpath, key, value)

    def destroyDevice(self, devid, force: bool) -> None:
        """online=0, then state=Closing; with ``force`` also remove the
        backend (named by the frontend) and the frontend; always remove
        ``/vm/<uuid>/device/<cls>/<devid>``.  Raises VmError when the
        frontend has no ``backend`` key, as 3.1 does."""
        self.vm._record("destroyDevice", self.deviceClass, devid, force)
        try:
            devid = int(devid)
        except ValueError:
            if self.deviceClass not in ("vbd", "tap"):
                raise
            devid = self._devid_of_name(devid)
        self.writeBackend(devid, "online", "0")
        self.writeBackend(devid, "state", _CLOSING)
        if force:
            frontpath = self.frontendPath(devid)
            backpath = self._xst.Read(frontpath, "backend")
            if backpath:
                self._xst.Remove(backpath)
            self._xst.Remove(frontpath)
        self.vm._removeVm("device/%s/%d" % (self.deviceClass, devid))

    def _devid_of_name(self, name: str) -> int:
        end = name.split("/")[-1]
        for i in self.deviceIDs():
            d = self.readBackend(i, "dev")
            if d == name or d == end:
                return i
        raise VmError("Device %s not connected" % name)


class ModelDomainInfo:
    """xend 3.1.0's XendDomainInfo, as far as a migration touches it.

    Builds on a store handle and, unless ``write_layout`` is False, writes
    the domain's layout at construction.  ``destroyDomain`` takes
    ``memory_gb * destroy_seconds_per_gb`` seconds and then clears the
    domid *before* releasing devices (3.1.0's bug that makes the stock
    ``testDeviceComplete`` vacuous).  ``_releaseDevices(force=True)``,
    ``testDeviceComplete(io_done=True)`` and ``resumeDomain(devices_released)``
    follow the patch series' hunks.

    State: ``state`` in running / suspended / destroyed / resumed;
    ``times`` maps events to monotonic times; ``calls`` lists
    ``(t, name, args)`` of every surface method called.
    """

    def __init__(self, store, domid: int, name: str, uuid: str | None = None,
                 *, vbds=(), taps=(), vifs=(), backend_domid: int = 0,
                 memory_gb: float = 1.0, destroy_seconds_per_gb: float = 0.0,
                 notes: dict | None = None, hvm: bool = False,
                 write_layout: bool = True, suspend_delay: float = 0.0,
                 migrate_timeout: float = MIGRATE_TIMEOUT,
                 on_suspend: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.domid = domid
        self.uuid = uuid or str(uuidlib.uuid4())
        self.dompath = "/local/domain/%d" % domid
        self.vmpath = "/vm/%s" % self.uuid
        self.backend_domid = backend_domid
        self.memory_gb = memory_gb
        self.destroy_seconds_per_gb = destroy_seconds_per_gb
        self.suspend_delay = suspend_delay
        self.migrate_timeout = migrate_timeout
        self.clock = clock
        self.info = ModelXendConfig(
            {"name_label": name, "uuid": self.uuid,
             "memory_dynamic_max": int(memory_gb * 1024 ** 3)},
            hvm=hvm, notes=notes)
        self.image = ModelImage(clock) if hvm else None
        self.device_specs = {"vbds": tuple(vbds), "taps": tuple(taps),
                             "vifs": tuple(vifs)}
        self.suspend_listeners: list[Callable[[float], object]] = []
        if on_suspend is not None:
            self.suspend_listeners.append(on_suspend)

        self._lock = threading.Condition()
        self._state = "running"
        self._suspend_due: float | None = None
        self.times: dict[str, float] = {"running": clock()}
        self.calls: list[tuple[float, str, tuple]] = []
        self.migrate_calls: list[tuple] = []
        self.resume_path: str | None = None
        self.resume_error: BaseException | None = None
        self.destroyed_domid: int | None = None
        self.store_port = 1
        self.console_port = 2
        self._next_port = 3
        self._controllers: dict[str, ModelDevController] = {}
        self.layout: DomainLayout | None = None
        if write_layout:
            self.layout = write_domain_layout(
                store, domid, name, self.uuid, vbds, taps, vifs,
                backend_domid, memory_mb=int(memory_gb * 1024))

    # ---- bookkeeping ------------------------------------------------------

    def _record(self, name: str, *args) -> None:
        self.calls.append((self.clock(), name, args))

    def called(self, name: str) -> list[tuple[float, str, tuple]]:
        return [c for c in self.calls if c[1] == name]

    def _when_called_with_true_second_arg(self, name: str) -> list[float]:
        return [t for t, _name, args in self.called(name)
                if len(args) > 1 and args[1]]

    def force_releases(self) -> list[float]:
        """When ``_releaseDevices(force=True)`` was called."""
        return self._when_called_with_true_second_arg("_releaseDevices")

    def fast_resumes(self) -> list[float]:
        """When the hypervisor resumed the domain fast (SUSPEND_CANCEL)."""
        return self._when_called_with_true_second_arg("xc.domain_resume")

    @property
    def state(self) -> str:
        self._settle()
        with self._lock:
            return self._state

    def _set_state(self, state: str, t: float | None = None) -> float:
        t = self.clock() if t is None else t
        with self._lock:
            self._state = state
            self.times[state] = t
            self._lock.notify_all()
        return t

    def _settle_locked(self) -> float | None:
        """Turn a due suspension into the suspended state; return when."""
        if (self._state == "running" and self._suspend_due is not None
                and self.clock() >= self._suspend_due):
            t = self.clock()
            self._state = "suspended"
            self.times["suspended"] = t
            self._suspend_due = None
            self._lock.notify_all()
            return t
        return None

    def _settle(self) -> None:
        with self._lock:
            t = self._settle_locked()
        if t is not None:
            for listener in list(self.suspend_listeners):
                listener(t)

    # ---- the dominfo surface ------------------------------------------------

    def getDomid(self):
        return self.domid

    def getName(self) -> str:
        return self.info["name_label"]

    def setName(self, name: str) -> None:
        self._record("setName", name)
        self.info["name_label"] = name
        self.store.xstransact.Write(self.vmpath, "name", name)

    def getDomainPath(self) -> str:
        return self.dompath

    def getVmPath(self) -> str:
        return self.vmpath

    def shutdown(self, reason: str) -> None:
        """Ask the guest to shut down; ``suspend`` suspends it after
        ``suspend_delay`` (then the suspend listeners are called)."""
        self._record("shutdown", reason)
        if self.state != "running":
            raise RuntimeError("Domain cannot be shutdown")
        self.times["shutdown_requested"] = self.clock()
        self._removeVm("xend/previous_restart_time")
        self.store.xstransact.Write(self.dompath + "/control", "shutdown",
                                    reason)
        if reason == "suspend":
            with self._lock:
                self._suspend_due = self.clock() + self.suspend_delay
            self._settle()

    def waitForShutdown(self, timeout: float = 60.0) -> None:
        """Return once the guest has suspended.  Raises RuntimeError when
        no suspension is on its way or it is not reached within
        ``timeout`` (xend would block forever)."""
        self._record("waitForShutdown")
        deadline = time.monotonic() + timeout
        while True:
            self._settle()
            with self._lock:
                if self._state != "running":
                    break
                if self._suspend_due is None:
                    raise RuntimeError("waitForShutdown: no shutdown pending")
                budget = deadline - time.monotonic()
                if budget <= 0:
                    raise RuntimeError("waitForShutdown: timed out")
                self._lock.wait(max(min(self._suspend_due - self.clock(),
                                        budget), 0.0))
        self.times["wait_for_shutdown_returned"] = self.clock()

    def migrateDevices(self, network, dst, step, domName="") -> None:
        self._record("migrateDevices", network, dst, step, domName)
        self.migrate_calls.append((network, dst, step, domName))

    def destroyDomain(self) -> None:
        """3.1.0: domain_destroy (slow), domid = None, then cleanupDomain
        (stock device release, image, ``<dompath>``) and ``/vm/<uuid>``."""
        self._record("destroyDomain")
        self.times["destroy_started"] = self.clock()
        if self.domid is not None:
            duration = self.memory_gb * self.destroy_seconds_per_gb
            if duration > 0:
                # Models the non-preemptible relinquish hypercall.
                time.sleep(duration)
            self.destroyed_domid = self.domid
            self.domid = None
            self.times["domid_cleared"] = self.clock()
        self._releaseDevices()
        if self.image is not None:
            self.image.destroy()
            self.image = None
        self._removeDom()
        self._removeVm()
        self._set_state("destroyed")

    def resumeDomain(self, devices_released: bool = False) -> None:
        """3.1: fast with SUSPEND_CANCEL (unless the handover released the
        devices: the series' hunk), else release and re-create every
        device.  As 3.1's libxc, a non-cooperative resume of an HVM guest
        fails ("Cannot resume uncooperative HVM guests") and leaves it
        suspended.  Exceptions are logged and kept in ``resume_error``."""
        self._record("resumeDomain", devices_released)
        if self.domid is None:
            self.resume_path = "skipped"
            return
        try:
            self.resume_path = resume_domain(self, devices_released)
            self._set_state("resumed")
        except Exception as exc:
            log.exception("resumeDomain failed on domain %s", self.domid)
            self.resume_error = exc

    def xc_domain_resume(self, fast: bool) -> None:
        self._record("xc.domain_resume", self.domid, fast)

    def getDeviceController(self, name: str) -> ModelDevController:
        if name not in self._controllers:
            self._controllers[name] = ModelDevController(self, name)
        return self._controllers[name]

    # ---- the private methods the re-creating resume calls -------------------

    def _releaseDevices(self, suspend: bool = False, force: bool = False):
        """Stock 3.1: one transaction removing ``<dompath>/device/<cls>/*``
        (only ``image.destroy`` for a suspended HVM)."""
        self._record("_releaseDevices", suspend, force)
        if force:
            # The series' hunk: the handover's release of block devices.
            from xend_fastmig import release
            return release.release_block_devices(self, self.store)
        if suspend and self.image:
            self.image.destroy(suspend)
            return None
        while True:
            t = self.store.xstransact("%s/device" % self.dompath)
            try:
                for devclass in VALID_DEVICES:
                    for dev in t.list(devclass):
                        t.remove(dev)
            except Exception:
                t.abort()
                raise
            if t.commit():
                break
        self.times["devices_released"] = self.clock()
        return None

    def testDeviceComplete(self, io_done: bool = False):
        """Stock 3.1: poll vbd ``deviceIDs()`` (of the *current* domid),
        0.1 s per device present, until none or ``migrate_timeout``."""
        self._record("testDeviceComplete", io_done)
        if io_done:
            # The series' hunk: the handover's drain wait.
            from xend_fastmig import drain
            return drain.wait_for_drain(self)
        self._poll_gone("vbd")
        self.times["test_device_complete_returned"] = self.clock()
        return None

    def testvifsComplete(self) -> None:
        self._record("testvifsComplete")
        self._poll_gone("vif")

    def _poll_gone(self, devclass: str) -> None:
        start = time.monotonic()
        controller = self.getDeviceController(devclass)
        while True:
            present = controller.deviceIDs()
            for _devid in present:
                time.sleep(0.1)
            if not present:
                return
            if time.monotonic() - start >= self.migrate_timeout:
                log.info("Dev still active but hit max loop timeout")
                return

    def _resetChannels(self) -> None:
        self._record("_resetChannels")

    def _removeDom(self, *args) -> None:
        self.store.xstransact.Remove(self.dompath, *args)

    def _removeVm(self, *args) -> None:
        self.store.xstransact.Remove(self.vmpath, *args)

    def _writeVm(self, key: str, value: str) -> None:
        self.store.xstransact.Write(self.vmpath, key, value)

    def _writeDom(self, key: str, value: str) -> None:
        self.store.xstransact.Write(self.dompath, key, value)

    def storeDom(self, key: str, value: str) -> None:
        self._writeDom(key, value)

    def _createChannels(self) -> None:
        self._record("_createChannels")
        self.store_port, self.console_port = self._next_port, self._next_port + 1
        self._next_port += 2

    def _introduceDomain(self) -> None:
        self._record("_introduceDomain")
        if self.domid is None:
            raise AssertionError("introducing a destroyed domain")

    def _storeDomDetails(self) -> None:
        self._record("_storeDomDetails")
        write_keys(self.store, self.dompath, {
            "domid": self.domid,
            "vm": self.vmpath,
            "name": self.getName(),
            "console/limit": 1048576,
            "memory/target": self.info["memory_dynamic_max"] // 1024,
            "console/port": self.console_port,
            "store/port": self.store_port,
            "control/platform-feature-multiprocessor-suspend": 1,
        })

    def _createDevices(self) -> None:
        """Write every configured device again (as connected).

        As 3.1's ``DevController.createDevice``, refuses (VmError) a
        device whose old backend directory is still there."""
        self._record("_createDevices")
        backhome = "/local/domain/%d/backend" % self.backend_domid
        for devclass, specs in (("vbd", self.device_specs["vbds"]),
                                ("tap", self.device_specs["taps"]),
                                ("vif", self.device_specs["vifs"])):
            root = "%s/%s/%d" % (backhome, devclass, self.domid)
            if specs and self.store.xstransact.List(root):
                raise VmError("Device %s/%s is already connected."
                              % (devclass, self.store.xstransact.List(root)[0]))
        devices = write_devices(self.store, self.domid, self.uuid,
                                self.device_specs["vbds"],
                                self.device_specs["taps"],
                                self.device_specs["vifs"],
                                self.backend_domid)
        self.layout = DomainLayout(self.domid, self.getName(), self.uuid,
                                   self.dompath, self.vmpath,
                                   self.backend_domid, devices)
        self.times["devices_created"] = self.clock()
        if self.image is not None:
            self.image.createDeviceModel()
