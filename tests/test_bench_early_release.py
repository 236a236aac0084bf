"""benchmarks/bench_early_release.py runs (a tiny version) and prints its
table; its predictions are what its docstring says."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_early_release.py"

pytestmark = pytest.mark.timeout(300)


def _module():
    spec = importlib.util.spec_from_file_location("bench_early_release",
                                                  SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("last_round,slowest,gain", [
    (300, 5, 30),      # the whole teardown fits in the round
    (30, 5, 25),       # the round ends 25 ms after the slowest request
    (10, 200, 0),      # the request outlasts the round: nothing to gain
])
def test_the_models_prediction(last_round, slowest, gain):
    assert _module().predicted_gain(last_round, slowest, 30) == gain


def test_tiny_run_prints_the_table():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quiet", "--runs", "2",
         "--last-rounds", "100", "--slowest", "5"],
        cwd=str(REPO), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("bench_early_release: model harness")
    assert lines[2].split()[:3] == ["last", "round", "slowest"]
    row = lines[4].split()
    assert row[:2] == ["100", "5"]
    # early, late, stock: blackout and blackout - limit, median/worst.
    early, early_over, late, _late_over, stock, _so = row[2:8]
    assert float(early.split("/")[0]) < float(late.split("/")[0]) < \
        float(stock.split("/")[0])
    assert re.match(r"^\+\d+\.\d/\+\d+\.\d$", early_over)
    assert row[-3:-1] == ["30", "35"]
    assert re.search(r"target met in \d of 1 cells", proc.stdout)
    assert "fastmig runs with stale blocks or invariant violations: 0" \
        in proc.stdout


@pytest.mark.xend
@pytest.mark.timeout(240)
def test_the_xend_harness_prints_the_same_table():
    """One cell, one run per policy on the real-xend harness
    (tests/xend/test_bench_early_release_xend.py checks the runs' fields)."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quiet", "--harness", "xend",
         "--runs", "1", "--last-rounds", "30", "--slowest", "5"],
        cwd=str(REPO), capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("bench_early_release: xend harness (3.1.0, ")
    assert "s of pre-copy" in lines[0]
    assert lines[2].split()[-5:] == ["teardown", "late-early", "model",
                                     "issue", "target"]
    row = lines[4].split()
    assert row[:2] == ["30", "5"]
    assert row[-1] in ("met", "MISSED")
    # The cell predicts from its own teardown: the model's gain is
    # clamp(30 - 5, 0, teardown), the min(30, 5 + teardown).
    teardown = float(row[-5])
    assert float(row[-3]) == pytest.approx(min(25.0, teardown), abs=0.5)
    assert float(row[-2]) == pytest.approx(min(30.0, 5 + teardown), abs=0.5)
    assert "fastmig runs with stale blocks or invariant violations: 0" \
        in proc.stdout
