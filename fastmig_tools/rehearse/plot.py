"""``--plot FILE``: the blackout against the swept knob (memory when
nothing is swept), one colour per policy.

With one value on the x axis there is no axis to speak of: the plot is
then a bar per policy, and its title names the one point.
"""
from __future__ import annotations

import importlib.util
import os

from fastmig_tools.rehearse.scenario import POLICIES

__all__ = ["check_plot_target", "plot_blackout", "PlotUnavailable",
           "plot_series", "AXES"]

FORMATS = (".png", ".svg")


class PlotUnavailable(Exception):
    """The plot cannot be drawn here; the message says what to do."""


def check_plot_target(path: str) -> None:
    """Fail early (before any run) on a bad file name or no matplotlib."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise PlotUnavailable("--plot %s: the file name must end in .png or "
                              ".svg" % path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PlotUnavailable("--plot %s: folder %s does not exist"
                              % (path, directory))
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except ValueError:          # sys.modules["matplotlib"] is None
        found = False
    if not found:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install 'xend-fastmig[plot]')")


# Sweepable knob → (axis label, how one value reads in a title).
AXES = {
    "memory": ("guest memory (GB)", lambda v: "memory %g GB" % v),
    "destroy-per-gb": ("destroy cost (s per GB)",
                       lambda v: "destroy %g s/GB" % v),
    "devices": ("block devices", lambda v: "%d block device(s)" % v),
    "inflight": ("requests in flight per device at the suspend",
                 lambda v: "%d in flight per device" % v),
    "slow-write": ("slow write (ms after the suspend; 0: none)",
                   lambda v: "slow write %g ms" % v),
    "backend": ("block backend", lambda v: "%s backend" % v),
    "delay-median": ("median request delay (ms)",
                     lambda v: "median delay %g ms" % v),
}
# Fixed per policy, so that a policy has the same colour in every plot.
COLOURS = dict(zip(POLICIES, ("tab:blue", "tab:red", "tab:orange",
                              "tab:green", "tab:olive")))


def _median(values):
    values = sorted(values)
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def _x_value(knob, changes, scenario):
    if knob in changes:
        value = changes[knob]
        return 0.0 if knob == "slow-write" and value is None else value
    return scenario.memory_gb


def plot_series(points, policies, knobs=()):
    """What the plot draws: ``(knob, series)`` where ``knob`` is the x
    axis (the first swept knob, else memory) and ``series`` maps
    ``(policy, others)`` (the other swept knobs' values, as text) to
    ``{"x": [...], "median": [...], "low": [...], "high": [...],
    "corrupt": bool}``, sorted by x."""
    knob = knobs[0] if knobs else "memory"
    series = {}
    for changes, scenario, by_policy in points:
        others = ", ".join("%s=%s" % (k, _show(v)) for k, v in changes.items()
                           if k != knob)
        for policy in policies:
            results = by_policy.get(policy, [])
            values = [r.blackout_ms for r in results
                      if r.blackout_ms is not None]
            if not values:
                continue
            entry = series.setdefault((policy, others), {
                "rows": [], "corrupt": False})
            entry["rows"].append((_x_value(knob, changes, scenario),
                                  _median(values), min(values), max(values)))
            if any(not r.disk_clean for r in results):
                entry["corrupt"] = True
    out = {}
    for key, entry in series.items():
        rows = entry["rows"]
        if knob != "backend":
            rows.sort(key=lambda row: row[0])
        out[key] = {"x": [r[0] for r in rows], "median": [r[1] for r in rows],
                    "low": [r[2] for r in rows], "high": [r[3] for r in rows],
                    "corrupt": entry["corrupt"]}
    return knob, out


def _show(value):
    if value is None:
        return "none"
    if isinstance(value, float):
        return "%g" % value
    return str(value)


def plot_blackout(points, policies, path: str, title: str = "",
                  knobs=()) -> None:
    """Median blackout (min..max as error bars) against ``knobs[0]`` (the
    first swept knob; memory when none); a policy with a corrupt run is
    drawn dashed (hatched as a bar) and labelled so."""
    check_plot_target(path)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    knob, series = plot_series(points, policies, knobs)
    label, one_value = AXES[knob]
    xs = []
    for entry in series.values():
        for x in entry["x"]:
            if x not in xs:
                xs.append(x)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(xs) == 1:
        _bars(ax, series, policies)
        ax.set_xlabel("policy")
        ax.set_title(title or "Blackout per policy at one point: %s"
                     % one_value(xs[0]))
    else:
        _lines(ax, series, knob, xs)
        ax.set_xlabel(label)
        ax.set_title(title or "Blackout against %s, per policy"
                     % label.split(" (")[0])
    ax.set_ylabel("blackout (ms, log scale)")
    ax.set_yscale("log")
    # Ticks at 1, 2 and 5 of every decade, written as plain numbers.
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(
        base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _pos: "%g" % v))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    if len(series) > 4:
        # Many lines: the legend beside the axes, never on a point.
        fig.set_size_inches(10, 4.5)
        ax.legend(fontsize="small", loc="upper left",
                  bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


_STYLES = ("o", "s", "^", "D", "v", "P", "X")


def _lines(ax, series, knob, xs):
    categorical = knob == "backend"
    marker_of = {}
    for (policy, others), entry in series.items():
        marker = marker_of.setdefault(others,
                                      _STYLES[len(marker_of) % len(_STYLES)])
        x = [xs.index(v) for v in entry["x"]] if categorical else entry["x"]
        bad = entry["corrupt"]
        name = policy if not others else "%s (%s)" % (policy, others)
        ax.errorbar(x, entry["median"],
                    yerr=[[m - lo for m, lo in zip(entry["median"],
                                                   entry["low"])],
                          [hi - m for m, hi in zip(entry["median"],
                                                   entry["high"])]],
                    marker=marker, capsize=3, color=COLOURS.get(policy),
                    linestyle="--" if bad else "-",
                    mfc="none" if bad else None,
                    label=name + (" (disk CORRUPT)" if bad else ""))
    if categorical:
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs)
        ax.set_xlim(-0.5, len(xs) - 0.5)
    else:
        ax.set_xticks(xs)
        ax.set_xticklabels([_show(x) for x in xs])


def _bars(ax, series, policies):
    entries = list(series.items())
    for index, ((policy, others), entry) in enumerate(entries):
        median = entry["median"][0]
        bad = entry["corrupt"]
        name = policy if not others else "%s (%s)" % (policy, others)
        ax.bar(index, median, color=COLOURS.get(policy),
               hatch="//" if bad else None,
               edgecolor="black" if bad else None,
               yerr=[[median - entry["low"][0]], [entry["high"][0] - median]],
               capsize=4, label=name + (" (disk CORRUPT)" if bad else ""))
        ax.annotate("%.0f ms" % median if median >= 10 else "%.1f ms" % median,
                    (index, median), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize="small")
    ax.set_xticks(range(len(entries)))
    ax.set_xticklabels([name for (name, _o), _e in entries])
