"""Two hosts on one machine, each running a Xen tree's real xend.

Typical use::

    with TwoHosts("/work/shared/xen/3.1.0", patches=[...],
                  xend_config={"xend-fast-migration": "no"}) as pair:
        guest = pair.create_guest(disks=1, memory_mb=1024)
        pair.arm_inflight(guest, delay=0.3)      # in flight at the suspend
        result = pair.migrate(guest, live=True)
        result.timings.gate, result.timings.blackout
        pair.disk_verdict().clean
        pair.leftovers()                          # {} when nothing is left

The source and the target may run different trees or patch lists
(``target_tree``, ``target_patches``, ``target_xend_config``), so
patched->stock and stock->patched runs are one argument away.
"""
from __future__ import annotations

import dataclasses
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from pathlib import Path

from fastmig_tools.xendharness.build import prepare_tree
from fastmig_tools.xendharness.disk import check_images, create_image
from fastmig_tools.xendharness.host import Host, HostError

__all__ = ["TwoHosts", "Guest", "MigrationResult", "Timings", "HostError"]

DOM_STATE_RUNNING = 2


@dataclasses.dataclass
class Guest:
    name: str
    domid: int                 # on the host it currently runs on
    host: Host
    disks: list                # image file paths
    devclass: str
    memory_mb: int
    hvm: bool
    config: str
    uuid: str


@dataclasses.dataclass
class Timings:
    """Seconds (time.time() differences) of one migration, None if unseen."""

    suspended: float | None = None       # guest suspended at the source
    image_sent: float | None = None      # xc_save finished writing
    gate_open: float | None = None       # target past its EOF gate
    unpaused: float | None = None        # target unpaused the guest
    source_destroyed: float | None = None  # source domain_destroy returned
    migrate_returned: float | None = None

    @property
    def gate(self):
        if self.image_sent is None or self.gate_open is None:
            return None
        return self.gate_open - self.image_sent

    @property
    def blackout(self):
        if self.suspended is None or self.unpaused is None:
            return None
        return self.unpaused - self.suspended


@dataclasses.dataclass
class MigrationResult:
    error: str | None            # what xend's domain_migrate raised, if anything
    target_domid: int | None     # the guest's domid at the target, if running
    timings: Timings

    @property
    def ok(self) -> bool:
        return self.error is None


