"""benchmarks/bench_xend.py runs (a tiny version) and prints its table."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.xend, pytest.mark.timeout(240)]


def test_bench_xend_tiny():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_xend.py"), "--quiet",
         "--trees", "3.1.0", "--sizes", "1,2", "--seconds-per-gb", "0.3",
         "--slow-write", "1.5"],
        cwd=str(REPO), capture_output=True, text=True, timeout=230,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    rows = [l.split() for l in out.splitlines() if re.match(r"^\s+\d+ GB ", l)]
    # stock->stock, then patched->stock (the series on the source).
    assert [r[0] for r in rows] == ["1", "2", "1", "2"]
    for r in rows:      # figures are printed, not judged (timings vary)
        float(r[2]), float(r[3])
    assert "(1 GB): clean" in out
    assert "1.50 s after the suspend (1 GB): CORRUPT" in out   # 3.1.0's vacuous wait
    assert "LOST (no copy runs)" in out
    assert "== 3.1.0, patched->stock" in out
    assert "resumed at the source" in out
