"""What a Xen 3.1 PV domain looks like in xenstore once it runs.

``write_domain_layout`` writes what a running 3.1 PV guest looks like once
xend created its devices, the hotplug scripts ran and both driver ends
connected (domain, ``/vm`` and devices); ``write_devices`` writes the
devices alone, as xend's device re-creation does.  ``DomainLayout`` and
``DeviceLayout`` say where everything went.

Everything goes through the store handle (``.xstransact``).
"""
from __future__ import annotations

import dataclasses

__all__ = [
    "DeviceLayout",
    "DomainLayout",
    "write_domain_layout",
    "write_devices",
    "write_keys",
    "vbd_devid",
]

_XVD_MAJOR = 202


@dataclasses.dataclass
class DeviceLayout:
    """Where one device lives in the store."""

    devclass: str          # "vbd", "tap" or "vif"
    devid: int
    frontend: str          # /local/domain/<domid>/device/<vbd|vif>/<devid>
    backend: str           # /local/domain/<b>/backend/<cls>/<domid>/<devid>
    vm_device: str         # /vm/<uuid>/device/<cls>/<devid>
    dev: str | None = None  # guest name ("xvda") for disks
    spec: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DomainLayout:
    """What ``write_domain_layout`` wrote."""

    domid: int
    name: str
    uuid: str
    dompath: str
    vmpath: str
    backend_domid: int
    devices: list[DeviceLayout]

    def of_class(self, devclass: str) -> list[DeviceLayout]:
        return [d for d in self.devices if d.devclass == devclass]

    @property
    def vbds(self) -> list[DeviceLayout]:
        return self.of_class("vbd")

    @property
    def taps(self) -> list[DeviceLayout]:
        return self.of_class("tap")

    @property
    def vifs(self) -> list[DeviceLayout]:
        return self.of_class("vif")

    @property
    def block_devices(self) -> list[DeviceLayout]:
        return [d for d in self.devices if d.devclass in ("vbd", "tap")]

    def device(self, devclass: str, devid: int) -> DeviceLayout:
        for d in self.devices:
            if d.devclass == devclass and d.devid == int(devid):
                return d
        raise KeyError("%s/%s" % (devclass, devid))


def vbd_devid(index: int) -> int:
    """Linux's device number of xvd<a+index>: 202*256 + 16*index."""
    return _XVD_MAJOR * 256 + 16 * index


def _disk_spec(item, index: int, devclass: str) -> dict:
    """Normalise a vbd/tap description into xend's config keys."""
    if isinstance(item, dict):
        spec = dict(item)
    else:
        spec = {"uname": str(item)}
    spec.setdefault("dev", "xvd%s" % chr(ord("a") + index))
    spec.setdefault("mode", "w")
    if "uname" not in spec:
        params = spec.get("params", "/dev/null")
        spec["uname"] = "%s:%s" % ("tap" if devclass == "tap" else "phy",
                                   params)
    if ":" not in spec["uname"]:
        prefix = "tap:aio" if devclass == "tap" else "phy"
        spec["uname"] = "%s:%s" % (prefix, spec["uname"])
    typ, params = spec["uname"].split(":", 1)
    spec.setdefault("type", typ)
    spec.setdefault("params", params)
    return spec


def _vif_spec(item, index: int, domid: int) -> dict:
    spec = dict(item) if isinstance(item, dict) else {}
    if isinstance(item, str):
        spec["mac"] = item
    spec.setdefault("mac", "00:16:3e:%02x:%02x:%02x" % (
        (domid >> 8) & 0x7f, domid & 0xff, index & 0xff))
    spec.setdefault("bridge", "xenbr0")
    spec.setdefault("script", "vif-bridge")
    spec.setdefault("type", "netfront")
    return spec


def write_keys(store, base: str, values: dict) -> None:
    """Write ``base/key`` = ``str(value)`` for every item of ``values``."""
    write = store.xstransact.Write
    for key, value in values.items():
        write(base, key, str(value))


