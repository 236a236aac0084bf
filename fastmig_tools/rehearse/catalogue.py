"""The rehearsal's named faults (``--fault NAME[@when]``): what each one
is, what its ``@WHEN`` means, and the scenario knobs it sets.

A fault changes one run: the scenario's knobs (backend kind, devices,
guest kind, a slow write), the target's restore (it fails at a step, hangs
up, resets, answers garbage or nothing), the source's xenstore (EAGAIN /
EACCES on reads, writes or commits, a reset of xend's connection) right
after the image is sent, or the source's handover itself (an exception
inside one of its steps; fastmig only, the other policies have no such
steps).  ``@WHEN`` is a number whose meaning each fault states: ``@MS``
how many milliseconds after the suspend a write lands, ``@N`` how many
xenstore requests fail (or go through before a reset); faults without one
refuse it.  ``describe_faults()`` is what ``--list-faults`` prints.

How a fault enters a run is ``injection``'s job; how a run is judged is
the one oracle's (``fastmig_tools.invariants``, docs/design.md,
"Invariants"): a spec only says what stock 3.1 would do under it and
which invariant the fault itself forbids (``excuses``, by ID).

What cannot be detected: a backend that removes its directory before it
has drained (``remove-before-drain``, a buggy kernel) looks drained to any
toolstack that only sees xenstore; that fault is marked ``undetectable``
and its violations are listed apart.
"""
from __future__ import annotations

import dataclasses
import errno

__all__ = ["FaultSpec", "FAULTS", "parse_fault", "apply_fault",
           "FaultError", "HANDOVER_SLACK", "describe_faults", "faults_json",
           "WHEN_HELP", "WHEN_LIMITS"]

# Scheduling noise allowed on top of a run's own deadlines (seconds).
HANDOVER_SLACK = 2.0

# What ``@WHEN`` means, per unit, for --help and --list-faults.
WHEN_HELP = {
    "MS": "milliseconds after the guest's suspend",
    "N": "a count of the source xend's xenstore requests",
}
# Bounds of @WHEN per unit: a write up to 5 minutes late (a run's own
# deadline; past the drain's 30 s and the verdict's 120 s), and up to
# 1000 requests (a whole handover makes well under 100).
WHEN_LIMITS = {"MS": (0.0, 300000.0), "N": (0, 1000)}


class FaultError(ValueError):
    """A fault name or ``@when`` that the rehearsal does not know."""


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    name: str
    help: str
    # Scenario knobs this fault sets (``when`` may set one more: see
    # ``when_knob``).
    knobs: tuple = ()
    when_knob: str | None = None
    when_default: float | None = None
    # "MS" or "N" (see WHEN_HELP) when the fault takes @WHEN, and what it
    # then means for this fault.
    when_unit: str | None = None
    when_help: str = ""
    # The target's restore: (step, action); see target.TargetHost.
    target: tuple | None = None
    # The source's xenstore after the image: (op, errno) or ("reset", 0).
    store: tuple | None = None
    # An exception inside this handover step (fastmig's code only).
    source: str | None = None
    # Something else happening on the source host during the run (see
    # injection.source_faults): ("guest-rewrites-backend", where),
    # ("second-migrate",), ("cleanup-before-release",).
    event: tuple | None = None
    # Knobs computed from the scenario (timings that must fall between the
    # run's own deadlines): ``derive(scenario)`` -> {knob: value}.
    derive: object = None
    # Does stock 3.1 lose the guest under this fault?
    stock_loses: bool = False
    # The fault itself forbids what an invariant asks (xend without
    # xenstore cannot clean up; a resume that raises cannot bring the
    # guest back): those invariants (fastmig_tools.invariants IDs) are not
    # held against the run.
    excuses: tuple = ()
    undetectable: bool = False
    embedded_only: bool = False
    # The write lands after the whole drain budget: every bounded wait
    # releases the target before it (stock 3.1 right after the destroy).
    # What is held against the run instead: it waited out the budget and
    # destroyed the source copy first (one budget: docs/design.md, step 5).
    beyond_budget: bool = False


def _f(name, help, **kw):
    return FaultSpec(name=name, help=help, **kw)


