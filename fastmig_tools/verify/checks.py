"""verify's checks: each one migrates (or saves) a guest between two
harness hosts running the tree's real xend, stock or patched, and judges
the result.  ``plan()`` lists them in order; ``Check.run`` returns a
``CheckResult``; the figure rows they measured go to ``Figures``.

A check holds or not by what happened (where the guest runs, what the
disk holds, what xend raised, which hypervisor calls it made, whether the
target was released before or after the source's domain_destroy
returned), never by a time threshold: the timings are reported, and the
machine may be busy.
"""
from __future__ import annotations

import dataclasses
import re
import os
import shutil
import stat
import time
from pathlib import Path

from fastmig_tools import invariants
from fastmig_tools.patchtool import engine
from fastmig_tools.xendharness.observe import LOUD
from fastmig_tools.xendharness.observe import outcome_of as harness_outcome

__all__ = ["Setup", "Run", "CheckResult", "Figure", "plan", "run_count", "series_check",
           "copy_tree", "outcome_of", "run_migration"]

# An in-flight write that lands quickly (any real guest has some), and one
# to slow storage that outlasts the 1 GB guest's destroy (so a stock 3.1.0
# source, whose wait is vacuous, lets the target run before it lands).
SHORT_WRITE = 0.05
SLOW_WRITE = 1.0

AT_TARGET = LOUD[invariants.AT_TARGET]
AT_SOURCE = LOUD[invariants.RESUMED]
LOST = LOUD[invariants.LOST]
TWICE = LOUD[invariants.TWICE]


@dataclasses.dataclass
class Setup:
    tree: Path
    patched: list            # the series for the harness (tools/ only)
    without_package: list    # ... with the fastmig package's files left out
    seconds_per_gb: float
    sizes_gb: tuple
    workdir: Path
    note: object = None      # called with each run's title (progress)

    def patches(self, variant: str) -> list:
        return {"stock": [], "patched": self.patched,
                "no-package": self.without_package}[variant]


@dataclasses.dataclass
class Run:
    label: str
    memory_gb: float
    write: float | None
    error: str | None
    outcome: str
    disk: str
    gate: float | None
    blackout: float | None
    released_after_destroy: bool | None   # gate opened after the source's destroy
    source_calls: list
    events: list                           # the source backend's events
    source_log: str
    target_calls: list = dataclasses.field(default_factory=list)
    leftovers: dict = dataclasses.field(default_factory=dict)  # uuid as <uuid>

    def figure(self, variant: str) -> "Figure":
        return Figure(variant, self.label, self.memory_gb, self.write, self.gate,
                      self.blackout, self.disk, self.outcome)


@dataclasses.dataclass
class Figure:
    variant: str
    what: str
    memory_gb: float
    write: float | None
    gate: float | None
    blackout: float | None
    disk: str
    guest: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    figures: list = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail,
                "seconds": round(self.seconds, 2),
                "figures": [f.to_json() for f in self.figures]}


# -- the series on a scratch copy ------------------------------------------


def _anonymous(path, domids):
    """``path`` with the run's domids as ``<domid>``."""
    for domid in domids:
        path = re.sub(r"(?<=/)%s(?=/|$)" % re.escape(domid), "<domid>", path)
    return path

def copy_tree(tree: Path, dest: Path) -> Path:
    """A writable copy of what the series touches (tools/, docs/,
    xen/Makefile for the version); the tree itself is only read."""
    dest.mkdir(parents=True)
    for part in ("tools", "docs", "xen/Makefile"):
        src = tree / part
        if src.is_dir():
            shutil.copytree(src, dest / part, symlinks=True)
        elif src.is_file():
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / part)
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


