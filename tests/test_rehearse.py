"""The rehearsal: its checker has teeth, each policy does what its code
did, and the command behaves (arguments, --json, clean stops).

Runs are kept small: a fraction of a GB, short live rounds, a small
destroy cost, so the whole file takes seconds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fastmig_tools.rehearse import runner
from fastmig_tools.rehearse.disk import (
    INFLIGHT, NEWER, SharedDisk, block_of)
from fastmig_tools.rehearse.report import SCHEMA
from fastmig_tools.rehearse.runner import (
    AT_TARGET, LOST, RESUMED, TEMP_PREFIX, run_once)
from fastmig_tools.rehearse.scenario import Scenario
from fastmig_tools.rehearse.sweep import parse_sweep

REPO = Path(__file__).resolve().parents[1]

# destroy = 0.5 GB * 0.6 s/GB = 300 ms
FAST = dict(memory_gb=0.5, destroy_per_gb=0.6, precopy_seconds=0.02,
            inflight=2, devices=2)


def scenario(**changes) -> Scenario:
    knobs = dict(FAST)
    knobs.update(changes)
    return Scenario(**knobs)


def slow_block(s: Scenario) -> str:
    return "dev0 block %d" % block_of(0, s.inflight)


# ---------------------------------------------------------------------------
# the disk checker on its own
# ---------------------------------------------------------------------------

def test_checker_flags_an_older_write_landing_last(tmp_path):
    disk = SharedDisk(str(tmp_path / "d.img"), devices=1)
    try:
        disk.issue(0, 3, INFLIGHT)
        disk.write("target", 0, 3, INFLIGHT)
        disk.issue(0, 3, NEWER)
        disk.write("target", 0, 3, NEWER)
        assert disk.check().clean
        disk.write("source", 0, 3, INFLIGHT)     # the late in-flight write
        verdict = disk.check()
    finally:
        disk.close()
    assert not verdict.clean
    (problem,) = verdict.problems
    assert (problem.block, problem.expected_version,
            problem.found_version, problem.found_writer) == (3, 2, 1, "source")


def test_checker_flags_a_torn_block(tmp_path):
    path = tmp_path / "d.img"
    disk = SharedDisk(str(path), devices=1)
    try:
        with open(path, "r+b") as f:
            f.seek(4096 * 5 + 100)
            f.write(b"garbage")
        verdict = disk.check()
    finally:
        disk.close()
    assert [p.block for p in verdict.problems] == [5]
    assert verdict.problems[0].found_version is None


# ---------------------------------------------------------------------------
# the policies
# ---------------------------------------------------------------------------

def test_xen41_with_a_slow_write_corrupts_the_disk():
    s = scenario(policy="xen41", slow_write_ms=300)
    result = run_once(s)
    assert result.outcome == AT_TARGET
    assert not result.disk_clean
    assert len(result.stale_blocks) == 1
    assert result.stale_blocks[0].startswith(slow_block(s))
    # It released the target long before the write landed.
    assert result.release_after_last_write_ms < -100


def test_fastmig_with_the_same_slow_write_is_clean():
    s = scenario(policy="fastmig", slow_write_ms=150)
    result = run_once(s)
    assert result.error is None
    assert result.outcome == AT_TARGET
    assert result.disk_clean, result.stale_blocks
    assert result.release_after_last_write_ms >= 0
    assert "fast handover" in result.handover
    # Fast: the blackout follows the slow write, not the destroy (300 ms).
    assert result.blackout_ms < 150 + 120


def test_patch2008_releases_before_the_slow_write_and_corrupts():
    result = run_once(scenario(policy="patch2008", slow_write_ms=150))
    assert result.outcome == AT_TARGET
    assert not result.disk_clean
    assert result.gate_ms < 100


@pytest.mark.parametrize("slow_ms, clean", [(80, True), (700, False)])
def test_stock_is_safe_only_while_the_destroy_outlasts_the_write(slow_ms,
                                                                 clean):
    result = run_once(scenario(policy="stock", slow_write_ms=slow_ms))
    assert result.outcome == AT_TARGET
    assert result.disk_clean is clean, result.stale_blocks
    # The gate is the destroy: memory * per-GB.
    assert 300 <= result.gate_ms < 300 + 400


def test_target_failing_after_the_image_fastmig_resumes_at_the_source():
    result = run_once(scenario(policy="fastmig", slow_write_ms=50,
                               target_fails_after_image=True))
    assert result.outcome == RESUMED
    assert result.disk_clean, result.stale_blocks
    assert result.resumed_ms is not None and result.unpaused_ms is None
    assert "resumed at the source" in result.handover
    assert "InjectedFailure" in result.target_error


def test_target_failing_after_the_image_stock_loses_the_guest():
    result = run_once(scenario(policy="stock", target_fails_after_image=True))
    assert result.outcome == LOST
    assert result.blackout_ms is None
    assert result.unpaused_ms is None and result.resumed_ms is None


def test_fastmig_with_shutdown_request_backends_waits_for_shutdown_done():
    result = run_once(scenario(policy="fastmig", backend="shutdown-request",
                               slow_write_ms=100))
    assert result.outcome == AT_TARGET
    assert result.disk_clean
    assert "shutdown-done" in result.handover
    assert result.release_after_last_write_ms >= 0


def test_fastmig_with_a_hung_backend_falls_back_to_the_stock_order():
    result = run_once(scenario(policy="fastmig", backend="hung",
                               drain_timeout=0.2, slow_write_ms=50))
    assert result.outcome == AT_TARGET
    assert result.disk_clean
    assert "stock-order handover" in result.handover
    # Released only after the drain deadline (which runs from the release,
    # at the suspend with the early release) and the destroy.
    assert result.released_ms >= 200 + 300
    assert result.source_destroyed_ms <= result.released_ms


def test_fastmig_on_the_real_xenstored(real_xenstored):
    # real_xenstored makes a missing install FAIL with what to install.
    result = run_once(scenario(policy="fastmig", slow_write_ms=100,
                               xenstored="real"))
    assert result.outcome == AT_TARGET
    assert result.disk_clean
    # The classic drain signal trails the write by the hotplug cleanup.
    teardown = result.scenario["teardown_ms"]
    assert teardown <= result.release_after_last_write_ms < teardown + 50


def test_embedded_hosts_run_xen31_semantics_and_the_scenario_line_says_so():
    from fastmig_tools.rehearse.report import describe_knobs
    from fastmig_tools.rehearse.stores import open_host_stores
    from fastmig_tools.xenstore.semantics import Xen31Semantics
    stores = open_host_stores("embedded")
    try:
        for store in stores:
            assert isinstance(store.embedded._semantics, Xen31Semantics)
    finally:
        for store in stores:
            store.close()
    assert describe_knobs(scenario()).endswith("embedded Xen 3.1 xenstore")
    assert describe_knobs(scenario(xenstored="real")).endswith(
        "real Xen 4.17 xenstored")


# ---------------------------------------------------------------------------
# clean shutdown
# ---------------------------------------------------------------------------

def _our_threads():
    return {t for t in threading.enumerate() if t is not threading.main_thread()}


def test_a_run_leaves_no_thread_and_no_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = _our_threads()
    run_once(scenario(policy="fastmig", slow_write_ms=30))
    deadline = time.monotonic() + 5
    while _our_threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not (_our_threads() - before)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_inside_a_run_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = _our_threads()
    real = runner.run_policy

    def interrupted(policy, dominfo, port, platform, *args, **kwargs):
        original = platform.run_xc_save

        def save(*a, **k):
            original(*a, **k)
            raise KeyboardInterrupt     # after the image, mid-handover
        platform.run_xc_save = save
        return real(policy, dominfo, port, platform, *args, **kwargs)
    monkeypatch.setattr(runner, "run_policy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_once(scenario(policy="fastmig", slow_write_ms=30))
    deadline = time.monotonic() + 5
    while _our_threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not (_our_threads() - before)
    assert list(tmp_path.iterdir()) == []


def _pids_using(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_sigint_to_the_command_stops_daemons_and_removes_files(
        tmp_path, real_xenstored):
    env = dict(os.environ, TMPDIR=str(tmp_path),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get(
                   "PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastmig_tools.cli", "rehearse",
         "--xenstored", "real", "--policies", "stock", "--memory", "8G",
         "--precopy", "20", "--quiet"],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        # Wait until the run is under way (its temp dir exists), then ^C.
        deadline = time.monotonic() + 20
        while not any(p.name.startswith(TEMP_PREFIX)
                      for p in tmp_path.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.01)
        assert _pids_using(tmp_path), "no daemon was started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"interrupted" in err
    assert list(tmp_path.iterdir()) == []
    assert _pids_using(tmp_path) == []


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

def _main(argv, capsys):
    from fastmig_tools.cli import main
    code = main(["rehearse"] + argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["--policies", "stock,nope"], "unknown policy 'nope'"),
    (["--policies", "stock,stock"], "named twice"),
    (["--memory", "lots"], "is not a size"),
    (["--memory", "0G"], "more than zero"),
    (["--runs", "0"], "0 is not between 1 and 100"),
    (["--devices", "0"], "0 is not between 1 and 16"),
    (["--inflight", "40"], "between 0 and 32"),
    (["--slow-write", "-5"], "zero or more"),
    (["--destroy-per-gb", "x"], "not a number"),
    (["--backend", "zfs"], "invalid choice"),
    (["--xenstored", "mine"], "invalid choice"),
    (["--sweep", "memory"], "KNOB=V1,V2"),
    (["--sweep", "colour=red"], "cannot sweep 'colour'"),
    (["--sweep", "memory=1G,big"], "is not a size"),
    (["--sweep", "devices=1", "--sweep", "devices=2"], "swept twice"),
    (["--plot", "out.pdf"], ".png or .svg"),
    (["--plot", "/nonexistent/dir/out.png"], "does not exist"),
])
def test_bad_arguments_exit_non_zero_with_a_clear_message(argv, message,
                                                          capsys):
    with pytest.raises(SystemExit) as exc:
        from fastmig_tools.cli import main
        sys.exit(main(["rehearse"] + argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_plot_without_matplotlib_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import fails
    code, out, err = _main(["--plot", "x.png", "--policies", "fastmig"],
                           capsys)
    assert code == 2
    assert "pip install matplotlib" in err
    assert out == ""                      # refused before running anything


def test_real_xenstored_missing_says_how_to_install(monkeypatch, capsys,
                                                    tmp_path):
    monkeypatch.setenv("FASTMIG_XEN_ROOT", str(tmp_path / "nothing"))
    code, out, err = _main(["--xenstored", "real", "--policies", "fastmig",
                            "--precopy", "10", "--memory", "256M"], capsys)
    assert code == 2
    assert "install-xenstored" in err


def test_parse_sweep():
    assert parse_sweep("memory=1G,512M") == ("memory", [1.0, 0.5])
    assert parse_sweep("slow-write=0,2.5s") == ("slow-write", [None, 2500.0])
    assert parse_sweep("backend=classic,shutdown-request")[1] == [
        "classic", "shutdown-request"]


def test_json_document_schema(capsys):
    code, out, err = _main(
        ["--json", "--policies", "xen41,fastmig", "--memory", "256M",
         "--destroy-per-gb", "0.4", "--precopy", "10", "--inflight", "1",
         "--slow-write", "150", "--runs", "2", "--sweep", "devices=1,2"],
        capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == SCHEMA
    assert doc["runs"] == 2
    assert doc["sweep"] == {"devices": [1, 2]}
    assert doc["scenario"]["memory_gb"] == 0.25
    assert [p["knobs"] for p in doc["points"]] == [{"devices": 1},
                                                   {"devices": 2}]
    # --json is quiet on stderr (--progress asks for a progress line).
    assert "rehearse [" not in err
    for point in doc["points"]:
        assert [p["policy"] for p in point["policies"]] == ["xen41",
                                                            "fastmig"]
        for entry in point["policies"]:
            summary = entry["summary"]
            assert summary["runs"] == 2 and len(entry["runs"]) == 2
            for key in ("blackout_ms", "gate_ms",
                        "release_after_last_write_ms", "xs_ops"):
                assert set(summary[key]) == {"median", "min", "max", "n"}
            for run in entry["runs"]:
                assert run["policy"] == entry["policy"]
                assert run["outcome"] in ("running at the target",
                                          "resumed at the source", "lost",
                                          "running twice")
                assert run["disk_verdict"] in ("clean", "corrupt")
                assert isinstance(run["xs_ops"], int)
                for key in ("blackout_ms", "gate_ms",
                            "release_after_last_write_ms"):
                    assert isinstance(run[key], float)
                assert run["scenario"]["devices"] == point["knobs"]["devices"]
                if run["policy"] == "fastmig":
                    assert any("fast handover" in line
                               for line in run["core_log"])
        by_policy = {e["policy"]: e["summary"] for e in point["policies"]}
        assert by_policy["fastmig"]["corrupt_runs"] == 0
        assert by_policy["xen41"]["corrupt_runs"] == 2


def test_table_output(capsys):
    code, out, err = _main(["--policies", "stock,fastmig", "--memory",
                            "256M", "--precopy", "10", "--slow-write", "0"],
                           capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("memory 0.25 GB")
    assert lines[1].split()[:3] == ["policy", "blackout", "gate"]
    assert lines[3].startswith("stock") and lines[4].startswith("fastmig")
    assert "running at the target" in lines[4]
    assert err.count("rehearse [") == 2   # a line per completed run


def test_plot_is_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")     # --plot is an optional feature
    target = tmp_path / "blackout.svg"
    code, out, err = _main(["--policies", "xen41,fastmig", "--precopy", "10",
                            "--destroy-per-gb", "0.1", "--sweep",
                            "memory=256M,512M", "--plot", str(target),
                            "--quiet"], capsys)
    assert code == 0, err
    assert target.read_text().lstrip().startswith(("<?xml", "<svg"))


# ---------------------------------------------------------------------------
# the modelled tails, pinned: what each does, in which order
# ---------------------------------------------------------------------------

class _RecordingSocket:
    """Stands for the relocation socket: records when it was let go."""

    def __init__(self):
        self.events = []

    def shutdown(self, how):
        self.events.append(("shutdown", time.monotonic()))

    def close(self):
        self.events.append(("close", time.monotonic()))

    def first(self):
        return self.events[0]


@pytest.fixture
def source_domain():
    from fastmig_tools.models.blkback import ClassicBlkback, InflightRequest
    from fastmig_tools.rehearse.stores import HostStore
    from fastmig_tools.rehearse.workload import RehearsalDomainInfo
    host = HostStore("tails", "embedded").start()
    api = host.api()
    dominfo = RehearsalDomainInfo(
        api.store(), 9, "g9", vbds=[{"dev": "xvda", "uname": "phy:/x"},
                                    {"dev": "xvdb", "uname": "phy:/y"}],
        memory_gb=0.2, destroy_seconds_per_gb=0.5)
    actors = []
    for device in dominfo.layout.block_devices:
        actor = ClassicBlkback(host.api().store(), device.backend,
                               requests=[InflightRequest(0, delay=0.05)])
        actor.set_suspend_time(time.monotonic())
        actors.append(actor.start())
    try:
        yield dominfo, api.store(), actors
    finally:
        for actor in actors:
            actor.stop()
        host.close()


def test_stock_tail_destroys_then_closes_without_waiting(source_domain):
    from fastmig_tools.rehearse.policies import stock_tail
    dominfo, store, actors = source_domain
    sock = _RecordingSocket()
    stock_tail(sock, dominfo, store)
    assert sock.first()[0] == "close"
    assert sock.first()[1] >= dominfo.times["destroy_started"] + 0.1
    # 3.1.0's vacuous wait: it looked at backend/vbd/None.
    assert dominfo.getDomid() is None
    assert dominfo.called("testDeviceComplete")


def test_patch2008_tail_deletes_the_backends_then_lets_go_then_destroys(
        source_domain):
    from fastmig_tools.rehearse.policies import patch2008_tail
    dominfo, store, actors = source_domain
    sock = _RecordingSocket()
    slept = []
    patch2008_tail(sock, dominfo, store, sleep=slept.append)
    assert [e for e, _ in sock.events] == ["shutdown", "close"]
    assert sock.first()[1] < dominfo.times["destroy_started"]
    assert slept == []          # nothing left to wait for: the quirk
    for actor in actors:
        assert actor.wait_unregistered(5)
        assert actor.unregister_reason == "backend removed"
        assert actor.removed_at is None     # udev never got to say "drained"


def test_xen41_tail_lets_go_before_destroying(source_domain):
    from fastmig_tools.rehearse.policies import xen41_tail
    dominfo, store, actors = source_domain
    sock = _RecordingSocket()
    xen41_tail(sock, dominfo, store)
    assert [e for e, _ in sock.events] == ["shutdown", "close"]
    assert sock.first()[1] < dominfo.times["destroy_started"]
    # Let go while the guest's writes (due 50 ms after the suspend) were
    # still in flight.
    let_go = sock.first()[1]
    assert all(r.completed_at is None or r.completed_at > let_go
               for a in actors for r in a.requests)