_FAULT_LIST = [
    _f("none", "no fault: the baseline"),
    _f("slow-write", "one more in-flight write, landing late",
       when_knob="slow_write_ms", when_default=600.0, when_unit="MS",
       when_help="when the write lands; the default is after the source "
       "copy's destruction"),
    _f("hung-backend", "block backends that never drain (hung storage)",
       knobs=(("backend", "hung"),)),
    _f("late-drain", "a write that lands after the drain timeout: after "
       "the whole drain budget",
       when_knob="slow_write_ms", when_unit="MS",
       when_help="when the write lands (default 1.5 x the drain timeout)",
       beyond_budget=True),
    _f("remove-before-drain", "a buggy kernel: the hotplug cleanup removes "
       "the backend directory before the drain",
       knobs=(("backend", "buggy"), ("slow_write_ms", 300.0)),
       undetectable=True),
    _f("shutdown-request", "backends speaking shutdown-request/-done",
       knobs=(("backend", "shutdown-request"), ("slow_write_ms", 300.0))),
    _f("xs-eagain-read", "reads of the source's xenstore fail with "
       "EAGAIN after the image is sent", store=("read", errno.EAGAIN),
       when_default=1, embedded_only=True, when_unit="N",
       when_help="how many reads fail"),
    _f("xs-eacces-read", "reads fail with EACCES after the image is sent",
       store=("read", errno.EACCES), when_default=1, embedded_only=True,
       when_unit="N", when_help="how many reads fail"),
    _f("xs-eagain-write", "writes fail with EAGAIN after the image is sent",
       store=("write", errno.EAGAIN), when_default=1, embedded_only=True,
       when_unit="N", when_help="how many writes fail"),
    _f("xs-eacces-write", "writes fail with EACCES after the image is sent",
       store=("write", errno.EACCES), when_default=1, embedded_only=True,
       when_unit="N", when_help="how many writes fail"),
    _f("xs-eagain-commit", "transaction commits conflict (EAGAIN) after "
       "the image is sent", store=("commit", errno.EAGAIN),
       when_default=3, embedded_only=True, when_unit="N",
       when_help="how many commits conflict"),
    _f("xs-eacces-commit", "transaction commits fail with EACCES after "
       "the image is sent", store=("commit", errno.EACCES),
       when_default=1, embedded_only=True, when_unit="N",
       when_help="how many commits fail"),
    _f("xs-reset", "xend's xenstore connection is reset after the image "
       "is sent", store=("reset", 0), when_default=0, embedded_only=True,
       excuses=("I7",), when_unit="N",
       when_help="how many more requests go through before the reset"),
    _f("target-stream", "the target fails while reading the stream "
       "(after the image, before EOF) and says (err ...)",
       target=("stream", "err"), stock_loses=True),
    _f("target-completeRestore", "the target's completeRestore fails",
       target=("completeRestore", "err"), stock_loses=True),
    _f("target-waitForDevices", "the target's waitForDevices fails",
       target=("waitForDevices", "err"), stock_loses=True),
    _f("target-unpause", "the target's unpause fails",
       target=("unpause", "err"), stock_loses=True),
    _f("target-dies", "the target process dies after its release, "
       "without a verdict", target=("completeRestore", "hangup"),
       stock_loses=True),
    _f("target-reset-before", "the target resets the connection before "
       "its release (while a slow write keeps the source draining)",
       knobs=(("slow_write_ms", 300.0),),
       target=("stream", "reset"), stock_loses=True),
    _f("target-reset-after", "the target runs, then resets the "
       "connection instead of answering", target=("verdict", "reset")),
    _f("target-garbage", "the target runs and answers garbage",
       target=("verdict", "garbage")),
    _f("target-oversized", "the target runs and answers 70 kB of '('",
       target=("verdict", "oversized")),
    _f("target-silent", "the target runs and never answers (the source "
       "times out reading the verdict)", target=("verdict", "silent")),
    _f("xc-save-fails", "xc_save fails in the last memory round, after "
       "the suspend (with the early release: after the block devices were "
       "released), while a slow write keeps them draining",
       knobs=(("xc_save_fails", True), ("slow_write_ms", 300.0))),
    _f("xc-save-fails-suspend-cancel", "xc_save fails in the last round; "
       "a SUSPEND_CANCEL guest, which stock resumes fast on its devices: "
       "once they were released it must be resumed on re-created ones",
       knobs=(("xc_save_fails", True), ("suspend_cancel", True),
              ("slow_write_ms", 300.0))),
    _f("xc-save-fails-hvm", "xc_save fails in the last round of an HVM "
       "guest: Xen 3.1 cannot resume it (non-cooperative), under stock "
       "too; it must be reported as suspended at the source",
       knobs=(("xc_save_fails", True), ("hvm", True),
              ("slow_write_ms", 300.0)), stock_loses=True,
       # The target's restore answers (err ...) to the source's reset;
       # no policy can bring an HVM guest back on 3.1 whatever it hears.
       excuses=("I2",)),
    _f("target-err-last-round", "the target's restore fails while the "
       "source still sends the last memory round, and it says (err ...)",
       knobs=(("last_round_seconds", 0.1), ("slow_write_ms", 300.0)),
       target=("last-round", "err"), when_default=20.0, when_unit="MS",
       when_help="when the target fails (the last round lasts 100 ms)",
       stock_loses=True),
    _f("target-reset-last-round", "the target resets the connection while "
       "the source still sends the last memory round",
       knobs=(("last_round_seconds", 0.1), ("slow_write_ms", 300.0)),
       target=("last-round", "reset"), when_default=20.0, when_unit="MS",
       when_help="when the target resets (the last round lasts 100 ms)",
       stock_loses=True),
    _f("source-capture", "an exception while capturing the block devices",
       source="capture"),
    _f("source-release", "an exception while releasing the devices",
       source="release"),
    _f("source-drain", "an exception inside the drain wait",
       source="drain"),
    _f("source-verdict", "an exception while reading the verdict",
       source="verdict",
       # The (ok) was sent but never read: the source must say UNKNOWN.
       excuses=("I9",)),
    _f("source-destroy", "destroying the source copy raises",
       source="destroy"),
    _f("source-resume", "resuming the source copy raises (with a target "
       "that fails at completeRestore)", source="resume",
       target=("completeRestore", "err"), stock_loses=True,
       excuses=("I2",)),
    _f("suspend-cancel", "a SUSPEND_CANCEL guest whose target fails at "
       "completeRestore", knobs=(("suspend_cancel", True),),
       target=("completeRestore", "err"), stock_loses=True),
    _f("hvm", "an HVM guest (its device model is stopped at the suspend)",
       knobs=(("hvm", True), ("slow_write_ms", 300.0))),
    _f("tap", "blktap (tap) disks instead of vbds",
       knobs=(("disk_class", "tap"), ("slow_write_ms", 300.0))),
    _f("no-devices", "a guest without block devices",
       knobs=(("devices", 0), ("slow_write_ms", None))),
    _f("16-devices", "a guest with 16 block devices",
       knobs=(("devices", 16), ("slow_write_ms", 300.0))),
]