def series_check(tree: Path, patches_dir: Path, python27: Path,
                 workdir: Path) -> CheckResult:
    start = time.time()
    scratch = copy_tree(Path(tree), Path(workdir) / "scratch-tree")
    try:
        outcome = engine.apply(scratch, patches_dir, python2=str(python27))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = [ln.replace(str(scratch), str(tree)) for ln in outcome.lines]
    compiled = [ln for ln in lines if ln.startswith("byte-compile:")
                and "compile with Python 2.7" in ln]
    if outcome.status == engine.EXIT_OK and compiled:
        applied = [ln for ln in lines if ln.startswith("dry run:")]
        detail = "%s; %s" % (applied[0].replace("dry run: ", "") if applied
                             else "applied",
                             compiled[0].replace("byte-compile: ", "").split(" (")[0])
        return CheckResult("series applies (fuzz 0) and compiles", True, detail,
                           time.time() - start)
    fails = [ln.strip().replace("FAILS: ", "") for ln in lines if "FAILS:" in ln]
    why = fails[:3]
    if len(fails) > 3:
        why.append("and %d more hunks" % (len(fails) - 3))
    why += [ln.strip() for ln in lines if "FAILED" in ln
            or (ln.startswith("    ") and "FAILS:" not in ln)
            or "SKIPPED" in ln]
    if outcome.status == engine.EXIT_OK:
        why.append("byte-compile on Python 2.7 did not run")
    elif outcome.status == engine.EXIT_APPLIED:
        why = ["the series is already applied to this tree; verify wants the "
               "tree you would patch (without it)"]
    elif not why:
        why = [ln for ln in lines if ln.startswith("refusing")] or lines[-1:]
    foreign = foreign_patch(Path(tree))
    if foreign:
        why.insert(0, foreign)
    elif fails:
        why.insert(0, "the series does not apply with fuzz 0")
    return CheckResult("series applies (fuzz 0) and compiles", False,
                       "; ".join(why), time.time() - start)


# Patches of the same code path a tree may already carry: the series is
# written against the stock code, so they must be reverted first.
_FOREIGN = (
    # (The series' own testDeviceComplete takes io_done too: the marker is
    # the 2008 patch's comment in save.)
    ("tools/python/xen/xend/XendCheckpoint.py", '"Use the Force, Luke"',
     "the tree carries the 2008 patch (xen-devel 2008-08-26: "
     "testDeviceComplete(io_done), _releaseDevices(force)); revert it first, "
     "the series replaces it"),
    ("tools/python/xen/xend/XendCheckpoint.py", "Xen 4.1's order (0f114a5181)",
     "the tree carries xend-fastmig's xen41-order comparison patch; revert it first"),
)


def foreign_patch(tree: Path) -> str:
    """Why the series cannot go onto this tree, if a known patch is there."""
    for rel, marker, why in _FOREIGN:
        path = tree / rel
        if path.is_file() and marker in path.read_text(errors="replace"):
            return why
    return ""


# -- one migration on the harness -------------------------------------------

def outcome_of(pair, result) -> str:
    return LOUD[harness_outcome(pair, result)]


def _pair(setup: Setup, source: str, target: str, **options):
    from fastmig_tools.xendharness.harness import TwoHosts
    return TwoHosts(str(setup.tree), patches=setup.patches(source),
                    target_patches=setup.patches(target),
                    destroy_seconds_per_gb=setup.seconds_per_gb, **options)


