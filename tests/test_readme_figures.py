"""README's figures come from benchmarks/readme_figures.py: its markers
are all there, --check passes on a fresh default rehearsal, and it has
teeth (a stale count, a wrong column, a timing far off all fail)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "readme_figures.py"


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("readme_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up while the class is made.
    sys.modules["readme_figures"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["readme_figures"]


@pytest.fixture(scope="module")
def sample(figures):
    return figures.read_sections((REPO / "README.md").read_text())["rehearse"]


def test_check_passes_on_a_fresh_default_rehearsal():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"],
                          cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agree with a fresh run (rehearse)" in proc.stdout


def test_readme_holds_every_section_once(figures):
    sections = figures.read_sections((REPO / "README.md").read_text())
    assert set(sections) == set(figures.SECTIONS)
    for name, body in sections.items():
        assert body.strip(), name


def _changed(sample, policy, old, new):
    lines = sample.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith(policy + " "):
            assert old in line, (old, line)
            lines[index] = line.replace(old, new, 1)
            return "\n".join(lines)
    raise AssertionError("no %s row" % policy)


def _cell(sample, policy, column, figures):
    _scene, _header, rows, _notes = figures._table(sample)
    return rows[policy][column]


def test_the_sample_agrees_with_itself(figures, sample):
    assert figures.check_rehearse(sample, sample) == []


def test_a_stale_xs_ops_count_is_caught(figures, sample):
    ops = _cell(sample, "fastmig", "xs ops", figures)
    stale = _changed(sample, "fastmig", "  %s  " % ops,
                     "  %d  " % (int(ops) + 8))
    problems = figures.check_rehearse(stale, sample)
    assert any("fastmig xs ops" in p for p in problems), problems
    near = _changed(sample, "fastmig", "  %s  " % ops,
                    "  %d  " % (int(ops) + 1))
    assert figures.check_rehearse(near, sample) == []


def test_a_wrong_disk_or_guest_cell_is_caught(figures, sample):
    wrong = _changed(sample, "xen41", "CORRUPT (1 stale)",
                     "clean            ")
    assert any("xen41 disk" in p
               for p in figures.check_rehearse(wrong, sample))


def test_timings_within_the_tolerance_pass_and_far_ones_fail(figures,
                                                              sample):
    blackout = _cell(sample, "fastmig", "blackout", figures)
    value = float(blackout.split()[0])
    near = _changed(sample, "fastmig", blackout, "%.1f ms" % (value * 1.2))
    assert figures.check_rehearse(near, sample) == []
    far = _changed(sample, "fastmig", blackout, "%.1f ms" % (value * 3))
    assert any("fastmig blackout" in p
               for p in figures.check_rehearse(far, sample))
    after = _cell(sample, "fastmig", "after write", figures)
    flipped = _changed(sample, "fastmig", after, after.replace("+", "-"))
    assert any("other side of the last write" in p
               for p in figures.check_rehearse(flipped, sample))


def test_a_missing_marker_is_an_error(figures, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text().replace(
        "<!-- /figures:matrix -->", ""))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check",
                           "--readme", str(readme)], cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "<!-- /figures:matrix -->" in proc.stderr


def test_fold_matrix_folds_three_identical_rows_or_more(figures):
    output = "\n".join([
        "cell: ...",
        "fault       stock       fastmig",
        "----------  ----------  ----------",
        "none        0/1 target  0/1 target",
        "a           0/1 target  0/1 target",
        "b           0/1 target  0/1 target",
        "c           1/1 LOST    0/1 source",
        "d           1/1 LOST    0/1 source",
        "----------  ----------  ----------",
        "violating runs / runs  2/5  0/5",
        "",
        "violations:",
        "  c  stock  1x lost",
        "",
        "stock: 5 runs, 2 with invariant violations",
        "fastmig: 5 runs, 0 with invariant violations",
    ])
    folded = figures.fold_matrix(output).splitlines()
    assert folded[2].split() == ["none", "..", "b", "(3", "rows)", "0/1",
                                 "target", "0/1", "target"]
    assert folded[3].startswith("c ") and folded[4].startswith("d ")
    assert "violations:" not in folded
    assert folded[-1] == "fastmig: 5 runs, 0 with invariant violations"
