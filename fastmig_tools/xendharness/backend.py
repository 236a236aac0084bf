"""One harness host's dom0 block backend: blkback/blktap + udev, as a process.

Run as ``python3 -m fastmig_tools.xendharness.backend FLAVOUR SCRIPTS_DIR
RING_SOCKET LOG_FILE`` with XENSTORED_PATH naming the host's xenstored.
It has its own xenstore connection, as dom0's kernel has, and does what a
classic Xen 3.1 dom0 does around each ``vbd``/``tap`` backend device
(linux-2.6-xen-sparse/drivers/xen/blkback/xenbus.c,
tools/examples/xen-backend.rules):

* new backend directory: the udev ``add`` event runs the tree's own
  ``block add`` (``blktap add`` for tap) with XENBUS_PATH etc. as udev
  passes them; that script writes ``physical-device`` and
  ``hotplug-status`` = connected, which the target's ``waitForDevices``
  waits for; the backend goes InitWait, then Connected;
* frontend ``state`` Closing: drain (blkif_disconnect), backend Closing;
  frontend Closed: backend Closed, then unregister if ``online`` is 0;
  frontend directory gone, or the backend directory removed: unregister;
* unregister = drain every dispatched request, then the udev ``remove``
  event: the tree's ``block remove`` and ``xen-hotplug-cleanup`` (which
  removes the frontend, the backend directory and ``error/<path>``).
  The directory's removal is logged (``gone``) when this process's watch
  sees it, as a toolstack watching it would: ``removed`` comes only when
  the scripts have exited, tens of milliseconds later.

Flavours: ``classic`` (the above), ``shutdown-request`` (also advertises
``control/feature-shutdown-request`` and answers a backend
``shutdown-request`` with a drain and ``shutdown-done``), ``hung`` (its
requests never complete, so it never drains).

The ring: guests put requests on a Unix socket (one JSON line each:
backend path, slot, version, delay, writer, wait); a request completes
``delay`` seconds after it was dispatched by writing one block of the
device's ``params`` file.  Every dispatch, landing, script run and state
change goes to LOG_FILE as one JSON line with a ``time.time()`` stamp.
"""
from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

from fastmig_tools.xendharness.disk import write_block
from fastmig_tools.xendharness.reaping import script_limits
from fastmig_tools.xenstore.real import lowlevel_module

BACKEND_ROOT = "/local/domain/0/backend"
FEATURE = "/local/domain/0/control/feature-shutdown-request"
CLASSES = ("vbd", "tap")
_SCRIPT_TIMEOUT = 60


class Device:
    def __init__(self, path: str, cls: str, domid: str, devid: str):
        self.path = path
        self.cls = cls
        self.domid = domid
        self.devid = devid
        self.frontend = None
        self.params = None
        self.state = "new"           # new, connected, draining, gone
        self.inflight = set()
        self.unregistering = False
        self.closing_drained = False
        self.shutdown_done = False
        self.gone_seen = False
        self.lock = threading.Condition()