def run_migration(setup: Setup, label: str, *, source="patched", target="patched",
                  memory_gb: float = 1, write: float | None = SHORT_WRITE,
                  disks: int = 1, devclass: str = "vbd", hvm: bool = False,
                  backend: str = "classic", xend_config=None,
                  fault: str | None = None) -> Run:
    if setup.note is not None:
        setup.note("%s, %s -> %s%s" % (label, source, target,
                                      ", %g GB" % memory_gb if memory_gb != 1 else ""))
    pair = _pair(setup, source, target, backend=backend,
                 xend_config=xend_config)
    try:
        pair.start()
        guest = pair.create_guest(disks=disks, memory_mb=int(memory_gb * 1024),
                                  devclass=devclass, hvm=hvm)
        if write is not None and disks:
            pair.arm_inflight(guest, delay=write)
        if fault:
            getattr(pair, fault)()
        start = len(pair.source.call("xc_calls"))
        target_start = len(pair.target.call("xc_calls"))
        uuid = guest.uuid
        source_domid = guest.domid
        result = pair.migrate(guest, live=True, settle_timeout=30 + 2 * memory_gb
                              * setup.seconds_per_gb)
        t = result.timings
        after = None
        if t.gate_open is not None and t.source_destroyed is not None:
            after = t.gate_open >= t.source_destroyed
        outcome = outcome_of(pair, result)
        target_calls = (pair.hypervisor_calls(pair.target, since=target_start)
                        if pair.target.xend_alive else [])
        keep = {"target": [result.target_domid]} if result.target_domid else {}
        # Domids are drawn at random per pair: compared by shape.
        domids = [str(d) for d in (source_domid, result.target_domid) if d]
        left = {host: sorted(_anonymous(p.replace(uuid, "<uuid>"), domids)
                             for p in problems)
                for host, problems in pair.leftovers(keep_domids=keep).items()}
        return Run(label, memory_gb, write if disks else None, result.error,
                   outcome, pair.disk_verdict().summary(),
                   t.gate, t.blackout, after,
                   pair.hypervisor_calls(pair.source, since=start),
                   pair.source.backend_events(), pair.source.xend_log(),
                   target_calls, left)
    finally:
        pair.stop()


# -- the checks --------------------------------------------------------------

def _seconds(value) -> str:
    return "n/a" if value is None else "%.2f s" % value


def _migrated(run: Run, clean: bool = True) -> list:
    """What is wrong with a migration that should have worked ([] if nothing)."""
    problems = []
    if run.error:
        problems.append("xm migrate failed: %s" % run.error.splitlines()[0])
    if run.outcome != AT_TARGET:
        problems.append("guest %s" % run.outcome)
    if clean and run.disk != "clean":
        problems.append("disk %s" % run.disk)
    return problems


def _result(name: str, problems: list, good: str, start: float, figures=()):
    if problems:
        return CheckResult(name, False, "; ".join(problems), time.time() - start,
                           list(figures))
    return CheckResult(name, True, good, time.time() - start, list(figures))


def check_figures(setup: Setup) -> list:
    """Stock and patched at each memory size (short write), then both with
    a slow write at the smallest: the table, and the patched tree's fast
    handover (released before the source's destroy returned)."""
    out = []
    stock_runs = {}
    for gb in setup.sizes_gb:
        for variant in ("stock", "patched"):
            start = time.time()
            run = run_migration(setup, "migrate", source=variant, target=variant,
                                memory_gb=gb)
            name = "%s -> %s, %g GB" % (variant, variant, gb)
            if variant == "stock":
                stock_runs[gb] = run
                problems = [p for p in _migrated(run) if not p.startswith("disk")]
                good = "%s; gate %s (after the source's destroy)" % (
                    run.outcome, _seconds(run.gate))
                if run.released_after_destroy is False:
                    # Not the patched tree's problem, but then the stock
                    # column is not what stock 3.1 does.
                    problems.append("stock target released before the source's "
                                    "destroy returned: the harness is not "
                                    "measuring stock 3.1")
            else:
                problems = _migrated(run)
                if run.released_after_destroy is not False:
                    problems.append("target released only after the source's "
                                    "domain_destroy returned (the handover did "
                                    "not take effect; gate %s)" % _seconds(run.gate))
                good = "%s, disk clean; gate %s, before the source's destroy" % (
                    run.outcome, _seconds(run.gate))
            out.append(_result(name, problems, good, start, [run.figure(variant)]))
    gb = setup.sizes_gb[0]
    for variant in ("stock", "patched"):
        start = time.time()
        run = run_migration(setup, "slow write", source=variant, target=variant,
                            memory_gb=gb, write=SLOW_WRITE)
        name = "%s, write landing %.1f s after the suspend" % (variant, SLOW_WRITE)
        if variant == "stock":
            problems = [p for p in _migrated(run, clean=False)]
            good = "disk %s (stock's own behaviour, reported)" % run.disk
        else:
            problems = _migrated(run)
            good = "disk clean, gate %s" % _seconds(run.gate)
        out.append(_result(name, problems, good, start, [run.figure(variant)]))
    return out, stock_runs


