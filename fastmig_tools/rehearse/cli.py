"""``xend-fastmig rehearse``: the two-host migration rehearsal.

``add_parser(subparsers)`` mounts the subcommand; ``run(args)`` runs it and
returns the exit status: 0 when every run went as expected of its policy
(whatever it found), 2 for bad arguments or an environment that cannot
run it, 130 on Ctrl-C (after cleaning up).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap

from fastmig_tools.rehearse.plot import (
    PlotUnavailable, check_plot_target, plot_blackout)
from fastmig_tools.rehearse.report import format_point, json_document
from fastmig_tools.rehearse.scenario import (
    BACKENDS, DEFAULT_POLICIES, LIMITS, MAX_DESTROY_SECONDS,
    MEMORY_LIMITS_GB, POLICIES, TEARDOWN_MS,
    XENSTOREDS, Scenario, ScenarioError, format_size, parse_count,
    parse_memory, parse_milliseconds, parse_number)
from fastmig_tools.rehearse.catalogue import (
    FAULTS, WHEN_HELP, FaultError, apply_fault, describe_faults, faults_json,
    parse_fault)
from fastmig_tools.rehearse.stores import StoreUnavailable
from fastmig_tools.rehearse.sweep import (
    SWEEPABLE, Progress, parse_sweep, run_matrix)

__all__ = ["add_parser", "run", "main", "build_scenario", "DEFAULT_SLOW_WRITE_MS"]

# The default run includes one write to slow storage, so that the table
# shows what each policy does with a request that outlasts the image; the
# 2008 patch was measured against requests finishing 50-300 ms after the
# suspend.  --slow-write 0 turns it off.
DEFAULT_SLOW_WRITE_MS = 200.0

DESCRIPTION = """\
Migrate one modelled Xen 3.1 guest between two modelled hosts on this
machine (own xenstore, xend model and relocation listener on 127.0.0.1
each, a real TCP connection between them, a real disk image both write
to) under each policy, and report what happened.

Columns: blackout = guest suspended at the source -> running again
(unpaused at the target, or resumed at the source); gate = image sent ->
target released (its EOF gate opened); after write = target released
minus the last in-flight write landing (negative: released while the
source still had guest writes outstanding); xs ops = xenstore requests of
the source's xend after the image was sent; drain confirmed = how the
source learnt that each block backend drained (backend-gone: its
directory removed by the hotplug cleanup; shutdown-done; "stock order"
after a fallback; the other policies wait for no confirmation); disk =
every block holds the guest's newest data, or CORRUPT; guest = running at
the target / resumed at the source / lost / running twice.  --verbose
adds the core's log (fastmig's one-line handover summary).

Fixed costs (stated, not measured): live memory rounds --precopy (1 s,
outside the blackout), stop-and-copy --last-round 30 ms, target
completeRestore + waitForDevices 20 ms, a classic backend's hotplug
cleanup after its drain --teardown 30 ms (Xen 3.1's script took 29-39 ms
here).  Destroying a domain costs --destroy-per-gb (0.6 s/GB,
measured on later Xen: xen-devel 2014-12 msg00649) times its memory.
In-flight request delays: lognormal, median 5 ms, sigma 0.8, capped 50 ms.
"""

DESCRIPTION += "\n" + textwrap.fill(
    "Faults: --fault NAME[@WHEN] injects one named fault; WHEN is a number "
    "whose meaning each fault states: @MS = %s (e.g. slow-write@2500), "
    "@N = %s (e.g. xs-eagain-read@3).  Faults without a WHEN refuse one.  "
    "--list-faults prints every fault, what its @WHEN means and its "
    "default.  --matrix runs every fault against every policy and checks "
    "the invariants of docs/design.md (\"Invariants\")."
    % (WHEN_HELP["MS"], WHEN_HELP["N"]), width=72) + "\n"

EPILOG = """\
examples:
  xend-fastmig rehearse
  xend-fastmig rehearse --policies stock,fastmig --slow-write 2500
  xend-fastmig rehearse --policies fastmig,fastmig-late --last-round 300 --json
  xend-fastmig rehearse --target-fails-after-image
  xend-fastmig rehearse --sweep memory=1G,2G,4G,8G --runs 3 --plot blackout.png
  xend-fastmig rehearse --xenstored real --json > result.json
  xend-fastmig rehearse --list-faults
  xend-fastmig rehearse --fault target-completeRestore --policies stock,fastmig
  xend-fastmig rehearse --fault slow-write@2500
  xend-fastmig rehearse --matrix            (every fault x every policy)
  xend-fastmig rehearse --matrix --faults slow-write,hung-backend --json
  xend-fastmig rehearse --xend ../shared/xen/3.1.0 --sweep memory=1G,4G --slow-write 1000
  xend-fastmig rehearse --xend ../shared/xen/3.1.0 --matrix
