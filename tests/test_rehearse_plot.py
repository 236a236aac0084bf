"""--plot: the x axis is the swept knob, a policy keeps its colour, and a
single point is drawn as bars, not on an axis of one value."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fastmig_tools.rehearse.plot import COLOURS, plot_blackout, plot_series
from fastmig_tools.rehearse.scenario import POLICIES, Scenario

REPO = Path(__file__).resolve().parents[1]


def _run(blackout, clean=True):
    return SimpleNamespace(blackout_ms=blackout, disk_clean=clean)


def _points(knob, values, field):
    points = []
    for value in values:
        scenario = Scenario(**{field: value}) if field else Scenario()
        by_policy = {
            "stock": [_run(1000.0 + 10 * len(points))],
            "xen41": [_run(50.0, clean=False), _run(52.0, clean=False)],
            "fastmig": [_run(220.0), _run(224.0), _run(230.0)],
        }
        points.append(({knob: value} if knob else {}, scenario, by_policy))
    return points


def test_series_follow_the_swept_knob_not_memory():
    knob, series = plot_series(_points("devices", [4, 1], "devices"),
                               ["stock", "xen41", "fastmig"], ["devices"])
    assert knob == "devices"
    assert series[("fastmig", "")]["x"] == [1, 4]       # sorted by x
    assert series[("fastmig", "")]["median"] == [224.0, 224.0]
    assert series[("fastmig", "")]["low"] == [220.0, 220.0]
    assert series[("xen41", "")]["corrupt"] is True
    assert series[("stock", "")]["corrupt"] is False


def test_no_sweep_plots_against_memory():
    knob, series = plot_series(_points(None, [2.0], "memory_gb"),
                               ["fastmig"])
    assert knob == "memory"
    assert series[("fastmig", "")]["x"] == [2.0]


@pytest.fixture
def axes_calls(mocker):
    pytest.importorskip("matplotlib")
    import matplotlib.axes
    return {name: mocker.spy(matplotlib.axes.Axes, name)
            for name in ("set_title", "set_xlabel", "errorbar", "bar")}


def _last_text(spy):
    return spy.call_args[0][1]


def test_a_devices_sweep_says_so_in_title_and_axis(tmp_path, axes_calls):
    plot_blackout(_points("devices", [1, 4], "devices"), list(POLICIES),
                  str(tmp_path / "p.png"), knobs=["devices"])
    assert _last_text(axes_calls["set_title"]) == (
        "Blackout against block devices, per policy")
    assert _last_text(axes_calls["set_xlabel"]) == "block devices"
    assert "memory" not in _last_text(axes_calls["set_title"])
    assert (tmp_path / "p.png").stat().st_size > 0


def test_each_policy_has_one_colour_in_every_plot(tmp_path, axes_calls):
    # Two swept knobs: two lines per policy, both in the policy's colour.
    points = []
    for backend in ("classic", "shutdown-request"):
        for slow in (None, 300.0):
            scenario = Scenario(backend=backend, slow_write_ms=slow)
            points.append(({"backend": backend, "slow-write": slow},
                           scenario, {"stock": [_run(1000.0)],
                                      "fastmig": [_run(220.0)]}))
    plot_blackout(points, ["stock", "fastmig"], str(tmp_path / "a.png"),
                  knobs=["backend", "slow-write"])
    calls = axes_calls["errorbar"].call_args_list
    assert len(calls) == 4
    for call in calls:
        policy = call.kwargs["label"].split()[0]
        assert call.kwargs["color"] == COLOURS[policy]
    plot_blackout(_points(None, [2.0], "memory_gb"),
                  ["stock", "xen41", "fastmig"], str(tmp_path / "b.png"))
    for call in axes_calls["bar"].call_args_list:
        policy = call.kwargs["label"].split()[0]
        assert call.kwargs["color"] == COLOURS[policy]
    assert len(set(COLOURS.values())) == len(POLICIES)


def test_a_single_point_is_a_bar_per_policy_named_in_the_title(
        tmp_path, axes_calls):
    plot_blackout(_points(None, [2.0], "memory_gb"),
                  ["stock", "xen41", "fastmig"], str(tmp_path / "one.png"))
    # No line (Axes.bar draws its own error bars through errorbar).
    assert not [c for c in axes_calls["errorbar"].call_args_list
                if "marker" in c.kwargs]
    assert axes_calls["bar"].call_count == 3
    assert _last_text(axes_calls["set_title"]) == (
        "Blackout per policy at one point: memory 2 GB")
    assert _last_text(axes_calls["set_xlabel"]) == "policy"
    labels = [c.kwargs["label"] for c in axes_calls["bar"].call_args_list]
    assert labels == ["stock", "xen41 (disk CORRUPT)", "fastmig"]


def test_the_command_plots_a_devices_sweep(tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "devices.svg"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "fastmig_tools.cli", "rehearse",
         "--policies", "xen41,fastmig", "--memory", "256M", "--precopy",
         "10", "--destroy-per-gb", "0.4", "--inflight", "1", "--sweep",
         "devices=1,2", "--plot", str(target), "--quiet"],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "plot written to" in proc.stdout
    assert target.read_text().lstrip().startswith(("<?xml", "<svg"))