def check_mixed(setup: Setup) -> list:
    out = []
    start = time.time()
    run = run_migration(setup, "patched -> stock", source="patched", target="stock",
                        write=SLOW_WRITE)
    out.append(_result("patched -> stock (slow write)", _migrated(run),
                       "%s, disk clean, gate %s" % (run.outcome, _seconds(run.gate)),
                       start))
    start = time.time()
    run = run_migration(setup, "stock -> patched", source="stock", target="patched")
    out.append(_result("stock -> patched", _migrated(run),
                       "%s, disk clean" % run.outcome, start))
    return out


def check_save_restore(setup: Setup) -> CheckResult:
    start = time.time()
    name = "save and restore (patched)"
    if setup.note is not None:
        setup.note("save and restore, patched")
    pair = _pair(setup, "patched", "patched")
    problems = []
    try:
        pair.start()
        guest = pair.create_guest(disks=1, memory_mb=512)
        pair.arm_inflight(guest, delay=SHORT_WRITE)
        image = os.path.join(pair.workdir, "guest.save")
        try:
            pair.save(guest, image)
        except Exception as exc:  # HostError: xend's exception
            return _result(name, ["xm save failed: %s" % str(exc).splitlines()[0]],
                           "", start)
        deadline = time.time() + 10
        while pair.domains(pair.source) and time.time() < deadline:
            time.sleep(0.02)
        if pair.domains(pair.source):
            problems.append("the saved domain is still there")
        if not os.path.getsize(image):
            problems.append("the image file is empty")
        # A save to a file is stock code, whose 3.1.0 wait for the block
        # backends is vacuous: restoring within the in-flight write's
        # 50 ms races it on 3.1.0 itself.  An administrator's restore
        # comes later: let the write land first.
        pair._wait_backends_idle()
        try:
            domid = pair.restore(image)
        except Exception as exc:
            return _result(name, problems + ["xm restore failed: %s"
                                             % str(exc).splitlines()[0]], "", start)
        if not pair.wait_running(pair.source, domid):
            problems.append("the restored guest does not run")
        pair._wait_backends_idle()
        verdict = pair.disk_verdict()
        if not verdict.clean:
            problems.append("disk %s" % verdict.summary())
    finally:
        pair.stop()
    return _result(name, problems, "saved, restored, running, disk clean", start)


def _as_stock(setup: Setup, name: str, run: Run, stock: Run) -> CheckResult:
    start = time.time()
    problems = _migrated(run, clean=False)
    if run.released_after_destroy is not True:
        problems.append("target released before the source's destroy returned "
                        "(not stock's order)")
    if run.source_calls != stock.source_calls:
        extra = [c for c in run.source_calls if c not in stock.source_calls]
        missing = [c for c in stock.source_calls if c not in run.source_calls]
        problems.append("hypervisor calls differ from stock's (%d vs %d; extra %s; "
                        "missing %s)" % (len(run.source_calls), len(stock.source_calls),
                                         extra[:2], missing[:2]))
    if run.target_calls != stock.target_calls:
        problems.append("the target's hypervisor calls differ from stock's "
                        "(%d vs %d)" % (len(run.target_calls), len(stock.target_calls)))
    if run.leftovers != stock.leftovers:
        problems.append("leaves %s where stock leaves %s" % (run.leftovers or "nothing",
                                                           stock.leftovers or "nothing"))
    if run.disk != stock.disk:
        problems.append("disk %s where stock's is %s" % (run.disk, stock.disk))
    good = ("same hypervisor calls as stock (%d at the source, %d at the target) "
            "and leftovers (%d), released after the destroy, gate %s (stock %s)"
            % (len(run.source_calls), len(run.target_calls),
               sum(len(v) for v in run.leftovers.values()), _seconds(run.gate),
               _seconds(stock.gate)))
    return _result(name, problems, good, start)