class Backend:
    def __init__(self, flavour: str, scripts: str, ring: str, log_path: str):
        self.flavour = flavour
        self.scripts = scripts
        self.ring_path = ring
        self.log_file = open(log_path, "a", buffering=1)
        self.log_lock = threading.Lock()
        xs = lowlevel_module()
        self.watch_handle = xs.xs()
        self.xs = xs.xs()
        self.devices: dict[str, Device] = {}
        self.work: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.host_dir = os.path.dirname(log_path)
        self.private_dirs = self._private_dirs(self.host_dir)
        # udev of the 3.1 era ran events in parallel, and the scripts then
        # meet on their lock, whose waiters sleep a whole second after five
        # spins: 16 disks took ~10 s here.  By default one event at a time
        # (what a udevd with one worker does); HARNESS_UDEV_PARALLEL=1 for
        # the parallel behaviour.
        self.udev_parallel = os.environ.get("HARNESS_UDEV_PARALLEL") == "1"
        self.udev_lock = threading.Lock()

    @staticmethod
    def _private_dirs(host_dir: str) -> list:
        """The scripts' lock folder (/var/run/xen-hotplug) and log folder
        (/var/log/xen) are fixed paths; two hosts on one machine must not
        share them, so each script runs in a mount namespace where the
        host's own folders are bound over them."""
        binds = []
        for fixed, mine in (("/var/run/xen-hotplug", "run-xen-hotplug"),
                            ("/var/log/xen", "log-xen")):
            os.makedirs(os.path.join(host_dir, mine), exist_ok=True)
            os.makedirs(fixed, exist_ok=True)
            binds.append("mount --bind %s %s" % (os.path.join(host_dir, mine), fixed))
        prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  " && ".join(binds) + ' && exec "$0" "$@"']
        probe = subprocess.run(prefix + ["true"], capture_output=True, text=True,
                               timeout=10)
        if probe.returncode != 0:
            raise SystemExit("backend: cannot give the hotplug scripts private "
                             "lock/log folders (unshare --mount as root): %s"
                             % probe.stderr)
        return prefix

    # -- plumbing -----------------------------------------------------
    def log(self, event: str, **detail) -> None:
        detail.update(t=time.time(), event=event)
        with self.log_lock:
            self.log_file.write(json.dumps(detail) + "\n")

    def _fault(self, name: str) -> bool:
        try:
            with open(os.path.join(self.host_dir, "backend-faults.json")) as f:
                return bool(json.load(f).get(name))
        except (OSError, ValueError):
            return False

    def read(self, path: str):
        try:
            v = self.xs.read("", path)
        except Exception:
            return None
        return None if v is None else v.decode()

    def write(self, path: str, value: str) -> None:
        self.xs.write("", path, value.encode())

    def exists(self, path: str) -> bool:
        try:
            return self.xs.read("", path) is not None
        except Exception:
            return False

    def run(self) -> None:
        if self.flavour == "shutdown-request":
            self.write(FEATURE, "1")
        self.watch_handle.watch(BACKEND_ROOT, "backend")
        threading.Thread(target=self._watch_loop, daemon=True).start()
        threading.Thread(target=self._ring_server, daemon=True).start()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        threading.Thread(target=self._stdin_loop, daemon=True).start()
        while True:
            item = self.work.get()
            if item is None:
                break
            self._rescan()
        if self.flavour == "shutdown-request":
            try:
                self.xs.rm("", FEATURE)
            except Exception:
                pass

    def _stdin_loop(self) -> None:
        for _ in sys.stdin:
            pass
        self.work.put(None)   # the driver closed our stdin: stop

    def _watch_loop(self) -> None:
        while True:
            try:
                path, token = self.watch_handle.read_watch()
            except Exception:
                return
            if token == "backend":
                self._note_gone(path.decode() if isinstance(path, bytes) else path,
                                time.time())
            self.work.put(token)

    def _note_gone(self, path: str, seen: float) -> None:
        """Stamped when the watch event arrived (``seen``), as early as a
        toolstack's own watch could have had it: the check that the
        directory is really gone comes after."""
        with self.lock:
            devices = [d for d in list(self.devices.values())
                       if not d.gone_seen and (d.path == path
                                               or d.path.startswith(path + "/"))]
        for dev in devices:
            if not self.exists(dev.path):
                dev.gone_seen = True
                self.log("gone", backend=dev.path, seen=seen)

    # -- device discovery and state -----------------------------------
    def _rescan(self) -> None:
        seen = set()
        for cls in CLASSES:
            base = "%s/%s" % (BACKEND_ROOT, cls)
            for domid in self.xs.ls("", base) or []:
                for devid in self.xs.ls("", "%s/%s" % (base, domid)) or []:
                    path = "%s/%s/%s" % (base, domid, devid)
                    seen.add(path)
                    if path not in self.devices:
                        self._probe(path, cls, domid, devid)
        for path, dev in list(self.devices.items()):
            self._check(dev, path in seen)

    def _probe(self, path: str, cls: str, domid: str, devid: str) -> None:
        frontend = self.read(path + "/frontend")
        params = self.read(path + "/params")
        if frontend is None or params is None:
            return   # xend writes the directory in one transaction; wait
        dev = Device(path, cls, domid, devid)
        dev.frontend = frontend
        dev.params = params.split(":", 1)[-1] if cls == "tap" else params
        self.devices[path] = dev
        self.watch_handle.watch(frontend, "frontend")
        self.log("probe", backend=path, frontend=frontend, params=dev.params)
        self.write(path + "/state", "2")
        threading.Thread(target=self._hotplug_add, args=(dev,), daemon=True).start()

    def _hotplug_add(self, dev: Device) -> None:
        script = "blktap" if dev.cls == "tap" else "block"
        ok = self._script(dev, script, "add")
        with dev.lock:
            if dev.state == "new":
                dev.state = "connected"
        if ok and self.exists(dev.path):
            self.write(dev.path + "/state", "4")
            self.log("connected", backend=dev.path)

    def _check(self, dev: Device, backend_present: bool) -> None:
        if dev.unregistering:
            return
        if not backend_present:
            self._unregister(dev, "backend directory removed", cleanup=True)
            return
        fe_state = self.read(dev.frontend + "/state")
        if fe_state is None:
            self._unregister(dev, "frontend gone", cleanup=True)
            return
        if self.flavour == "shutdown-request" and not dev.shutdown_done \
                and self.read(dev.path + "/shutdown-request") is not None:
            dev.shutdown_done = True
            threading.Thread(target=self._shutdown_request, args=(dev,),
                             daemon=True).start()
        if fe_state == "5" and not dev.closing_drained:
            dev.closing_drained = True
            threading.Thread(target=self._closing, args=(dev,), daemon=True).start()
        elif fe_state == "6":
            self.write(dev.path + "/state", "6")
            if self.read(dev.path + "/online") != "1":
                self._unregister(dev, "frontend closed, offline", cleanup=True)

    def _closing(self, dev: Device) -> None:
        self._drain(dev)
        if self.exists(dev.path):
            self.write(dev.path + "/state", "5")

    def _shutdown_request(self, dev: Device) -> None:
        self._drain(dev)
        if self.exists(dev.path):
            self.write(dev.path + "/shutdown-done", "")
            self.log("shutdown-done", backend=dev.path)

    def _unregister(self, dev: Device, reason: str, cleanup: bool) -> None:
        dev.unregistering = True
        self.log("unregister", backend=dev.path, reason=reason)
        threading.Thread(target=self._remove, args=(dev,), daemon=True).start()

    def _remove(self, dev: Device) -> None:
        self._drain(dev)
        script = "blktap" if dev.cls == "tap" else "block"
        self._script(dev, script, "remove")
        self._script(dev, "xen-hotplug-cleanup", None)
        try:
            self.watch_handle.unwatch(dev.frontend, "frontend")
        except Exception:
            pass
        with self.lock:
            self.devices.pop(dev.path, None)
        self.log("removed", backend=dev.path,
                 present=self.exists(dev.path))

    def _drain(self, dev: Device) -> None:
        t0 = time.time()
        with dev.lock:
            dev.state = "draining"
            while dev.inflight or self.flavour == "hung":
                dev.lock.wait(1.0)
        self.log("drained", backend=dev.path, waited=time.time() - t0)

    def _script(self, dev: Device, name: str, command) -> bool:
        env = dict(os.environ)
        env.update(XENBUS_PATH=dev.path[len("/local/domain/0/"):],
                   XENBUS_TYPE=dev.cls, XENBUS_BASE_PATH="backend",
                   ACTION=command or "remove", SUBSYSTEM="xen-backend")
        argv = ["bash", os.path.join(self.scripts, name)]
        if command:
            argv.append(command)
        if command == "add" and self._fault("hotplug_fail"):
            # What the script's own `fatal` writes when the backing device
            # is missing on this host.  (With the device hidden from the
            # script, 3.1's `block` died in write_dev without writing
            # anything, and xend then waits its full 100 s.)
            self.write(dev.path + "/hotplug-error", "harness fault: backing device missing")
            self.write(dev.path + "/hotplug-status", "error")
            self.log("script", backend=dev.path, script=name, command=command,
                     status=1, seconds=0.0, stderr="harness fault")
            return False
        argv = self.private_dirs + argv
        if self.udev_parallel:
            t0 = time.time()
            r = subprocess.run(argv, env=env, capture_output=True, text=True,
                               timeout=_SCRIPT_TIMEOUT, preexec_fn=script_limits)
        else:
            with self.udev_lock:
                t0 = time.time()
                r = subprocess.run(argv, env=env, capture_output=True, text=True,
                                   timeout=_SCRIPT_TIMEOUT,
                                   preexec_fn=script_limits)
        self.log("script", backend=dev.path, script=name, command=command,
                 status=r.returncode, seconds=time.time() - t0,
                 stderr=r.stderr[-500:])
        return r.returncode == 0

    # -- the ring -----------------------------------------------------
    def _ring_server(self) -> None:
        if os.path.exists(self.ring_path):
            os.unlink(self.ring_path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.ring_path)
        server.listen(64)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=self._ring_request, args=(conn,),
                             daemon=True).start()

    def _ring_request(self, conn: socket.socket) -> None:
        with conn:
            f = conn.makefile("r")
            line = f.readline()
            if not line:
                return
            req = json.loads(line)
            with self.lock:
                dev = self.devices.get(req.get("backend") or "")
            if dev is None or dev.state != "connected":
                conn.sendall(b'{"ok": false, "error": "no connected backend"}\n')
                return
            token = object()
            with dev.lock:
                dev.inflight.add(token)
            self.log("dispatch", backend=dev.path, file=dev.params,
                     slot=req["slot"], version=req["version"],
                     writer=req["writer"], delay=req["delay"])
            done = threading.Event()
            timer = threading.Timer(float(req["delay"]), self._land,
                                    args=(dev, token, req, done))
            timer.daemon = True
            if self.flavour != "hung":
                timer.start()
            if not req.get("wait"):
                conn.sendall(b'{"ok": true}\n')
                return
            done.wait(_SCRIPT_TIMEOUT)
            conn.sendall(b'{"ok": true, "landed": true}\n')

    def _land(self, dev: Device, token, req: dict, done: threading.Event) -> None:
        write_block(dev.params, int(req["slot"]), int(req["version"]), req["writer"])
        self.log("landed", backend=dev.path, file=dev.params, slot=req["slot"],
                 version=req["version"], writer=req["writer"])
        with dev.lock:
            dev.inflight.discard(token)
            dev.lock.notify_all()
        done.set()


def main() -> int:
    flavour, scripts, ring, log_path = sys.argv[1:5]
    Backend(flavour, scripts, ring, log_path).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
