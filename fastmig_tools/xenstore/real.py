"""Xen 4.17's C xenstored, run as a child process with no hypervisor.

``scripts/install-xenstored`` unpacks Debian's ``xen-utils-4.17`` into a
private root (``/opt/xend-fastmig/xen-4.17`` unless ``FASTMIG_XEN_ROOT``
says otherwise) and builds ``fakexen.c`` there; this module finds that root,
runs the daemon in a fresh temporary directory and hands out clients.  If
the install's shim was built from another ``fakexen.c`` than this
checkout's, this checkout's is built beside it at first use.

Every client of such a daemon is dom0 over the unix socket; no hypervisor
event ever fires (no ``@releaseDomain``), so nothing changes in the store
unless a client changes it.

Usage::

    with ManagedXenstored() as xsd:
        h = xsd.open_lowlevel()          # a real xen.lowlevel.xs.xs()
        h.write("", "/a", b"1")
        subprocess.run(["xenstore-ls"], env={**os.environ, **xsd.env()})
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import ModuleType

__all__ = [
    "DEFAULT_ROOT",
    "ROOT_ENV",
    "FAKEXEN_FAULTS_ENV",
    "INSTALL_HINT",
    "XenstoredUnavailable",
    "XenInstall",
    "find_install",
    "lowlevel_module",
    "ManagedXenstored",
]

DEFAULT_ROOT = "/opt/xend-fastmig/xen-4.17"
ROOT_ENV = "FASTMIG_XEN_ROOT"
INSTALL_HINT = (
    "run scripts/install-xenstored as root (installs libxenmisc4.17 and "
    "xenstore-utils, unpacks xen-utils-4.17 and builds fakexen.so into "
    "$%s, default %s)" % (ROOT_ENV, DEFAULT_ROOT)
)

_XEN_LIB = "usr/lib/xen-4.17"
# fakexen.c reads its armed faults from marker files in this folder.
FAKEXEN_FAULTS_ENV = "FASTMIG_FAKEXEN_FAULTS"
_REFUSE_GRANT_MAP = "refuse-grant-map"
_XS_SO_GLOB = "xs.cpython-%d%d-*.so" % sys.version_info[:2]

# xen.lowlevel.xs reads XENSTORED_PATH from the process environment when a
# handle connects; this lock keeps two threads from swapping it under each
# other while one of them connects.
_ENV_LOCK = threading.Lock()
_MODULE_LOCK = threading.Lock()
_module_cache: dict[Path, ModuleType] = {}


# Looked up in the parent: a child of a threaded process must not dlopen
# or import between fork and exec.
_prctl = ctypes.CDLL(None).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """``preexec_fn``: the kernel SIGKILLs the daemon when we exit."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class XenstoredUnavailable(Exception):
    """The real daemon cannot be run here; the message says what to install."""


@dataclasses.dataclass(frozen=True)
class XenInstall:
    """Where the pieces of one install live (all paths exist)."""

    root: Path
    xenstored: Path
    preload: Path
    python_dir: Path
    xs_extension: Path


def find_install(root: str | os.PathLike | None = None) -> XenInstall:
    """Locate an install made by ``scripts/install-xenstored``.

    ``root`` defaults to ``$FASTMIG_XEN_ROOT`` or ``DEFAULT_ROOT``.  Raises
    XenstoredUnavailable naming the first missing piece and how to install
    it; never installs anything itself.
    """
    base = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
    xenstored = base / _XEN_LIB / "bin" / "xenstored"
    preload = base / "fastmig" / "fakexen.so"
    python_dir = base / _XEN_LIB / "lib" / "python"
    for what, path in (("xenstored", xenstored), ("fakexen.so", preload)):
        if not path.is_file():
            raise XenstoredUnavailable(
                "%s not found at %s: %s" % (what, path, INSTALL_HINT))
    found = sorted((python_dir / "xen" / "lowlevel").glob(_XS_SO_GLOB))
    if not found:
        raise XenstoredUnavailable(
            "xen.lowlevel.xs for Python %d.%d not found under %s: %s"
            % (sys.version_info[0], sys.version_info[1], python_dir, INSTALL_HINT))
    return XenInstall(base, xenstored, _current_preload(preload), python_dir,
                      found[0])


