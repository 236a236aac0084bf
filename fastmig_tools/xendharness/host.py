"""One harness host: its xenstored, its dom0 block backend, its real xend.

``Host(prepared, name, ...)`` runs, each in its own process:

* a real xenstored (``ManagedXenstored``);
* the dom0 block backend (``backend.py``, Python 3, its own connection);
* the tree's xend on Python 2.7 (``py2/hostd.py``): XendDomain and the
  relocation server on 127.0.0.1:<free port>, with the hypervisor
  stand-in ``xen.lowlevel.xc``.

``call(op, **args)`` sends one request over the host's control socket
(line-delimited JSON) and returns the result or raises ``HostError``
carrying xend's exception and traceback.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from fastmig_tools.xenstore.real import ManagedXenstored
from fastmig_tools.xendharness.reaping import die_with_parent
from fastmig_tools.xendharness.build import PreparedTree, python27

__all__ = ["Host", "HostError", "free_port"]

_REPO = Path(__file__).resolve().parent.parent.parent
_START_TIMEOUT = 60.0


class HostError(Exception):
    """xend (or the harness in its process) raised; ``traceback`` says where."""

    def __init__(self, message: str, traceback: str = ""):
        super().__init__(message)
        self.traceback = traceback


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _sxp_value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    v = str(v)
    if v and all(c.isalnum() or c in "-_./:" for c in v):
        return v
    return "'%s'" % v.replace("'", "\\'")


class Host:
    def __init__(self, prepared: PreparedTree, name: str, *,
                 backend: str = "classic", xend_config: dict | None = None,
                 destroy_seconds_per_gb: float = 0.05, first_domid: int = 1,
                 workdir: str | None = None):
        self.prepared = prepared
        self.name = name
        self.backend_flavour = backend
        self.xend_config = dict(xend_config or {})
        self.destroy_seconds_per_gb = destroy_seconds_per_gb
        self.first_domid = first_domid
        self.dir = Path(tempfile.mkdtemp(prefix="xendharness-%s-" % name,
                                         dir=workdir))
        self.hv_dir = self.dir / "hv"
        self.hv_dir.mkdir()
        self.port = None
        self.xenstored: ManagedXenstored | None = None
        self.backend_proc: subprocess.Popen | None = None
        self.xend_proc: subprocess.Popen | None = None
        self.helper_proc: subprocess.Popen | None = None
        self._control_lock = threading.Lock()
        self.final_logs: dict = {}

    # -- life cycle ---------------------------------------------------
    def start(self) -> "Host":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.xenstored = ManagedXenstored(name="xenstored-" + self.name).start()
        self.port = free_port()
        config = {
            "logfile": str(self.dir / "xend.log"),
            "xend-http-server": "no", "xend-unix-server": "no",
            "xend-tcp-xmlrpc-server": "no", "xend-unix-xmlrpc-server": "no",
            "xend-relocation-server": "yes",
            "xend-relocation-port": self.port,
            "xend-relocation-address": "127.0.0.1",
            "xend-relocation-hosts-allow": "",
            "xend-domains-path": str(self.dir / "domains"),
            "xend-state-path": str(self.dir / "state"),
            "xend-storage-path": str(self.dir / "storage"),
            "dom0-min-mem": 0, "enable-dump": "no",
        }
        config.update(self.xend_config)
        self.config_path = self.dir / "xend-config.sxp"
        self.config_path.write_text("".join(
            "(%s %s)\n" % (k, _sxp_value(v)) for k, v in config.items()))
        env = dict(os.environ)
        env.update(self.xenstored.env())
        env.update(
            PYTHONPATH="%s:%s" % (self.prepared.python_dir, self.prepared.py2_dir),
            XEND_CONFIG=str(self.config_path),
            HARNESS_HV_DIR=str(self.hv_dir),
            HARNESS_RING_SOCKET=str(self.dir / "ring.sock"),
            HARNESS_HOST=self.name,
            HARNESS_FIRST_DOMID=str(self.first_domid),
            HARNESS_DESTROY_SECONDS_PER_GB=str(self.destroy_seconds_per_gb),
        )
        env.pop("XEND_DEBUG", None)
        env["HARNESS_QEMU_SAVE"] = self._qemu_save_pattern()
        self.env = env
        # What xend's xc_save and xc_restore hand their runs to (see
        # helper_client.c).
        self.helper_proc = subprocess.Popen(
            [sys.executable, "-m", "fastmig_tools.xendharness.helpers",
             "--serve", str(self.hv_dir / "helpers.sock")],
            env=dict(env, PYTHONPATH=str(_REPO)), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(self.dir / "helpers.stderr", "wb"),
            start_new_session=True, text=True, preexec_fn=die_with_parent)
        self._expect_ready(self.helper_proc, "helper server", "helpers.stderr")
        # xend first: its start rewrites /local/domain/0 (recreate of dom0),
        # which would wipe what a dom0 kernel advertises there.
        self.control_path = str(self.dir / "control.sock")
        self.xend_proc = subprocess.Popen(
            [str(python27()), str(self.prepared.py2_dir / "hostd.py"),
             self.control_path, str(self.port), str(self.prepared.helper_dir)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(self.dir / "xend.stderr", "wb"), cwd=str(self.dir),
            start_new_session=True, text=True,
            preexec_fn=die_with_parent)
        self._expect_ready(self.xend_proc, "xend", "xend.stderr")
        benv = dict(env)
        benv["PYTHONPATH"] = str(_REPO)
        self.backend_proc = subprocess.Popen(
            [sys.executable, "-m", "fastmig_tools.xendharness.backend",
             self.backend_flavour, str(self.prepared.scripts_dir),
             str(self.dir / "ring.sock"), str(self.dir / "backend.log")],
            env=benv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.dir / "backend.stderr", "wb"),
            start_new_session=True, text=True,
            preexec_fn=die_with_parent)
        self._expect_ready(self.backend_proc, "backend", "backend.stderr")

    def _qemu_save_pattern(self) -> str:
        """Where this tree's xend reads the device model's saved state (the
        tree's qemu-dm writes it there)."""
        text = (self.prepared.python_dir / "xen" / "xend" /
                "XendCheckpoint.py").read_text(errors="replace")
        for pattern in ("/var/lib/xen/qemu-save.%d", "/tmp/xen.qemu-dm.%d"):
            if pattern in text:
                return pattern
        raise HostError("cannot tell where %s's xend reads qemu-dm's state"
                        % self.prepared.source)

    def _expect_ready(self, proc, what, stderr_name) -> None:
        ready = []
        t = threading.Thread(target=lambda: ready.append(proc.stdout.readline()),
                             daemon=True)
        t.start()
        t.join(_START_TIMEOUT)
        if not ready or not ready[0].startswith("ready"):
            proc.kill()
            err = (self.dir / stderr_name).read_text(errors="replace")[-4000:]
            raise HostError("%s of host %s did not start:\n%s" % (what, self.name, err))

    def stop(self) -> None:
        """End every process of the host and remove its folder; idempotent."""
        if self.xend_proc is not None:
            self._kill(self.xend_proc)
            self.xend_proc = None
        if self.backend_proc is not None:
            try:
                self.backend_proc.stdin.close()
                self.backend_proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError, ValueError):
                pass
            self._kill(self.backend_proc)
            self.backend_proc = None
        if self.helper_proc is not None:
            self._kill(self.helper_proc)
            self.helper_proc = None
        if self.xenstored is not None:
            self.xenstored.stop()
            self.xenstored = None
        for name in ("xend.log", "backend.log", "xend.stderr", "backend.stderr",
                     "helpers.stderr"):
            p = self.dir / name
            if p.exists():
                self.final_logs[name] = p.read_text(errors="replace")
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _kill(proc) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def kill_xend(self) -> None:
        """The host's xend dies (SIGKILL to it and the helpers it runs, as
        when the host goes down): its sockets close, a socket with unread
        data resets, nothing cleans up."""
        if self.xend_proc is not None and self.xend_proc.poll() is None:
            try:
                os.killpg(self.xend_proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.xend_proc.wait(timeout=10)

    @property
    def xend_alive(self) -> bool:
        return self.xend_proc is not None and self.xend_proc.poll() is None

    # -- control ------------------------------------------------------
    def call(self, op: str, timeout: float = 120.0, **args):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.control_path)
            s.sendall((json.dumps({"op": op, "args": args}) + "\n").encode())
            f = s.makefile("r")
            line = f.readline()
        except (OSError, socket.timeout) as e:
            raise HostError("host %s: %s failed: %s" % (self.name, op, e)) from None
        finally:
            s.close()
        if not line:
            raise HostError("host %s: xend closed the control channel during %s"
                            % (self.name, op))
        answer = json.loads(line)
        if not answer["ok"]:
            raise HostError("host %s: %s: %s" % (self.name, op, answer["error"]),
                            answer.get("traceback", ""))
        return answer["result"]

    # -- facts --------------------------------------------------------
    def xs(self):
        """A new xen.lowlevel.xs handle on this host's store (caller closes)."""
        return self.xenstored.open_lowlevel()

    def store_tree(self, root: str = "/") -> dict:
        """Every node below ``root`` -> value (str)."""
        h = self.xs()
        out = {}
        try:
            def walk(path):
                try:
                    v = h.read("", path)
                except Exception:
                    return
                if v is None:
                    return          # no such node
                out[path] = v.decode(errors="replace")
                for child in h.ls("", path) or []:
                    walk(path.rstrip("/") + "/" + (child if isinstance(child, str) else child.decode()))
            walk(root)
        finally:
            h.close()
        return out

    def live_watches(self) -> list:
        """(connection, path, token) of every watch still registered, read
        from the daemon's request trace (WATCH minus UNWATCH, per
        connection; a closed connection drops its watches).  The trace only
        grows: each call reads on from where the last one stopped (a host
        reused for many runs would otherwise re-read it all every time)."""
        trace = os.path.join(self.xenstored.directory, "trace.log")
        state = getattr(self, "_watch_trace", None)
        if state is None or state[0] != trace:
            state = self._watch_trace = [trace, 0, {}]
        live = state[2]          # connection -> {(conn, path, token)}
        with open(trace, "rb") as f:
            f.seek(state[1])
            data = f.read()
        end = data.rfind(b"\n") + 1          # a partial last line waits
        state[1] += end
        for line in data[:end].decode(errors="replace").splitlines():
            if line.startswith("IN "):
                parts = line.split(None, 5)
                if len(parts) < 6:
                    continue
                conn, what, rest = parts[1], parts[4], parts[5]
                if what in ("WATCH", "UNWATCH"):
                    fields = rest.strip().strip("()").split()
                    if len(fields) >= 2:
                        key = (conn, fields[0], fields[1])
                        if what == "WATCH":
                            live.setdefault(conn, set()).add(key)
                        else:
                            live.get(conn, set()).discard(key)
            elif line.startswith("DESTROY connection"):
                words = line.split()
                live.pop(words[2] if len(words) > 2 else None, None)
        return sorted(k for keys in live.values() for k in keys)

    def backend_events(self) -> list:
        p = self.dir / "backend.log"
        if not p.exists():
            return [json.loads(l) for l in self.final_logs.get("backend.log", "").splitlines() if l]
        return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]

    def helper_events(self) -> list:
        p = self.hv_dir / "helpers.log"
        if not p.exists():
            return []
        return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]

    def set_helper_faults(self, **faults) -> None:
        p = self.hv_dir / "faults.json"
        current = json.loads(p.read_text()) if p.exists() else {}
        current.update(faults)
        p.write_text(json.dumps(current))

    def xend_log(self) -> str:
        p = self.dir / "xend.log"
        return p.read_text(errors="replace") if p.exists() else \
            self.final_logs.get("xend.log", "")

    def processes(self) -> list:
        """Children still running under this host's processes (not the
        daemons themselves): helpers, hotplug scripts, device models."""
        roots = [p.pid for p in (self.xend_proc, self.backend_proc) if p is not None]
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
            if int(pid) not in roots and (ppid in roots or pgid in roots):
                if state == "Z":
                    with open("/proc/%s/stat" % pid) as f:
                        comm = f.read().split("(", 1)[1].rsplit(")", 1)[0]
                    found.append("zombie %s (%s, unreaped)" % (pid, comm))
                else:
                    found.append(cmd.strip())
        return found
