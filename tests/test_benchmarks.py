"""The benchmark scripts run (tiny versions, as CI runs them) and print
their tables on the real xenstored."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(script, *args):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--quiet", *args],
        cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_bench_policies_tiny(real_xenstored):
    # A 300 ms slow write: wide margins both ways on a loaded machine
    # (patch2008/xen41 release within ~60 ms; stock destroys 0.6-1.2 s).
    out = _run("bench_policies.py", "--runs", "2", "--other-runs", "1",
               "--memory", "1G,2G", "--destroy-per-gb", "0.6",
               "--slow-write", "300", "--precopy", "10")
    assert "real xenstored" in out.splitlines()[0]
    rows = [line for line in out.splitlines()
            if re.match(r"^\d+ GB ", line)]
    assert [r.split()[0] for r in rows] == ["1", "2"]
    for row in rows:
        # stale blocks per policy: the slow write corrupts patch2008 and
        # xen41, never fastmig or (with the destroy outlasting it) stock.
        assert row.split()[-1] == "0/1/1/0", row
    assert re.search(r"fastmig blackout slope: -?\d+\.\d+ ms/GB", out)
    assert "stale blocks in fastmig runs: 0" in out


def test_bench_drain_tiny(real_xenstored):
    out = _run("bench_drain.py", "--runs", "2", "--devices", "1,2")
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["block", "devices"]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert set(rows) == {"1", "2"}
    for devices, row in rows.items():
        cells = [float(v) for v in re.findall(r"(-?\d+\.\d+) ms", row)]
        fast_median, _fw, poll_median, _pw, _after = cells
        # The polling wait sleeps 100 ms per backend still present.
        assert poll_median > fast_median
        assert poll_median >= 50 * int(devices)