class TwoHosts:
    def __init__(self, tree, patches=(), xend_config=None, *,
                 target_tree=None, target_patches=None, target_xend_config=None,
                 backend: str = "classic", target_backend: str | None = None,
                 destroy_seconds_per_gb: float = 0.05,
                 target_destroy_seconds_per_gb: float | None = None):
        self.source_tree = prepare_tree(tree, patches)
        self.target_tree = prepare_tree(target_tree or tree,
                                        patches if target_patches is None
                                        else target_patches)
        self.workdir = tempfile.mkdtemp(prefix="xendharness-")
        # Device-model state files live at machine-wide paths named by
        # domid (/tmp/xen.qemu-dm.<domid>); random domid ranges keep this
        # pair's apart from anyone else's on the machine.
        base = random.randrange(100, 16000)
        self.source = Host(self.source_tree, "source", backend=backend,
                           xend_config=xend_config,
                           destroy_seconds_per_gb=destroy_seconds_per_gb,
                           first_domid=base, workdir=self.workdir)
        self.target = Host(self.target_tree, "target",
                           backend=target_backend or backend,
                           xend_config=(xend_config if target_xend_config is None
                                        else target_xend_config),
                           destroy_seconds_per_gb=(
                               destroy_seconds_per_gb
                               if target_destroy_seconds_per_gb is None
                               else target_destroy_seconds_per_gb),
                           first_domid=base + 16000, workdir=self.workdir)
        self.images: list[str] = []
        self._domids_used: set = set()
        self.kernel = os.path.join(self.workdir, "vmlinuz-harness")
        Path(self.kernel).write_bytes(b"\x7fELF harness guest kernel\n")

    # -- life cycle ---------------------------------------------------
    def start(self) -> "TwoHosts":
        try:
            self.source.start()
            self.target.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for h in (self.source, self.target):
            h.stop()
        for d in self._domids_used:
            for f in ("/tmp/xen.qemu-dm.%s", "/var/lib/xen/qemu-save.%s",
                      "/var/lib/xen/xen.qemu-dm.%s"):
                try:
                    os.unlink(f % d)
                except OSError:
                    pass
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def hosts(self):
        return (self.source, self.target)

    # -- guests -------------------------------------------------------
    def create_guest(self, disks: int = 1, memory_mb: int = 256, *,
                     devclass: str = "vbd", hvm: bool = False,
                     suspend_cancel: bool = False, name: str | None = None,
                     host: Host | None = None) -> Guest:
        """``xm create`` on the source (or ``host``): a PV (or HVM) guest with
        ``disks`` block devices, each backed by its own shared image file."""
        host = host or self.source
        name = name or "guest-%s" % uuidlib.uuid4().hex[:6]
        uuid = str(uuidlib.uuid4())
        devices = []
        paths = []
        for i in range(disks):
            path = os.path.join(self.workdir, "%s-disk%d.img" % (name, i))
            create_image(path)
            self.images.append(path)
            paths.append(path)
            vdev = "xvd%s" % chr(ord("a") + i) if i < 26 else "xvd%s%s" % (
                chr(ord("a") + i // 26 - 1), chr(ord("a") + i % 26))
            if devclass == "tap":
                uname = "tap:aio:%s" % path
            else:
                uname = "phy:%s" % path
            devices.append("(device (%s (uname %s) (dev %s) (mode w)))"
                           % ("tap" if devclass == "tap" else "vbd", uname, vdev))
        args = "root=/dev/xvda1" + (" suspend_cancel" if suspend_cancel else "")
        if hvm:
            image = ("(image (hvm (kernel %s) (device_model %s) (vnc 0) "
                     "(vncunused 0) (sdl 0) (serial '') (boot c)))"
                     % (self.kernel, self._device_model()))
        else:
            image = "(image (linux (kernel %s) (ramdisk '') (args '%s')))" % (
                self.kernel, args)
        config = ("(vm (name %s) (uuid %s) (memory %d) (maxmem %d) (vcpus 1) "
                  "(on_poweroff destroy) (on_reboot restart) (on_crash destroy) "
                  "%s %s)" % (name, uuid, memory_mb, memory_mb, image,
                              " ".join(devices)))
        domid = host.call("create", config=config)
        self._domids_used.add(str(domid))
        return Guest(name, domid, host, paths, devclass, memory_mb, hvm, config, uuid)

    def _device_model(self) -> str:
        path = os.path.join(self.workdir, "qemu-dm")
        if not os.path.exists(path):
            Path(path).write_text("#!/bin/sh\nexec %s %s \"$@\"\n" % (
                sys.executable, Path(__file__).with_name("devicemodel.py")))
            os.chmod(path, 0o755)
        return path

    def arm_inflight(self, guest: Guest, delay: float | list = 0.2,
                     slots_per_disk: int = 1) -> None:
        """Requests that will be in flight when the guest suspends: on every
        disk, ``slots_per_disk`` writes completing ``delay`` s (a list: one
        per disk) after the suspend."""
        requests = []
        for i in range(len(guest.disks)):
            d = delay[i] if isinstance(delay, (list, tuple)) else delay
            vdev = self._devid(guest, i)
            for slot in range(slots_per_disk):
                requests.append({"dev": vdev, "slot": slot, "delay": d,
                                 "class": guest.devclass})
        guest.host.call("arm_inflight", domid=guest.domid, requests=requests)

    def _devid(self, guest: Guest, index: int) -> str:
        h = guest.host.xs()
        try:
            base = "/local/domain/%d/device/vbd" % guest.domid
            devs = sorted((str(d) for d in h.ls("", base) or []), key=int)
        finally:
            h.close()
        return devs[index]

    def wait_running(self, host: Host, domid: int, timeout: float = 30.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for d in host.call("list"):
                if d["domid"] == domid and d["state"] == DOM_STATE_RUNNING:
                    return True
            time.sleep(0.02)
        return False

    def domains(self, host: Host) -> list:
        """Guest domains the host's hypervisor has (dom0 left out)."""
        return [d for d in host.call("hypervisor") if d["domid"] != 0]

    # -- operations ---------------------------------------------------
    def migrate(self, guest: Guest, live: bool = True,
                settle_timeout: float = 30.0) -> MigrationResult:
        """``xm migrate [-l] guest 127.0.0.1`` (xend's domain_migrate)."""
        error = None
        try:
            r = guest.host.call("migrate", domid=guest.domid, dst="127.0.0.1",
                                live=live, port=self.target.port,
                                timeout=settle_timeout + 120)
        except HostError as e:
            error = str(e)
            r = None
        target_domid = self._settle(guest, settle_timeout)
        timings = self.timings(guest)
        if r is not None:
            timings.migrate_returned = r["end"]
        for host in self.hosts():
            if host.xend_alive:
                self._domids_used.update(str(d["domid"]) for d in self.domains(host))
        self._domids_used.add(str(guest.domid))
        self._domids_used.update(str(e["domid"]) for e in self.target.helper_events()
                                 if "domid" in e)
        if target_domid is not None:
            guest.host = self.target
            guest.domid = target_domid
        return MigrationResult(error, target_domid, timings)

    def _settle(self, guest: Guest, timeout: float):
        """Wait until the target's restore finished one way or the other and
        the guest's blkif recovery (if it runs) is done."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                doms = [d for d in self.domains(self.target) if not d["dying"]]
            except HostError:
                # A target being killed answers with a reset before its
                # process is reaped.
                time.sleep(0.1)
                if not self.target.xend_alive:
                    self._wait_backends_idle()
                    return None
                continue
            running = [d for d in doms if not d["paused"] and not d["shutdown"]]
            if running:
                domid = running[0]["domid"]
                if self._recovered(self.target, domid) and not self._hypervisor_busy(guest):
                    self._wait_backends_idle()
                    return domid
            elif not doms and self._restore_finished():
                self._wait_backends_idle()
                return None
            time.sleep(0.02)
        return None

    def _hypervisor_busy(self, guest: Guest) -> bool:
        """The source is still inside domain_destroy (its memory teardown)."""
        if not self.source.xend_alive:
            return False
        return any(d["dying"] for d in self.domains(self.source))

    def _recovered(self, host: Host, domid: int) -> bool:
        events = host.call("guest_events")
        return any(e["event"] in ("newer_written", "io_error") and e["domid"] == domid
                   for e in events) or not any(
            e["event"] == "resume" and e["domid"] == domid for e in events)

    def _restore_finished(self) -> bool:
        log = self.target.xend_log()
        return "Restore failed" in log or "XendCheckpoint.restore" in log \
            or not self.target.helper_events()

    def _wait_backends_idle(self, timeout: float = 30.0) -> None:
        """Let in-flight requests land so the disk check sees the end state."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pending = 0
            for h in self.hosts():
                ev = h.backend_events()
                pending += sum(1 for e in ev if e["event"] == "dispatch") - \
                    sum(1 for e in ev if e["event"] == "landed")
                if h.backend_flavour != "hung":
                    pending += sum(1 for e in ev if e["event"] == "unregister") - \
                        sum(1 for e in ev if e["event"] == "removed")
            if pending <= 0:
                return
            time.sleep(0.02)

    def save(self, guest: Guest, path: str, checkpoint: bool = False):
        return guest.host.call("save", domid=guest.domid, path=path,
                               checkpoint=checkpoint)

    def restore(self, path: str, host: Host | None = None) -> int:
        return (host or self.source).call("restore", path=path)

    def destroy(self, guest: Guest) -> None:
        guest.host.call("destroy", domid=guest.domid)

    def shutdown(self, guest: Guest, reason: str = "poweroff") -> None:
        guest.host.call("shutdown", domid=guest.domid, reason=reason)

    # -- fault injection (on the target unless told) ------------------
    def fail_in_stream(self, host: Host | None = None) -> None:
        """xc_restore fails after reading the image: restore raises in the stream."""
        (host or self.target).set_helper_faults(restore_fail_in_stream=True)

    def fail_hotplug(self, host: Host | None = None) -> None:
        """The backing device is gone on that host: the tree's ``block add``
        fails and writes ``hotplug-status`` = error, so waitForDevices fails."""
        p = (host or self.target).dir / "backend-faults.json"
        p.write_text('{"hotplug_fail": true}')

    def fail_complete_restore(self, host: Host | None = None) -> None:
        """completeRestore's first step fails: the host's xenstored cannot
        map the restored domain's store page, so ``introduce_domain``
        raises (EINVAL), as a bad store page does on a real dom0; restore
        destroys the copy and the relocation server answers (err ...)."""
        (host or self.target).xenstored.refuse_grant_maps()

    def fail_unpause(self, host: Host | None = None) -> None:
        """The hypervisor refuses to unpause the restored domain."""
        (host or self.target).call("settings", fail_unpause=True)

    def fail_save_after_suspend(self, host: Host | None = None) -> None:
        """xc_save fails after the suspend: the source must resume its guest."""
        (host or self.source).set_helper_faults(save_fail_after_suspend=True)

    def kill_target_after_image(self, timeout: float = 30.0) -> threading.Thread:
        """The target's xend dies once it has the whole image (before the gate)."""
        def watch():
            deadline = time.time() + timeout
            while time.time() < deadline:
                if any(e["helper"] == "xc_restore" and e["what"] == "done"
                       for e in self.target.helper_events()):
                    self.target.kill_xend()
                    return
                time.sleep(0.002)
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        return t

    def reset_target_in_stream(self, timeout: float = 30.0) -> threading.Thread:
        """The target host goes down while the image streams in: its
        relocation socket, with unread data, answers the source with a
        reset.  The image is made large enough (64 MiB per GB), and its
        pre-copy round slow enough (``precopy_seconds``, its writes paced),
        for the reset to come while the source still writes it, before the
        suspend, however long killing the target takes on a loaded
        machine (well under the pre-copy)."""
        self.set_image_bytes_per_gb(64 << 20)
        for h in self.hosts():
            h.set_helper_faults(precopy_seconds=3.0)

        def watch():
            deadline = time.time() + timeout
            while time.time() < deadline:
                if any(e["helper"] == "xc_restore" and e["what"] == "start"
                       for e in self.target.helper_events()):
                    self.target.kill_xend()
                    return
                time.sleep(0.001)
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        return t

    def set_image_bytes_per_gb(self, n: int) -> None:
        for h in self.hosts():
            h.set_helper_faults(image_bytes_per_gb=n)

    # -- facts --------------------------------------------------------
    def timings(self, guest: Guest) -> Timings:
        src_calls = self.source.call("xc_calls") if self.source.xend_alive else []
        t = Timings()
        for c in src_calls:
            # A PV guest suspends itself; an HVM guest without PV drivers
            # is suspended by xend through the hypervisor.
            if c["call"] in ("guest:SCHEDOP_shutdown", "domain_shutdown") \
                    and c["args"][1] == 2 and c["args"][0] == guest.domid \
                    and t.suspended is None:
                t.suspended = c["t"]
            if c["call"] == "domain_destroy" and c["args"][0] == guest.domid:
                t.source_destroyed = c["end"]
        for e in self.source.helper_events():
            if e["helper"] == "xc_save" and e["what"] == "sent":
                t.image_sent = e["t"]
        if self.target.xend_alive:
            calls = self.target.call("xc_calls")
            restore_thread = None
            done_t = None
            for e in self.target.helper_events():
                if e["helper"] == "xc_restore" and e["what"] == "done":
                    done_t = e["t"]
            ends = self.target.call("stream_ends")
            for c in calls:
                if c["call"] == "handle":
                    restore_thread = c["thread_id"]
                elif (restore_thread is not None and done_t is not None
                      and c["thread_id"] == restore_thread and c["t"] >= done_t
                      and t.gate_open is None):
                    # The restore thread went on past xc_restore: its
                    # os.read(fd, 1) met the end of the stream, which
                    # hostd's _StreamEnds stamps.  Without the stamp the
                    # release would go unseen (and the oracle's gate
                    # unjudged): the harness is broken, say so.
                    stamps = [e["t"] for e in ends
                              if e["thread_id"] == restore_thread
                              and e["t"] >= done_t]
                    if not stamps:
                        raise RuntimeError(
                            "harness: the target's restore thread went on "
                            "after xc_restore without meeting the end of "
                            "the stream (no stream_ends stamp)")
                    t.gate_open = min(stamps)
                if c["call"] == "domain_unpause" and "error" not in c \
                        and c["args"][0] != 0:
                    t.unpaused = c["t"]
        return t

    def hypervisor_calls(self, host: Host, since: int = 0) -> list:
        """The host's hypervisor calls from index ``since`` on, as
        (call, args) with domids renamed in order of appearance (d0 is dom0,
        then d1, d2, ...), polling calls (domain_getinfo, handle) left out:
        two trees' runs of the same operation compare equal when they make
        the same calls."""
        names = {0: "d0"}

        def domid(value) -> str:
            value = int(value)
            if value not in names:
                names[value] = "d%d" % len(names)
            return names[value]

        out = []
        for c in host.call("xc_calls")[since:]:
            if c["call"] in ("domain_getinfo", "handle"):
                continue
            args = []
            for i, a in enumerate(c["args"]):
                text = str(a)
                key, _, value = text.partition("=")
                if i == 0 and isinstance(a, int):
                    text = domid(a)
                elif key in ("domid", "dom") and value.isdigit():
                    text = "%s=%s" % (key, domid(value))
                elif key == "handle":
                    text = "handle=<uuid>"      # the VM's uuid differs per run
                elif key == "image":
                    text = "image=<kernel>"
                args.append(text)
            out.append((c["call"], tuple(args), "error" if "error" in c else "ok"))
        return out

    def disk_verdict(self):
        events = []
        for h in self.hosts():
            events.extend(h.backend_events())
        return check_images(self.images, events)

    def leftovers(self, keep_domids=None) -> dict:
        """What each host's store still holds for guests that are gone,
        backend processes' leftovers, stray processes and temp files.

        ``keep_domids``: {host name: [domids that should be there]}."""
        keep_domids = keep_domids or {}
        found = {}
        for h in self.hosts():
            if h.xenstored is None:
                continue
            keep = set(str(d) for d in keep_domids.get(h.name, []))
            tree = h.store_tree("/local/domain")
            problems = []
            for path in tree:
                parts = path.split("/")
                if len(parts) >= 4 and parts[3] not in ("0",) + tuple(keep) \
                        and len(parts) == 4:
                    problems.append("domain dir " + path)
                if path.startswith("/local/domain/0/backend/") and len(parts) == 8 \
                        and parts[6] not in keep:
                    problems.append("backend " + path)
                if path.startswith("/local/domain/0/error/") and len(parts) > 6:
                    problems.append("error node " + path)
            vms = h.store_tree("/vm")
            keep_uuids = set()
            for path, value in tree.items():
                if path.endswith("/vm") and path.split("/")[3] in keep | {"0"}:
                    keep_uuids.add(value)
            for path in vms:
                parts = path.split("/")
                if len(parts) == 3 and "/vm/" + parts[2] not in keep_uuids:
                    problems.append("vm dir " + path)
            gone_paths = []
            for (_conn, path, _token) in h.live_watches():
                parts = path.split("/")
                if path.startswith("/local/domain/") and len(parts) > 3 \
                        and parts[3] not in keep | {"0"}:
                    gone_paths.append(path)
                elif path.startswith("/local/domain/0/backend/") and len(parts) > 6 \
                        and parts[6] not in keep:
                    gone_paths.append(path)
                elif path.startswith("/vm/") and "/vm/" + parts[2] not in keep_uuids:
                    gone_paths.append(path)
            problems.extend("watch " + p for p in gone_paths)
            procs = h.processes() if h.xend_alive else []
            problems.extend("process " + p for p in procs
                            if not any(" -d %s " % d in p + " " for d in keep))
            mem = [f for f in os.listdir(h.hv_dir / "mem")] if (h.hv_dir / "mem").exists() else []
            problems.extend("guest memory file %s" % f for f in mem if f not in keep)
            if problems:
                found[h.name] = problems
        # The device-model state files are at fixed paths of the machine
        # (both hosts share them); domids differ between the hosts.
        files = []
        for folder, prefix in (("/tmp", "xen.qemu-dm."), ("/var/lib/xen", "qemu-save.")):
            if os.path.isdir(folder):
                files.extend(os.path.join(folder, f) for f in os.listdir(folder)
                             if f.startswith(prefix) and f[len(prefix):] in self._domids_used)
        for f in ("/var/lib/xen/xen.qemu-dm.%s" % d for d in self._domids_used):
            if os.path.exists(f):
                files.append(f)
        if files:
            found["machine"] = ["temp file " + f for f in sorted(files)]
        return found