def check_as_stock(setup: Setup, stock: Run) -> list:
    out = []
    for name, variant, config in (
            ("option off behaves as stock", "patched", {"xend-fast-migration": "no"}),
            ("package deleted behaves as stock", "no-package", None)):
        start = time.time()
        run = run_migration(setup, name, source=variant, target=variant,
                            memory_gb=stock.memory_gb, xend_config=config)
        result = _as_stock(setup, name, run, stock)
        result.seconds = time.time() - start
        out.append(result)
    return out


def check_target_fails(setup: Setup) -> list:
    out = []
    start = time.time()
    run = run_migration(setup, "target fails", source="patched", target="patched",
                        fault="fail_unpause")
    problems = []
    if run.outcome != AT_SOURCE:
        problems.append("guest %s, not resumed at the source" % run.outcome)
    if not run.error:
        problems.append("xm migrate reported success")
    elif "resumed at the source" not in run.error:
        problems.append("xm migrate's error does not say the guest was resumed at "
                        "the source: %s" % run.error.splitlines()[0])
    first = (run.error or "").splitlines()[0] if run.error else ""
    out.append(_result("target fails after the image (patched source)", problems,
                       "%s; xm migrate raised: %s" % (run.outcome, first[-160:]),
                       start, [run.figure("patched")]))
    start = time.time()
    run = run_migration(setup, "target fails", source="stock", target="stock",
                        fault="fail_unpause")
    problems = []
    if run.outcome != LOST:
        problems.append("stock: guest %s (expected lost: the fault did not act as "
                        "it should, so the patched result above proves nothing)"
                        % run.outcome)
    out.append(_result("target fails after the image (stock source, control)",
                       problems, "guest lost, xm migrate reported %s" % (
                           "success" if not run.error else "an error"),
                       start, [run.figure("stock")]))
    return out


def check_devices(setup: Setup) -> list:
    out = []
    start = time.time()
    run = run_migration(setup, "HVM", hvm=True, write=SHORT_WRITE)
    out.append(_result("HVM guest (patched)", _migrated(run),
                       "%s, disk clean, blackout %s" % (run.outcome,
                                                        _seconds(run.blackout)),
                       start))
    start = time.time()
    run = run_migration(setup, "tap", disks=2, devclass="tap", write=SLOW_WRITE)
    out.append(_result("tap devices, slow write (patched)", _migrated(run),
                       "%s, disk clean" % run.outcome, start))
    start = time.time()
    run = run_migration(setup, "shutdown-request", backend="shutdown-request",
                        write=SLOW_WRITE)
    problems = _migrated(run)
    done = sum(1 for e in run.events if e.get("event") == "shutdown-done")
    out.append(_result("shutdown-request backend, slow write (patched)", problems,
                       "%s, disk clean, %d shutdown-done" % (run.outcome, done),
                       start))
    return out


def run_count(sizes_gb) -> int:
    """How many harness runs ``plan`` makes (for the progress line)."""
    return 2 * len(sizes_gb) + 2 + 2 + 1 + 2 + 2 + 3


def plan(setup: Setup):
    """The checks after the series one, as (title, callable returning a
    list of CheckResult); the stock figures feed the as-stock checks."""
    state = {}

    def figures():
        results, stock = check_figures(setup)
        state["stock"] = stock[setup.sizes_gb[0]]
        return results

    return [
        ("stock and patched at %s GB" % " and ".join("%g" % g for g in setup.sizes_gb),
         figures, 2 * len(setup.sizes_gb) + 2),
        ("patched -> stock, stock -> patched", lambda: check_mixed(setup), 2),
        ("save and restore", lambda: [check_save_restore(setup)], 1),
        ("option off, package deleted", lambda: check_as_stock(setup, state["stock"]), 2),
        ("target failing after the image", lambda: check_target_fails(setup), 2),
        ("HVM, tap, shutdown-request backend", lambda: check_devices(setup), 3),
    ]