_FAKEXEN_SOURCE = Path(__file__).resolve().parent / "fakexen.c"
_BUILD_LOCK = threading.Lock()


def _current_preload(installed: Path) -> Path:
    """The fakexen.so built from this checkout's ``fakexen.c``.

    ``scripts/install-xenstored`` stamps its build with the source's
    sha256 (``fakexen.so.sha256``).  The install is shared by every checkout
    on the machine, so when the stamp names another source (an older
    install, another branch) this checkout's shim is built next to it under
    its own hash, ``fakexen-<sha>.so``, and used instead: the daemon never
    runs a stale shim, and checkouts never overwrite each other's.
    """
    if not _FAKEXEN_SOURCE.is_file():
        return installed            # an installed package without the source
    want = hashlib.sha256(_FAKEXEN_SOURCE.read_bytes()).hexdigest()
    try:
        have = (installed.parent / (installed.name + ".sha256")).read_text().strip()
    except OSError:
        have = None
    if have == want:
        return installed
    built = installed.parent / ("fakexen-%s.so" % want[:16])
    with _BUILD_LOCK:
        if not built.is_file():
            _build_fakexen(built)
    return built


def _build_fakexen(out: Path) -> None:
    """gcc as scripts/install-xenstored runs it; the rename makes a build
    that another process makes at the same time harmless."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=str(out.parent))
        os.close(fd)
        proc = subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
             "-o", tmp, str(_FAKEXEN_SOURCE), "-ldl"],
            capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise XenstoredUnavailable(
                "gcc could not build %s (the install's fakexen.so is from "
                "another source):\n%s" % (_FAKEXEN_SOURCE, proc.stderr))
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except OSError as e:
        raise XenstoredUnavailable(
            "cannot build %s into %s (%s): %s"
            % (_FAKEXEN_SOURCE, out, e, INSTALL_HINT)) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def lowlevel_module(install: XenInstall | None = None) -> ModuleType:
    """Xen's own ``xen.lowlevel.xs`` extension from the install.

    Appends the binding's directory to ``sys.path`` and imports it the
    normal way, so ``import xen.lowlevel.xs`` works elsewhere too.  If
    another ``xen`` package shadows Debian's (Xen 3.1's tools/python in
    some tests), the extension is loaded straight from its file instead and
    ``sys.modules`` is left as it was.  Never returns another build.
    """
    install = install or find_install()
    want = install.xs_extension
    with _MODULE_LOCK:
        mod = _module_cache.get(want)
        if mod is not None:
            return mod
        if str(install.python_dir) not in sys.path:
            sys.path.append(str(install.python_dir))
        try:
            mod = importlib.import_module("xen.lowlevel.xs")
        except Exception:  # a shadowing xen package may not even compile
            mod = None
        if mod is None or Path(getattr(mod, "__file__", None) or "/") != want:
            mod = _load_extension(want)
        _module_cache[want] = mod
        return mod


def _load_extension(path: Path) -> ModuleType:
    name = "xen.lowlevel.xs"
    before = sys.modules.get(name)
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    try:
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
    except ImportError as e:
        raise XenstoredUnavailable(
            "cannot load %s (%s): %s" % (path, e, INSTALL_HINT)) from e
    finally:
        # A single-phase extension registers itself in sys.modules as it
        # loads; undo that so the shadowing package stays consistent.
        if before is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = before
    return mod


@dataclasses.dataclass
class _Resources:
    """What must be released even if the owner is garbage collected."""

    proc: subprocess.Popen | None = None
    tmpdir: str | None = None
    log_file: object = None

    def release(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
                proc.terminate()
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            except ProcessLookupError:
                proc.wait(timeout=5)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        tmpdir, self.tmpdir = self.tmpdir, None
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


class ManagedXenstored:
    """One real xenstored in its own temporary directory.

    Guarantees: ``start()`` returns only once the socket accepts
    connections, or raises XenstoredUnavailable (with the daemon's log)
    within ``start_timeout``; ``stop()`` leaves no process and no
    directory behind and may be called any number of times; instances are
    independent, so several can run side by side.  Never touches the
    system's own /var/run/xenstored or any real hypervisor.
    """

    def __init__(self, root: str | os.PathLike | None = None, *,
                 trace: bool = True, start_timeout: float = 10.0,
                 extra_args: tuple[str, ...] = (), name: str = "xenstored"):
        self.install = find_install(root)
        self.trace = trace
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self.name = name
        self.startup_seconds: float | None = None
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._final_log: str | None = None
        self._paused = False

    # -- life cycle ---------------------------------------------------
    def start(self) -> "ManagedXenstored":
        """Run the daemon and wait until its socket accepts a connection."""
        if self._res.proc is not None:
            raise RuntimeError("%s already started" % self.name)
        self._final_log = None
        tmpdir = tempfile.mkdtemp(prefix="fastmig-%s-" % self.name)
        self._res.tmpdir = tmpdir
        self._res.log_file = open(os.path.join(tmpdir, "output.log"), "wb")
        argv = [str(self.install.xenstored), "--no-fork",
                "--pid-file", os.path.join(tmpdir, "pid")]
        if self.trace:
            argv += ["--trace-file", os.path.join(tmpdir, "trace.log")]
        argv += list(self.extra_args)
        env = dict(os.environ)
        env.update(self.env())
        env["LD_PRELOAD"] = str(self.install.preload)
        # Each daemon reads its own faults only (fakexen.c).
        os.mkdir(self._fault_dir())
        env[FAKEXEN_FAULTS_ENV] = self._fault_dir()
        t0 = time.monotonic()
        try:
            self._res.proc = subprocess.Popen(
                argv, cwd=tmpdir, env=env, stdin=subprocess.DEVNULL,
                stdout=self._res.log_file, stderr=subprocess.STDOUT,
                # A terminal's ^C is ours to forward; and the daemon must
                # not outlive a test run that was killed.
                start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as e:
            self.stop()
            raise XenstoredUnavailable(
                "cannot run %s: %s: %s" % (argv[0], e, INSTALL_HINT)) from e
        try:
            self._wait_for_socket(t0 + self.start_timeout)
        except BaseException:
            self.stop()  # also on ^C: never leave a half-started daemon
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_for_socket(self, deadline: float) -> None:
        proc = self._res.proc
        path = self.socket_path
        while True:
            if proc.poll() is not None:
                raise XenstoredUnavailable(
                    "%s exited with status %s before its socket came up "
                    "(is fakexen.so current? %s); log:\n%s"
                    % (self.name, proc.returncode, INSTALL_HINT, self.log_text()))
            if os.path.exists(path):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(path)
                    return
                except OSError:
                    pass  # bound but not yet listening
                finally:
                    s.close()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise XenstoredUnavailable(
                    "%s socket %s not up after %.1fs; log:\n%s"
                    % (self.name, path, self.start_timeout, self.log_text()))
            try:
                # Wakes at once if the daemon dies; otherwise a short poll.
                proc.wait(timeout=min(0.001, remaining))
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        """End the daemon (if any) and remove its directory; idempotent."""
        if self._res.tmpdir is not None:
            self._final_log = self.log_text()
        self._paused = False
        self._res.release()

    def __enter__(self) -> "ManagedXenstored":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- fault injection ----------------------------------------------
    def kill(self) -> int:
        """Crash the daemon (SIGKILL) and reap it; its directory stays until
        ``stop()``.  Returns the exit status.  Clients then get errors."""
        proc = self._require_proc()
        if proc.poll() is None:
            proc.kill()
        self._paused = False
        return proc.wait(timeout=5)

    def pause(self) -> None:
        """Freeze the daemon (SIGSTOP): requests then hang until resume()."""
        self._require_running().send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo pause() (SIGCONT)."""
        self._require_running().send_signal(signal.SIGCONT)
        self._paused = False

    def refuse_grant_maps(self, refuse: bool = True) -> None:
        """While on, the daemon cannot map a domain's store page (fakexen
        answers EINVAL, as Linux's gntdev does when Xen refuses the map):
        ``introduce_domain`` of a domain it does not know yet fails with
        that error, as on a dom0 handed a bad store page.  Domains already
        introduced, and dom0, are not affected."""
        self._require_running()
        marker = os.path.join(self._fault_dir(), _REFUSE_GRANT_MAP)
        if refuse:
            open(marker, "w").close()
        elif os.path.exists(marker):
            os.unlink(marker)

    def _fault_dir(self) -> str:
        if self._res.tmpdir is None:
            raise RuntimeError("%s is not started" % self.name)
        return os.path.join(self._res.tmpdir, "faults")

    def _require_proc(self) -> subprocess.Popen:
        if self._res.proc is None:
            raise RuntimeError("%s is not started" % self.name)
        return self._res.proc

    def _require_running(self) -> subprocess.Popen:
        proc = self._require_proc()
        if proc.poll() is not None:
            raise RuntimeError("%s has exited (status %s)" % (self.name, proc.returncode))
        return proc

    # -- facts --------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self._res.proc is None else self._res.proc.pid

    @property
    def running(self) -> bool:
        """True while the process exists (paused counts as running)."""
        return self._res.proc is not None and self._res.proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def directory(self) -> str | None:
        """The temporary directory (socket, pid, logs); None when stopped."""
        return self._res.tmpdir

    @property
    def socket_path(self) -> str:
        if self._res.tmpdir is None:
            raise RuntimeError("%s is not started" % self.name)
        return os.path.join(self._res.tmpdir, "socket")

    def env(self) -> dict[str, str]:
        """The variables that point a xenstore client at this daemon."""
        return {"XENSTORED_PATH": self.socket_path,
                "XENSTORED_RUNDIR": self._res.tmpdir}

    def log_text(self, max_trace_chars: int = 20000) -> str:
        """The daemon's stdout/stderr and the tail of its request trace.

        The trace's per-request "wrl:" lines (dom0's write-rate accounting,
        never limiting) are left out so the tail shows requests.  Still
        answers after ``stop()`` (what was there at the stop).
        """
        if self._res.tmpdir is None:
            return self._final_log or ""
        parts = []
        for title, fname, limit in (("output", "output.log", None),
                                    ("trace", "trace.log", max_trace_chars)):
            path = os.path.join(self._res.tmpdir, fname)
            try:
                with open(path, "rb") as f:
                    if limit is not None:
                        size = f.seek(0, os.SEEK_END)
                        f.seek(max(0, size - 8 * limit))
                    data = f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                continue
            if limit is not None:
                data = "".join(line for line in data.splitlines(True)
                               if not line.startswith("wrl: "))[-limit:]
            parts.append("--- %s %s (%s) ---\n%s" % (self.name, title, path, data))
        return "\n".join(parts)

    # -- clients ------------------------------------------------------
    def open_lowlevel(self):
        """A new ``xen.lowlevel.xs.xs()`` handle connected to this daemon.

        The caller closes it (``h.close()``).  Raises the binding's
        ``xen.lowlevel.xs.Error`` if the daemon does not accept it.
        """
        xs = lowlevel_module(self.install)
        wanted = self.env()
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in wanted}
            os.environ.update(wanted)
            try:
                return xs.xs()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def __repr__(self) -> str:
        return "<ManagedXenstored %s pid=%s dir=%s>" % (
            self.name, self.pid, self._res.tmpdir)
