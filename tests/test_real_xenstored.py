"""The real C xenstored harness (fastmig_tools.xenstore.real), end to end.

These run Xen 4.17's own daemon and Xen's own Python binding, so they also
pin the binding's behaviour that the embedded store must copy.
"""
from __future__ import annotations

import errno
import os
import select
import stat
import subprocess
import sys
import threading
import time

import pytest

from fastmig_tools.xenstore.real import (
    INSTALL_HINT,
    ManagedXenstored,
    XenstoredUnavailable,
    lowlevel_module,
)

DEADLINE = 5.0  # seconds; every wait below is bounded by this


def _process_gone(pid: int) -> bool:
    """True when no process (not even a zombie) has this pid."""
    return not os.path.exists("/proc/%d" % pid)


# --------------------------------------------------------------------------
# life cycle
# --------------------------------------------------------------------------

def test_start_brings_socket_up_and_stop_leaves_nothing():
    daemon = ManagedXenstored(name="xenstored-lifecycle")
    daemon.start()
    pid, directory, sock = daemon.pid, daemon.directory, daemon.socket_path
    try:
        print("socket up after %.1f ms" % (daemon.startup_seconds * 1e3))
        assert daemon.running
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        assert daemon.env() == {"XENSTORED_PATH": sock, "XENSTORED_RUNDIR": directory}
        with open(os.path.join(directory, "pid")) as f:
            assert int(f.read()) == pid
    finally:
        daemon.stop()
    assert not daemon.running
    assert daemon.directory is None
    assert not os.path.exists(directory)
    assert _process_gone(pid)
    assert "--- xenstored-lifecycle trace" in daemon.log_text()
    daemon.stop()  # idempotent


def test_context_manager_stops_a_paused_daemon():
    with ManagedXenstored(name="xenstored-paused") as daemon:
        pid, directory = daemon.pid, daemon.directory
        daemon.pause()
        assert daemon.paused
    assert _process_gone(pid)
    assert not os.path.exists(directory)


def test_start_failure_raises_with_log_and_cleans_up():
    daemon = ManagedXenstored(name="xenstored-badflag", extra_args=("no-positional-arguments",))
    with pytest.raises(XenstoredUnavailable) as info:
        daemon.start()
    assert "exited with status" in str(info.value)
    assert daemon.directory is None and not daemon.running


def test_missing_install_names_the_install_script(tmp_path):
    with pytest.raises(XenstoredUnavailable) as info:
        ManagedXenstored(root=tmp_path)
    assert "scripts/install-xenstored" in str(info.value)
    assert "scripts/install-xenstored" in INSTALL_HINT


def test_two_daemons_side_by_side():
    with ManagedXenstored(name="xsd-a") as a, ManagedXenstored(name="xsd-b") as b:
        assert a.socket_path != b.socket_path and a.pid != b.pid
        ha, hb = a.open_lowlevel(), b.open_lowlevel()
        try:
            ha.write("", "/side/value", b"a")
            hb.write("", "/side/value", b"b")
            assert ha.read("", "/side/value") == b"a"
            assert hb.read("", "/side/value") == b"b"
            hb.rm("", "/side")
            assert ha.read("", "/side/value") == b"a"
            assert hb.read("", "/side/value") is None
        finally:
            ha.close()
            hb.close()