def write_devices(store, domid: int, uuid: str, vbds=(), taps=(), vifs=(),
                  backend_domid: int = 0) -> list[DeviceLayout]:
    """Write the devices of a running 3.1 PV domain; return where they are.

    Disks (vbds, then taps) take xvda, xvdb, ... unless a spec names its
    ``dev``; a tap's frontend lives under ``device/vbd`` as blkfront and
    3.1's BlktapController have it.  vifs are numbered 0, 1, ...
    A spec is a uname/path string or a dict of xend's config keys.
    """
    dompath = "/local/domain/%d" % domid
    vmpath = "/vm/%s" % uuid
    backhome = "/local/domain/%d" % backend_domid
    name_of = store.xstransact.Read(dompath, "name") or ""
    devices: list[DeviceLayout] = []

    disks = [("vbd", v) for v in vbds] + [("tap", t) for t in taps]
    for index, (devclass, item) in enumerate(disks):
        spec = _disk_spec(item, index, devclass)
        devid = int(spec.get("devid", _parse_xvd(spec["dev"])))
        frontend = "%s/device/vbd/%d" % (dompath, devid)
        backend = "%s/backend/%s/%d/%d" % (backhome, devclass, domid, devid)
        vm_device = "%s/device/%s/%d" % (vmpath, devclass, devid)
        # Backend first: blkback probes from it and reads the frontend.
        write_keys(store, backend, {
            "domain": name_of,
            "frontend": frontend,
            "frontend-id": domid,
            "dev": spec["dev"],
            "type": spec["type"],
            "params": spec["params"],
            "mode": spec["mode"],
            "online": 1,
            "state": 4,
            "hotplug-status": "connected",
            "physical-device": "%x:%x" % (253, index),
            "feature-barrier": 1,
            "sectors": spec.get("sectors", 2097152),
            "info": 0,
            "sector-size": 512,
        })
        write_keys(store, frontend, {
            "backend": backend,
            "backend-id": backend_domid,
            "virtual-device": devid,
            "device-type": spec.get("device_type", "disk"),
            "ring-ref": 8 + index,
            "event-channel": 10 + index,
            "state": 4,
        })
        write_keys(store, vm_device, {
            "dev": spec["dev"], "uname": spec["uname"], "mode": spec["mode"]})
        devices.append(DeviceLayout(devclass, devid, frontend, backend,
                                    vm_device, spec["dev"], spec))

    for devid, item in enumerate(vifs):
        spec = _vif_spec(item, devid, domid)
        frontend = "%s/device/vif/%d" % (dompath, devid)
        backend = "%s/backend/vif/%d/%d" % (backhome, domid, devid)
        vm_device = "%s/device/vif/%d" % (vmpath, devid)
        # netif.py writes these under /vm while computing the details.
        write_keys(store, vm_device, {
            "script": spec["script"], "mac": spec["mac"],
            "type": spec["type"], "bridge": spec["bridge"]})
        write_keys(store, backend, {
            "domain": name_of,
            "frontend": frontend,
            "frontend-id": domid,
            "script": "/etc/xen/scripts/%s" % spec["script"],
            "mac": spec["mac"],
            "bridge": spec["bridge"],
            "type": spec["type"],
            "handle": devid,
            "online": 1,
            "state": 4,
            "hotplug-status": "connected",
            "feature-sg": 1,
            "feature-gso-tcpv4": 1,
            "feature-rx-copy": 1,
        })
        write_keys(store, frontend, {
            "backend": backend,
            "backend-id": backend_domid,
            "handle": devid,
            "mac": spec["mac"],
            "tx-ring-ref": 100 + 2 * devid,
            "rx-ring-ref": 101 + 2 * devid,
            "event-channel": 20 + devid,
            "request-rx-copy": 1,
            "state": 4,
        })
        devices.append(DeviceLayout("vif", devid, frontend, backend,
                                    vm_device, None, spec))
    if vifs:
        store.xstransact.Write("%s/device-misc/vif" % dompath,
                               "nextDeviceID", str(len(vifs)))
    return devices


def _parse_xvd(dev: str) -> int:
    name = dev.split("/")[-1]
    if name.startswith("xvd") and len(name) >= 4 and name[3].isalpha():
        return vbd_devid(ord(name[3]) - ord("a")) + int(name[4:] or 0)
    if name.isdigit():
        return int(name)
    raise ValueError("cannot number disk %r" % dev)


def _write_domain_details(store, domid: int, name: str, uuid: str,
                          memory_mb: int = 1024, store_port: int = 1,
                          console_port: int = 2) -> None:
    dompath = "/local/domain/%d" % domid
    vmpath = "/vm/%s" % uuid
    write_keys(store, vmpath, {
        "uuid": uuid, "name": name, "memory": memory_mb, "maxmem": memory_mb,
        "vcpus": 1, "vcpu_avail": 1, "on_poweroff": "destroy",
        "on_reboot": "restart", "on_crash": "restart",
        "xend/restart_count": 0,
    })
    write_keys(store, dompath, {
        "vm": vmpath,
        "name": name,
        "domid": domid,
        "memory/target": memory_mb * 1024,
        "console/port": console_port,
        "console/ring-ref": 1000 + domid,
        "console/limit": 1048576,
        "store/port": store_port,
        "store/ring-ref": 2000 + domid,
        "cpu/0/availability": "online",
        "control/platform-feature-multiprocessor-suspend": 1,
    })


def write_domain_layout(store, domid: int, name: str, uuid: str, vbds=(),
                        taps=(), vifs=(), backend_domid: int = 0,
                        memory_mb: int = 1024) -> DomainLayout:
    """Write a running 3.1 PV domain (domain, /vm and devices).

    Returns the ``DomainLayout``.  Overwrites keys already there; never
    removes anything.
    """
    _write_domain_details(store, domid, name, uuid, memory_mb)
    devices = write_devices(store, domid, uuid, vbds, taps, vifs,
                            backend_domid)
    return DomainLayout(domid, name, uuid, "/local/domain/%d" % domid,
                        "/vm/%s" % uuid, backend_domid, devices)
