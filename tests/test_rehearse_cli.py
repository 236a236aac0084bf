"""The rehearsal's command line as a user meets it: --list-faults, what
--help says, bounds on every number, progress, and the table's drain
column.  Runs are tiny (a fraction of a GB, short live rounds)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastmig_tools.rehearse.catalogue import FAULTS, FaultError, parse_fault

REPO = Path(__file__).resolve().parents[1]
TINY = ["--memory", "256M", "--precopy", "10", "--destroy-per-gb", "0.4",
        "--inflight", "1"]


def rehearse(*argv, timeout=120, env=None):
    full_env = dict(os.environ, PYTHONPATH=str(REPO))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fastmig_tools.cli", "rehearse", *argv],
        cwd=str(REPO), env=full_env, capture_output=True, text=True,
        timeout=timeout)


# ---------------------------------------------------------------------------
# faults and @WHEN
# ---------------------------------------------------------------------------

def test_list_faults_names_every_fault_its_when_and_default():
    proc = rehearse("--list-faults", timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    names = [line.split()[0] for line in lines[2:] if line
             and not line.startswith(" ") and not line.startswith("@")
             and not line.startswith("Example")]
    assert names == list(FAULTS)
    rows = {line.split()[0]: line.split() for line in lines[2:]
            if line and not line.startswith(" ")}
    assert rows["slow-write"][1:4] == ["@MS", "600", "ms"]
    assert rows["xs-eagain-commit"][1:3] == ["@N", "3"]
    assert rows["late-drain"][1:3] == ["@MS", "1.5"]
    assert rows["hvm"][1:3] == ["-", "-"]
    assert "@N: how many commits conflict" in proc.stdout
    assert "@MS = milliseconds after the guest's suspend" in proc.stdout


def test_help_explains_when():
    proc = rehearse("--help", timeout=60)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "@MS = milliseconds after the guest's suspend" in text
    assert "@N = a count of the source xend's xenstore requests" in text
    assert "--list-faults" in text
    assert "docs/design.md" in text and "issue" not in text


@pytest.mark.parametrize("text, message", [
    ("hvm@3", "takes no @WHEN"),
    ("xs-eagain-read@1.5", "whole number"),
    ("xs-eagain-read@0", "between 1 and 1000"),
    ("xs-reset@5000", "between 0 and 1000"),
    ("slow-write@9999999", "between 0 and 300000"),
    ("slow-write@soon", "not a number (@MS: milliseconds"),
    ("nope", "--list-faults"),
])
def test_bad_when_is_refused(text, message):
    with pytest.raises(FaultError) as exc:
        parse_fault(text)
    assert message in str(exc.value)


def test_good_when_is_taken():
    assert parse_fault("xs-reset@0") == ("xs-reset", 0.0)
    assert parse_fault("xs-eagain-read@3") == ("xs-eagain-read", 3.0)
    assert parse_fault("slow-write@2500") == ("slow-write", 2500.0)
    assert parse_fault("hvm") == ("hvm", None)


# ---------------------------------------------------------------------------
# bounds
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--memory", "2T"], "memory 2T is outside 16M..1T"),
    (["--memory", "0.0001M"], "outside 16M..1T"),
    (["--memory", "8M"], "outside 16M..1T"),
    (["--devices", "17"], "17 is not between 1 and 16"),
    (["--inflight", "33"], "33 is not between 0 and 32"),
    (["--runs", "101"], "101 is not between 1 and 100"),
    (["--runs", "two"], "'two' is not a whole number"),
    (["--slow-write", "301s"], "301s is outside 0ms..300s"),
    (["--precopy", "6min"], "is not a duration"),
    (["--drain-timeout", "5ms"], "5ms is outside 10ms..300s"),
    (["--destroy-per-gb", "11"], "11 is outside 0..10"),
    (["--destroy-per-gb", "nan"], "outside 0..10"),
    (["--memory", "1T", "--destroy-per-gb", "5"], "at most 3600 s"),
    (["--sweep", "devices=1,40"], "--sweep devices: 40 is not between"),
    (["--sweep", "memory=1G,4T"], "--sweep memory: memory 4T is outside"),
    (["--sweep", "slow-write=1s,1h"], "is not a duration"),
])
def test_numbers_out_of_bounds_get_one_clear_line(argv, message, capsys):
    from fastmig_tools.cli import main
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(["rehearse"] + argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == [err.strip().splitlines()[-1]]   # one line, the last


def test_help_states_the_bounds_and_why():
    text = " ".join(rehearse("--help", timeout=60).stdout.split())
    assert "16M..1T" in text and "destroy time was measured" in text
    assert "1..16: xvda..xvdp" in text
    assert "0..32: a 3.1 blkif ring holds 32" in text
    assert "1..100" in text


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------

class _Terminal:
    """A stderr that says it is a terminal and keeps what was drawn."""

    def __init__(self, tty=True):
        self.text = ""
        self.tty = tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return self.tty


def test_progress_ticks_while_a_step_runs():
    import threading
    import time
    from fastmig_tools.rehearse.progress import Progress
    stream = _Terminal()
    progress = Progress(3, stream, interval=0.02)
    progress.update("stock")
    time.sleep(0.3)
    ticks = stream.text.count("\r")
    progress.close()
    assert ticks >= 5, stream.text
    assert "ETA ?" in stream.text          # nothing finished yet
    assert not any(t.name == "progress-ticker"
                   for t in threading.enumerate())


def test_progress_eta_comes_from_the_steps_done():
    from fastmig_tools.rehearse.progress import Progress
    now = [100.0]
    stream = _Terminal(tty=False)
    progress = Progress(4, stream, clock=lambda: now[0])
    progress.update("a")
    now[0] = 110.0
    progress.step("a")                     # 10 s per step so far
    assert progress.eta_seconds() == 30.0
    now[0] = 114.0
    assert progress.eta_seconds() == 26.0
    assert "1/4 10s ETA 30s  a" in stream.text
    progress.close()
    assert "\r" not in stream.text          # off a terminal: lines only


def test_progress_off_a_terminal_prints_a_line_per_finished_step():
    from fastmig_tools.rehearse.progress import Progress
    stream = _Terminal(tty=False)
    progress = Progress(2, stream)
    progress.update("a")
    progress.step("a")
    progress.update("b")
    progress.step("b")
    progress.close()
    assert stream.text.count("\n") == 2
    assert "2/2" in stream.text.splitlines()[-1]
    assert "ETA" not in stream.text.splitlines()[-1]


def test_json_is_quiet_unless_progress_is_asked_for():
    quiet = rehearse("--json", "--policies", "xen41,fastmig", *TINY)
    assert quiet.returncode == 0, quiet.stderr
    assert "rehearse [" not in quiet.stderr
    asked = rehearse("--json", "--progress", "--policies", "xen41,fastmig",
                     *TINY)
    assert asked.returncode == 0, asked.stderr
    # A live line: redrawn in place (text mode turns its \r into \n).
    assert "\x1b[K" in asked.stderr and "ETA" in asked.stderr
    assert asked.stdout.lstrip().startswith("{")


def test_quiet_wins_over_progress():
    proc = rehearse("--quiet", "--progress", "--policies", "fastmig", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# ---------------------------------------------------------------------------
# the table: how each drain was confirmed, without --verbose
# ---------------------------------------------------------------------------

def _row(out, policy):
    header = out.splitlines()[1]
    line = next(line for line in out.splitlines()
                if line.startswith(policy + " "))
    start = header.index("drain confirmed")
    end = header.index("disk")
    return line[start:end].strip()


@pytest.mark.parametrize("backend, confirmed", [
    ("classic", "backend-gone x2"),
    ("shutdown-request", "shutdown-done x2"),
])
def test_table_says_how_each_drain_was_confirmed(backend, confirmed):
    proc = rehearse("--policies", "stock,fastmig", "--backend", backend,
                    "--quiet", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "drain confirmed" in proc.stdout.splitlines()[1]
    assert _row(proc.stdout, "fastmig") == confirmed
    assert _row(proc.stdout, "stock") == "not waited for"
    assert "fast handover" not in proc.stdout + proc.stderr   # no --verbose


def test_drain_text_for_fallbacks_and_no_disks():
    from types import SimpleNamespace
    from fastmig_tools.rehearse.report import drain_text

    def result(path, confirmations, devices=2, policy="fastmig"):
        return SimpleNamespace(policy=policy, handover_path=path,
                               drain_confirmations=confirmations,
                               scenario={"devices": devices})
    gone = ["vbd/51712", "backend-gone", 1.0]
    done = ["vbd/51728", "shutdown-done", 2.0]
    assert drain_text(result("fast", [gone, done])) == (
        "backend-gone, shutdown-done")
    assert drain_text(result("stock-order", [])) == (
        "stock order, none confirmed")
    assert drain_text(result("stock-order", [gone, gone])) == (
        "stock order, backend-gone x2")
    assert drain_text(result("fast", [], devices=0)) == "no block devices"
    assert drain_text(result(None, [])) == "-"
    assert drain_text(result(None, [], policy="xen41")) == "not waited for"


def test_list_faults_as_json():
    import json
    proc = rehearse("--list-faults", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc) == list(FAULTS)
    assert doc["xs-reset"]["when"] == {
        "unit": "N", "means": "how many more requests go through before "
        "the reset", "default": "0", "range": [0, 1000]}
    assert doc["hvm"]["when"] is None


def test_a_destroy_longer_than_the_run_deadline_still_completes():
    # The run's deadline grows with its destroy: a 1 TB guest at 0.6 s/GB
    # (614 s) under the default 300 s deadline, scaled down 300x.
    from fastmig_tools.rehearse.runner import AT_TARGET, run_once
    from fastmig_tools.rehearse.scenario import Scenario
    result = run_once(Scenario(policy="stock", memory_gb=1.0,
                               destroy_per_gb=2.0, run_timeout=1.0,
                               precopy_seconds=0.01, inflight=1,
                               drain_timeout=1.0, verdict_timeout=2.0))
    assert result.outcome == AT_TARGET, (result.error, result.target_error)
    assert result.blackout_ms > 2000