def test_env_points_xenstore_tools_at_the_daemon(real_xenstored, real_lowlevel, xs_root):
    real_lowlevel.write("", xs_root + "/tool", b"from-python")
    env = dict(os.environ, **real_xenstored.env())
    out = subprocess.run(["xenstore-read", xs_root + "/tool"], env=env,
                         capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "from-python"


def test_binding_loads_even_when_another_xen_package_shadows_it(tmp_path):
    """Tests of the xend side put a Xen 3.1 ``xen`` package first on sys.path."""
    (tmp_path / "xen" / "lowlevel").mkdir(parents=True)
    (tmp_path / "xen" / "__init__.py").write_text("SHADOW = True\n")
    (tmp_path / "xen" / "lowlevel" / "__init__.py").write_text("")
    script = (
        "import sys, xen\n"
        "from fastmig_tools.xenstore.real import ManagedXenstored, lowlevel_module\n"
        "xs = lowlevel_module()\n"
        "assert xen.SHADOW and sys.modules['xen'] is xen\n"
        "assert 'xen.lowlevel.xs' not in sys.modules\n"
        "with ManagedXenstored(trace=False) as d:\n"
        "    h = d.open_lowlevel(); h.write('', '/s', b'ok'); print(h.read('', '/s'))\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH="%s:%s" % (tmp_path, repo))
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=3 * DEADLINE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b'ok'"


# --------------------------------------------------------------------------
# the binding against the daemon (facts the embedded store must match)
# --------------------------------------------------------------------------

def test_read_write_ls_rm(real_lowlevel, xs_root):
    h = real_lowlevel
    h.write("", xs_root + "/a/b", b"v1")
    h.write("", xs_root + "/a/s", "text")          # str values are accepted
    assert h.read("", xs_root + "/a/b") == b"v1"   # read returns bytes
    assert h.read("", xs_root + "/a/s") == b"text"
    assert h.read("", xs_root + "/a") == b""       # implicit parents are empty
    assert sorted(h.ls("", xs_root + "/a")) == ["b", "s"]   # ls returns str
    assert h.read("", xs_root + "/missing") is None
    assert h.ls("", xs_root + "/missing") is None
    assert h.rm("", xs_root + "/missing/deeper") is None    # missing: no error
    h.rm("", xs_root + "/a")                                # recursive
    assert h.read("", xs_root + "/a/b") is None
    assert h.ls("", xs_root) == []


def test_errors_are_runtimeerror_with_errno(real_lowlevel, xs_root):
    xs = lowlevel_module()
    assert issubclass(xs.Error, RuntimeError)
    with pytest.raises(xs.Error) as info:
        real_lowlevel.ls("", xs_root + "//bad")
    assert info.value.args == (errno.EINVAL, os.strerror(errno.EINVAL))
    with pytest.raises(xs.Error) as info:
        real_lowlevel.get_permissions("", xs_root + "/missing")
    assert info.value.args[0] == errno.ENOENT
    with pytest.raises(TypeError):
        real_lowlevel.read("", (xs_root + "/x").encode())  # paths must be str


def test_transaction_conflict_returns_false(real_xenstored, real_lowlevel, xs_root):
    other = real_xenstored.open_lowlevel()
    try:
        real_lowlevel.write("", xs_root + "/t", b"0")
        t = real_lowlevel.transaction_start()
        assert isinstance(t, str)
        assert real_lowlevel.read(t, xs_root + "/t") == b"0"
        other.write("", xs_root + "/t", b"other")
        real_lowlevel.write(t, xs_root + "/t", b"mine")
        assert real_lowlevel.transaction_end(t, False) is False   # EAGAIN
        assert real_lowlevel.read("", xs_root + "/t") == b"other"
        t = real_lowlevel.transaction_start()
        real_lowlevel.write(t, xs_root + "/t", b"mine")
        assert real_lowlevel.transaction_end(t) is True
        assert real_lowlevel.read("", xs_root + "/t") == b"mine"
    finally:
        other.close()


def test_watch_event_reaches_second_connection(real_xenstored, real_lowlevel, xs_root):
    watcher = real_xenstored.open_lowlevel()
    try:
        token = object()
        watcher.watch(xs_root + "/w", token)
        path, got = _next_event(watcher)      # a new watch fires once at once
        assert path == xs_root + "/w" and got is token
        latencies = []
        for i in range(20):
            t0 = time.perf_counter()
            real_lowlevel.write("", "%s/w/n%d" % (xs_root, i), b"x")
            ready, _, _ = select.select([watcher.fileno()], [], [], DEADLINE)
            latencies.append(time.perf_counter() - t0)
            assert ready, "no watch event within %.0fs" % DEADLINE
            path, got = watcher.read_watch()
            assert path == "%s/w/n%d" % (xs_root, i) and got is token
        latencies.sort()
        print("write->watch event: median %.3f ms, max %.3f ms"
              % (latencies[len(latencies) // 2] * 1e3, latencies[-1] * 1e3))
        watcher.unwatch(xs_root + "/w", token)
    finally:
        watcher.close()


# --------------------------------------------------------------------------
# fault injection
# --------------------------------------------------------------------------

def test_kill_is_seen_by_clients_as_errors():
    xs = lowlevel_module()
    with ManagedXenstored(name="xenstored-kill") as daemon:
        h = daemon.open_lowlevel()
        h.write("", "/k", b"1")
        pid = daemon.pid
        assert daemon.kill() == -9
        assert _process_gone(pid) and not daemon.running
        with pytest.raises(xs.Error) as info:
            h.read("", "/k")
        assert info.value.args[0] in (errno.EPIPE, errno.ECONNRESET)
        with pytest.raises(xs.Error) as info:      # the handle stays broken
            h.read("", "/k")
        assert info.value.args[0] == errno.EBADF
        with pytest.raises(xs.Error) as info:
            daemon.open_lowlevel()
        assert info.value.args[0] == errno.ECONNREFUSED
        h.close()
        directory = daemon.directory
    assert not os.path.exists(directory)


def test_kill_wakes_a_blocked_read_watch():
    xs = lowlevel_module()
    with ManagedXenstored(name="xenstored-kill-watch") as daemon:
        h = daemon.open_lowlevel()
        h.watch("/w", "tok")
        assert _next_event(h) == ("/w", "tok")
        result = []
        reader = threading.Thread(target=lambda: result.append(_call(h.read_watch)))
        reader.start()
        daemon.kill()
        reader.join(DEADLINE)
        assert not reader.is_alive()
        assert isinstance(result[0], xs.Error)
        h.close()


def test_pause_blocks_requests_until_resume(real_xenstored, real_lowlevel, xs_root):
    real_lowlevel.write("", xs_root + "/p", b"v")
    result = []
    real_xenstored.pause()
    try:
        reader = threading.Thread(
            target=lambda: result.append(_call(real_lowlevel.read, "", xs_root + "/p")))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive(), "a request completed while the daemon was stopped"
    finally:
        real_xenstored.resume()
    reader.join(DEADLINE)
    assert result == [b"v"]


def _next_event(handle):
    """The next watch event, waiting at most DEADLINE (read_watch alone
    would block forever)."""
    ready, _, _ = select.select([handle.fileno()], [], [], DEADLINE)
    assert ready, "no watch event within %.0fs" % DEADLINE
    return handle.read_watch()


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        return e


# --------------------------------------------------------------------------
# fakexen.so: what it stands in for is really used
# --------------------------------------------------------------------------

def test_daemon_refuses_to_run_without_fakexen(tmp_path):
    """Guards against a harness that would silently run something else."""
    daemon = ManagedXenstored(name="probe")  # only to find the install
    env = dict(os.environ, XENSTORED_RUNDIR=str(tmp_path),
               XENSTORED_PATH=str(tmp_path / "socket"))
    env.pop("LD_PRELOAD", None)
    out = subprocess.run([str(daemon.install.xenstored), "--no-fork"], env=env,
                         capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode != 0
    assert "hypervisor" in out.stdout + out.stderr


def test_introduce_and_release_domain_through_fakexen(real_xenstored, real_lowlevel):
    """Grant mapping, interdomain binding and domain info are all faked."""
    watcher = real_xenstored.open_lowlevel()
    try:
        watcher.watch("@introduceDomain", "intro")
        watcher.watch("@releaseDomain", "release")
        initial = {_next_event(watcher), _next_event(watcher)}
        assert initial == {("@introduceDomain", "intro"), ("@releaseDomain", "release")}
        real_lowlevel.introduce_domain(4242, 0x1000, 3)
        assert _next_event(watcher) == ("@introduceDomain", "intro")
        assert real_lowlevel.get_domain_path(4242) == "/local/domain/4242"
        real_lowlevel.release_domain(4242)
        assert _next_event(watcher) == ("@releaseDomain", "release")
    finally:
        watcher.close()


def test_refused_grant_map_fails_the_introduce_of_a_new_domain():
    """The fault the harness arms for completeRestore: xenstored answers
    the introduce with the map's EINVAL and keeps nothing of the domain;
    once disarmed, the same domain introduces."""
    with ManagedXenstored(name="xsd-refuse-map") as daemon:
        h = daemon.open_lowlevel()
        watcher = daemon.open_lowlevel()
        try:
            h.introduce_domain(4243, 0x1000, 3)       # known before the fault
            watcher.watch("@introduceDomain", "intro")
            assert _next_event(watcher) == ("@introduceDomain", "intro")
            daemon.refuse_grant_maps()
            xs = lowlevel_module()
            with pytest.raises(xs.Error) as info:
                h.introduce_domain(4242, 0x1000, 3)
            assert info.value.args == (errno.EINVAL, os.strerror(errno.EINVAL))
            # No @introduceDomain fired, and the daemon did not keep it.
            assert not select.select([watcher.fileno()], [], [], 0.2)[0]
            with pytest.raises(xs.Error) as info:
                h.release_domain(4242)
            assert info.value.args[0] == errno.ENOENT
            h.introduce_domain(4243, 0x1000, 4)       # re-binds, maps nothing
            daemon.refuse_grant_maps(False)
            h.introduce_domain(4242, 0x1000, 3)
            assert _next_event(watcher) == ("@introduceDomain", "intro")
            h.release_domain(4242)
            h.release_domain(4243)
        finally:
            watcher.close()
            h.close()


def test_a_shim_built_from_another_source_is_replaced(tmp_path):
    """The install is shared by every checkout: a fakexen.so whose stamp
    names another fakexen.c is not used; this checkout's is built beside
    it, under its own hash, and reused on the next start."""
    from fastmig_tools.xenstore import real
    stale = tmp_path / "fakexen.so"
    stale.write_bytes(b"not this source")
    (tmp_path / "fakexen.so.sha256").write_text("0" * 64 + "\n")
    built = real._current_preload(stale)
    assert built != stale and built.parent == tmp_path
    assert built.name.startswith("fakexen-") and os.access(built, os.X_OK)
    nm = subprocess.run(["nm", "-D", "--defined-only", str(built)],
                        capture_output=True, text=True, timeout=DEADLINE)
    assert "xengnttab_map_grant_ref" in nm.stdout
    mtime = built.stat().st_mtime_ns
    assert real._current_preload(stale) == built
    assert built.stat().st_mtime_ns == mtime          # not rebuilt
    # A stamp naming this source keeps the install's own build.
    import hashlib
    (tmp_path / "fakexen.so.sha256").write_text(
        hashlib.sha256(real._FAKEXEN_SOURCE.read_bytes()).hexdigest() + "\n")
    assert real._current_preload(stale) == stale
