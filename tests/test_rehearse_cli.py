"""The rehearsal's command line as a user meets it: --list-faults, what
--help says, bounds on every number, progress, and the table's drain
column.  Runs are tiny (a fraction of a GB, short live rounds)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastmig_tools.rehearse.faults import FAULTS, FaultError, parse_fault

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
    ("slow-write@9999999", "between 0 and 600000"),
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