"""


def _fault(text: str):
    try:
        return parse_fault(text)
    except FaultError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _faults(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no fault named")
    for name in names:
        if name not in FAULTS:
            raise argparse.ArgumentTypeError(
                "unknown fault %r (one of: %s)" % (name, ", ".join(FAULTS)))
    return names


def _xend_faults(text: str) -> list[str]:
    """--faults: the model's names, or (checked later) the harness's."""
    from fastmig_tools.rehearse.xendrun import XEND_FAULTS
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names and all(n in XEND_FAULTS for n in names):
        return names
    return _faults(text)


def _policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no policy named")
    for name in names:
        if name not in POLICIES:
            raise argparse.ArgumentTypeError(
                "unknown policy %r (choose from %s)"
                % (name, ", ".join(POLICIES)))
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a policy is named twice")
    return names


def _typed(parser):
    def convert(text):
        try:
            return parser(text)
        except (ScenarioError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc))
    return convert


def _count(knob):
    return _typed(lambda text: parse_count(text, *LIMITS[knob]))


def _number(knob):
    return _typed(lambda text: parse_number(text, *LIMITS[knob]))


def _milliseconds(knob):
    return _typed(lambda text: parse_milliseconds(text, *LIMITS[knob]))


def _seconds(knob):
    return _typed(lambda text: parse_milliseconds(text, *LIMITS[knob])
                  / 1000.0)


def _span(knob, unit=""):
    low, high = LIMITS[knob]
    if unit == "ms":
        return "%s..%s" % (_duration(low), _duration(high))
    return "%g..%g%s" % (low, high, unit)


def _duration(ms):
    return "%gs" % (ms / 1000.0) if ms >= 1000 else "%gms" % ms


def _configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    low_gb, high_gb = MEMORY_LIMITS_GB
    add("--policies", type=_policies, default=list(DEFAULT_POLICIES),
        metavar="A,B", help="policies to run, in this order (default: "
        "%s; also fastmig-late: fastmig with the block devices released "
        "only after the image, (xend-fast-migration-early-release no))"
        % ",".join(DEFAULT_POLICIES))
    add("--memory", type=_typed(parse_memory), default=2.0,
        metavar="SIZE", help="guest memory, e.g. 512M, 2G (default 2G; "
        "%s..%s: no PV guest boots with less, and 1 TB is the largest "
        "guest whose destroy time was measured)"
        % (format_size(low_gb), format_size(high_gb)))
    add("--destroy-per-gb", type=_number("destroy_per_gb"), default=0.6,
        metavar="S", help="seconds xc.domain_destroy takes per GB "
        "(default 0.6, as measured; %s, and one destroy at most %.0f min)"
        % (_span("destroy_per_gb"), MAX_DESTROY_SECONDS / 60))
    add("--devices", type=_count("devices"), default=2, metavar="N",
        help="block devices (default 2; %s: xvda..xvdp; a guest without "
        "disks: --fault no-devices)" % _span("devices"))
    add("--inflight", type=_count("inflight"), default=4, metavar="K",
        help="requests in flight per device at the suspend (default 4; "
        "%s: a 3.1 blkif ring holds 32)" % _span("inflight"))
    add("--slow-write", type=_milliseconds("slow_write_ms"),
        default=DEFAULT_SLOW_WRITE_MS, metavar="MS",
        help="add one in-flight write completing MS after the suspend "
        "(default %g; 0 for none; up to %s, a run's own deadline)"
        % (DEFAULT_SLOW_WRITE_MS,
           _duration(LIMITS["slow_write_ms"][1])))
    add("--backend", choices=BACKENDS, default="classic",
        help="block backend model (default classic 3.1 blkback)")
    add("--xenstored", choices=XENSTOREDS, default="embedded",
        help="embedded (default: in process, with Xen 3.1's xenstored "
        "semantics, as on the 3.1 hosts rehearsed) or real (two Xen 4.17 "
        "xenstored daemons, with 4.17's per-node transaction conflicts; "
        "scripts/install-xenstored installs them)")
    add("--target-fails-after-image", action="store_true",
        help="the target's restore fails after the whole image was read")
    add("--runs", type=_count("runs"), default=1, metavar="N",
        help="runs per policy and point (default 1; %s: more is "
        "benchmarks/bench_policies.py's job)" % _span("runs"))
    add("--sweep", action="append", default=[], metavar="KNOB=V1,V2",
        help="repeat over values of a knob (%s; same bounds as the "
        "option); may be given more than once" % ", ".join(sorted(SWEEPABLE)))
    add("--precopy", type=_seconds("precopy_ms"), default=1.0,
        metavar="MS", help="time of the live memory rounds (default 1s; "
        "%s; outside every blackout)" % _span("precopy_ms", "ms"))
    add("--drain-timeout", type=_seconds("drain_timeout_ms"),
        default=30.0, metavar="MS", help="fastmig's drain deadline "
        "(default 30s; %s)" % _span("drain_timeout_ms", "ms"))
    add("--teardown", type=_milliseconds("teardown_ms"),
        default=TEARDOWN_MS, metavar="MS", help="from a classic block "
        "backend's drain to udev's hotplug cleanup removing its directory "
        "(default %g: Xen 3.1's xen-hotplug-cleanup took 29-39 ms per run "
        "against a real xenstored here; %s)"
        % (TEARDOWN_MS, _span("teardown_ms", "ms")))
    add("--last-round", type=_seconds("last_round_ms"), default=0.030,
        metavar="MS", help="the stop-and-copy round after the suspend "
        "(default 30ms; %s; inside every blackout)"
        % _span("last_round_ms", "ms"))
    add("--seed", type=int, default=1, help="seed of the request delays")
    add("--json", action="store_true", help="print one JSON document "
        "(no progress unless --progress)")
    add("--plot", metavar="FILE", help="draw the blackout against the "
        "swept knob (memory without --sweep); .png or .svg; needs "
        "matplotlib: pip install 'xend-fastmig[plot]'")
    add("--quiet", action="store_true", help="no progress")
    add("--progress", action="store_true", help="a live progress line "
        "(ticking every second, with an ETA) even when stderr is not a "
        "terminal, and with --json")
    add("--verbose", action="store_true", help="show the core's log")
    add("--fault", type=_fault, metavar="NAME[@WHEN]",
        help="inject a named fault; WHEN: @MS (a time after the suspend) "
        "or @N (a count of xenstore requests), depending on the fault; "
        "--list-faults shows each: %s" % ", ".join(FAULTS))
    add("--list-faults", action="store_true",
        help="print every fault, what its @WHEN means and its default, "
        "and exit (with --json: as JSON)")
    add("--matrix", action="store_true",
        help="run every fault (or --faults) against every policy on a "
        "small fixed scenario and check the invariants of docs/design.md "
        "(\"Invariants\"); prints the runs and violations per cell "
        "(--runs per cell, --json)")
    add("--faults", type=_xend_faults, metavar="A,B",
        help="the faults --matrix runs (default: all)")
    # -- the tree's real xend instead of the models (rehearse/xendrun.py)
    add("--xend", metavar="PATH", help="run the hosts on the real xend of "
        "the Xen 3.1 tree at PATH (two-host harness, real xenstored; "
        "policies: stock = the tree, fastmig = + the series, patch2008 = + "
        "the 2008 patch as ported in patches/compare, xen41 = + Xen 4.1's "
        "order); --matrix then runs the harness's faults")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "rehearse", help="rehearse a live migration between two modelled "
        "Xen 3.1 hosts", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(parser)
    parser.set_defaults(func=run)
    return parser


def build_scenario(args) -> Scenario:
    scenario = Scenario(
        memory_gb=args.memory, destroy_per_gb=args.destroy_per_gb,
        devices=args.devices, inflight=args.inflight,
        slow_write_ms=args.slow_write or None, backend=args.backend,
        xenstored=args.xenstored,
        target_fails_after_image=args.target_fails_after_image,
        precopy_seconds=args.precopy, drain_timeout=args.drain_timeout,
        teardown_ms=args.teardown, last_round_seconds=args.last_round,
        seed=args.seed)
    scenario.validate()
    return scenario


def _progress(args, total: int) -> Progress:
    """Progress on stderr: off under --quiet, and under --json unless
    --progress asks for it; live (ticking) on a terminal or with
    --progress; off a terminal, a line per finished run when there are
    several."""
    live = True if args.progress else None
    enabled = not args.quiet and (args.progress or not args.json)
    progress = Progress(total, sys.stderr, enabled=enabled, live=live)
    if not progress.live and total < 2:
        progress.enabled = False
    return progress


def _fail(message: str) -> int:
    sys.stderr.write("xend-fastmig rehearse: error: %s\n" % message)
    return 2


def run_matrix_command(args) -> int:
    from fastmig_tools.rehearse.matrix import (
        MATRIX_BASE, format_matrix, matrix_json, run_fault_matrix)
    if args.sweep or args.plot or args.fault:
        return _fail("--matrix runs its own scenarios: no --sweep, --plot "
                     "or --fault with it (use --faults to choose faults)")
    faults = args.faults or list(FAULTS)
    total = args.runs * len(args.policies) * len(faults)
    progress = _progress(args, total)
    quiet = None
    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(name)s: %(message)s")
    else:
        # The faults make the core and the models log errors on purpose.
        quiet = logging.NullHandler()
        logging.getLogger().addHandler(quiet)
    try:
        cells = run_fault_matrix(faults, args.policies, args.runs,
                                 seed=args.seed, xenstored=args.xenstored,
                                 progress=progress)
    except StoreUnavailable as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("\nxend-fastmig rehearse: interrupted; hosts "
                         "stopped, temporary files removed\n")
        return 130
    finally:
        if quiet is not None:
            logging.getLogger().removeHandler(quiet)
    if args.json:
        knobs = dict(MATRIX_BASE, seed=args.seed, xenstored=args.xenstored)
        json.dump(matrix_json(cells, args.policies, args.runs, knobs),
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_matrix(cells, args.policies) + "\n")
    return 0


def run(args) -> int:
    if getattr(args, "xend", None):
        from fastmig_tools.rehearse.xendrun import run_xend_command
        return run_xend_command(args, _progress)
    if args.list_faults:
        if args.json:
            json.dump(faults_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(describe_faults() + "\n")
        return 0
    if args.matrix:
        return run_matrix_command(args)
    if args.faults:
        return _fail("--faults chooses the faults of --matrix; for one run "
                     "use --fault NAME[@WHEN]")
    try:
        base = build_scenario(args)
        if args.fault:
            base = apply_fault(base, *args.fault)
            base.validate()
        sweep = [parse_sweep(spec) for spec in args.sweep]
        names = [name for name, _ in sweep]
        if len(set(names)) != len(names):
            raise ScenarioError("a knob is swept twice")
        if args.plot:
            check_plot_target(args.plot)
    except (ScenarioError, PlotUnavailable, FaultError) as exc:
        return _fail(str(exc))
    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(name)s: %(message)s")
    total = args.runs * len(args.policies)
    for _name, values in sweep:
        total *= len(values)
    progress = _progress(args, total)
    try:
        points = run_matrix(base, args.policies, sweep, args.runs, progress)
    except ScenarioError as exc:
        return _fail(str(exc))
    except StoreUnavailable as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("\nxend-fastmig rehearse: interrupted; hosts "
                         "stopped, temporary files removed\n")
        return 130
    if args.json:
        json.dump(json_document(base, sweep, args.runs, points), sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
    else:
        tables = [format_point(scenario, by_policy, args.runs)
                  for _changes, scenario, by_policy in points]
        sys.stdout.write("\n\n".join(tables) + "\n")
    if args.plot:
        try:
            plot_blackout(points, args.policies, args.plot,
                          knobs=[name for name, _ in sweep])
        except PlotUnavailable as exc:
            return _fail(str(exc))
        if not args.json:
            sys.stdout.write("plot written to %s\n" % args.plot)
    return 0


def main(argv=None) -> int:
    """Run ``rehearse`` on its own (what ``python -m`` uses)."""
    parser = argparse.ArgumentParser(prog="xend-fastmig")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser(subparsers)
    args = parser.parse_args(["rehearse"] + list(
        sys.argv[1:] if argv is None else argv))
    return args.func(args)