def _split_timing(scenario) -> dict:
    """target-err-split's timeline: the target fails early in the last
    round and sends the first part once its copy is destroyed, before the
    image is out, so the source's first look sees it; the rest follows
    ``target.SPLIT_GAP`` (0.4 s) later, before the drain budget is spent;
    a write landing well after that budget makes the source give up its
    drain wait and look once more before the stock-order fallback's
    destroy: that look sees only the rest.  (The parts straddle the two
    looks when the drain timeout exceeds the destroy plus 0.5 s.)"""
    return {"last_round_seconds": scenario.destroy_seconds + 0.2,
            "slow_write_ms": 2000.0 * scenario.drain_timeout}


# Issue 11's defects 1, 3, 4, 6 and 7, each as a row of the matrix.
_FAULT_LIST += [
    _f("guest-rewrites-backend", "before the migration the guest points "
       "its frontends' backend keys at a bystander guest's disks (a second "
       "domain on the source with its own blkback): no other guest's "
       "devices may be touched", event=("guest-rewrites-backend",
                                        "bystander")),
    _f("guest-rewrites-backend-dom0", "before the migration the guest "
       "points its frontends' backend keys at /local/domain/0/backend, "
       "every guest's backends (a bystander guest runs on the source): no "
       "other guest's devices may be touched",
       event=("guest-rewrites-backend", "dom0")),
    _f("target-err-split", "the target fails in the last memory round and "
       "its (err ...) comes in two parts 0.4 s apart, the rest after the "
       "source's first look; a write landing after the drain budget sends "
       "the source down the stock-order fallback, whose look before the "
       "destroy sees only the rest",
       target=("last-round", "err-split"), derive=_split_timing,
       when_default=20.0, when_unit="MS",
       when_help="when the target fails (the last round lasts the "
       "target's destroy + 200 ms)", stock_loses=True),
    _f("target-err-quoted", "the target's completeRestore fails and its "
       "(err ...) is written as xend writes it: a repr() string (single "
       "quotes) holding an unbalanced '(' and a lone '\"'",
       target=("completeRestore", "err-quoted"), stock_loses=True),
    _f("second-migrate", "a second xm migrate of the same domain, started "
       "at the guest's suspend while the first one runs: it must be "
       "refused and must not resume the domain",
       event=("second-migrate",)),
    _f("backend-gone-before-release", "an xm block-detach of one of the "
       "guest's disks completes between the handover's capture and its "
       "release: the backend drains and udev's hotplug cleanup removes its "
       "directory; the release must not re-create it (at fastmig's "
       "release, or at the 2008 patch's first write to a backend; stock "
       "and Xen 4.1 write none before their destroy: as under none)",
       event=("cleanup-before-release",)),
]

