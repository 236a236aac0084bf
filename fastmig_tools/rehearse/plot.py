"""``--plot FILE``: blackout against memory, one line per policy."""
from __future__ import annotations

import importlib.util
import os

__all__ = ["check_plot_target", "plot_blackout", "PlotUnavailable"]

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


def plot_blackout(points, policies, path: str, title: str = "") -> None:
    """Median blackout (min..max as error bars) against memory; a policy
    with a corrupt run anywhere is drawn dashed and labelled so."""
    check_plot_target(path)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    corrupt = set()
    for changes, scenario, by_policy in points:
        others = ", ".join("%s=%s" % (k, v) for k, v in changes.items()
                           if k != "memory")
        for policy in policies:
            values = sorted(r.blackout_ms for r in by_policy.get(policy, [])
                            if r.blackout_ms is not None)
            if not values:
                continue
            label = policy if not others else "%s (%s)" % (policy, others)
            median = values[len(values) // 2] if len(values) % 2 else (
                values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
            series.setdefault(label, []).append(
                (scenario.memory_gb, median, values[0], values[-1]))
            if any(not r.disk_clean for r in by_policy.get(policy, [])):
                corrupt.add(label)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rows in series.items():
        rows.sort()
        xs = [r[0] for r in rows]
        ys = [r[1] for r in rows]
        low = [r[1] - r[2] for r in rows]
        high = [r[3] - r[1] for r in rows]
        # A fast policy that left stale blocks is drawn dashed and says so.
        bad = label in corrupt
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3,
                    linestyle="--" if bad else "-",
                    mfc="none" if bad else None,
                    label=label + (" (disk CORRUPT)" if bad else ""))
    ax.set_xlabel("guest memory (GB)")
    ax.set_ylabel("blackout (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(title or "Blackout against memory, per policy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