FAULTS = {spec.name: spec for spec in _FAULT_LIST}


def parse_fault(text: str) -> tuple[str, float | None]:
    """``"xs-eagain-read@3"`` → ("xs-eagain-read", 3.0); FaultError if
    the name is unknown or its @WHEN is not one it takes."""
    name, sep, when = str(text).partition("@")
    name = name.strip()
    if name not in FAULTS:
        raise FaultError("unknown fault %r (one of: %s; --list-faults "
                         "describes them)" % (name, ", ".join(FAULTS)))
    spec = FAULTS[name]
    value = None
    if sep:
        if spec.when_unit is None:
            raise FaultError("--fault %s takes no @WHEN (--list-faults "
                             "shows which faults do)" % name)
        low, high = WHEN_LIMITS[spec.when_unit]
        if spec.store is not None and spec.store[0] != "reset":
            low = 1             # a fault that fails no request is "none"
        try:
            value = float(when)
        except ValueError:
            raise FaultError("--fault %s@%s: %r is not a number (@%s: %s)"
                             % (name, when, when, spec.when_unit,
                                WHEN_HELP[spec.when_unit])) from None
        if spec.when_unit == "N" and value != int(value):
            raise FaultError("--fault %s@%s: @N is a whole number"
                             % (name, when))
        if not low <= value <= high:
            raise FaultError("--fault %s@%s: @%s must be between %g and %g"
                             % (name, when, spec.when_unit, low, high))
    return name, value


def _default_text(spec) -> str:
    if spec.name == "late-drain":
        return "1.5 x --drain-timeout"
    if spec.when_default is None:
        return "-"
    if spec.when_unit == "MS":
        return "%g ms" % spec.when_default
    return "%g" % spec.when_default


def when_json(spec) -> dict | None:
    """A fault's @WHEN as plain data (None: it takes none)."""
    if spec.when_unit is None:
        return None
    return {"unit": spec.when_unit, "means": spec.when_help,
            "default": _default_text(spec),
            "range": list(WHEN_LIMITS[spec.when_unit])}


def faults_json() -> dict:
    """Every fault as plain data (``--list-faults --json``)."""
    return {name: {"help": spec.help, "when": when_json(spec),
                   "undetectable": spec.undetectable,
                   "embedded_only": spec.embedded_only,
                   "stock_loses": spec.stock_loses}
            for name, spec in FAULTS.items()}


def describe_faults() -> str:
    """Every fault, what its @WHEN means and its default (--list-faults)."""
    rows = [("fault", "@WHEN", "default", "what")]
    for spec in FAULTS.values():
        what = spec.help
        if spec.undetectable:
            what += " [undetectable]"
        if spec.embedded_only:
            what += " [embedded xenstore only]"
        if spec.when_unit is not None:
            rows.append((spec.name, "@" + spec.when_unit,
                         _default_text(spec), what))
            rows.append(("", "", "", "@%s: %s" % (spec.when_unit,
                                                   spec.when_help)))
        else:
            rows.append((spec.name, "-", "-", what))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 3 else cell
                       for i, cell in enumerate(row)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ----")
    lines.append("")
    lines.append("@WHEN units: " + "; ".join(
        "@%s = %s" % (unit, text) for unit, text in WHEN_HELP.items()))
    lines.append("Example: --fault xs-eagain-read@3, --fault slow-write@2500")
    return "\n".join(lines)


def apply_fault(scenario, name: str | None, when: float | None = None):
    """The scenario with ``name``'s knobs set (and ``fault``/``fault_when``
    recorded); FaultError when the fault cannot run with this scenario."""
    if not name or name == "none":
        return scenario.replace(fault=None, fault_when=None)
    spec = FAULTS[name]
    if spec.embedded_only and scenario.xenstored != "embedded":
        raise FaultError("fault %s needs the embedded xenstore" % name)
    changes = dict(spec.knobs)
    if when is None:
        when = spec.when_default
    if name == "late-drain" and when is None:
        when = scenario.drain_timeout * 1500.0
    if spec.when_knob is not None:
        changes[spec.when_knob] = when
    if spec.derive is not None:
        changes.update(spec.derive(scenario))
    changes["fault"] = name
    changes["fault_when"] = when
    return scenario.replace(**changes)
