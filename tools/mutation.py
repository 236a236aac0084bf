"""Mutation testing of the handover's decision code, bounded to minutes.

    python3 tools/mutation.py [--modules handover,verdict,...] [--jobs 2]
                              [--property-runs 3] [--no-properties]
                              [--minutes 20]

For each module it runs mutmut (2.x, installed at run time into a cached
virtualenv, never committed) in a scratch copy of the working tree, with a
fast test selection: the unit tests that exercise the module, first, then
the property tests at a small number of examples.  It prints each module's
mutants killed, timed out, suspicious (killed, but slowly) and survived,
the mutation score (all but the survivors, over all mutants), and the diff
of every survivor.  ``--minutes`` bounds each module's run (mutants left
untested are counted apart, never as killed).
Exit status: 0 when every mutant was tested and killed, 2 when some
survived, 3 when none survived but some were left untested, 1 on a failure.
Known equivalent mutants: docs/mutation.md.

A survivor is either killed by a new test or listed in docs/mutation.md as
equivalent (and why); the lead reruns this after each restructure.
``--keep`` leaves each module's scratch copy (with mutmut's cache) in place,
so that a survivor can be looked at with ``mutmut apply ID`` there;
``--reuse DIR`` keeps them in DIR and starts from them the next time, when
only what was not killed yet is tested again (tests only get added).
"""

import argparse
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTMUT = "mutmut==2.5.1"
VENV = os.path.join(os.path.expanduser("~"), ".cache", "xend-fastmig",
                    "mutmut-venv")

# The unit tests that exercise each module, most telling first: mutmut
# stops at the first failure, so a killed mutant costs little.
UNIT_TESTS = {
    "handover": ["test_handover_logs", "test_handover_safety",
                 "test_handover"],
    "drain": ["test_drain", "test_handover", "test_handover_safety"],
    "verdict": ["test_verdict", "test_sxp_parse", "test_handover_safety",
                "test_handover"],
    "sxp_parse": ["test_sxp_parse", "test_verdict"],
    "release": ["test_release", "test_handover", "test_handover_safety"],
    "blockdevs": ["test_blockdevs", "test_drain", "test_release",
                  "test_handover"],
    "options": ["test_options"],
    "clock": ["test_clock", "test_drain", "test_verdict"],
}
# Whose behaviour the property harness checks as a whole.
WITH_PROPERTIES = ("handover", "drain", "verdict", "release", "blockdevs")
DEFAULT_MODULES = ["verdict", "sxp_parse", "drain", "options", "clock",
                   "handover", "release", "blockdevs"]
STATUSES = ("killed", "timeout", "suspicious", "survived", "skipped")


def ensure_mutmut():
    mutmut = os.path.join(VENV, "bin", "mutmut")
    if not os.path.exists(mutmut):
        print("mutation: installing %s into %s" % (MUTMUT, VENV), flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q",
                        "--disable-pip-version-check", MUTMUT], check=True)
    return mutmut


def scratch_copy(where):
    """The working tree as it is (tracked and new files) in ``where``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"], cwd=REPO, check=True,
        capture_output=True).stdout.split(b"\0")
    for name in listed:
        if not name:
            continue
        source = os.path.join(REPO, name.decode())
        if not os.path.isfile(source):
            continue
        target = os.path.join(where, name.decode())
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)


def missing_tests():
    """Test files named in UNIT_TESTS that do not exist: pytest would stop
    with a usage error, which mutmut 2.5.1 counts as a survivor (it only
    takes exit status 1 for a kill) -- or, in the baseline, as a pass."""
    return sorted(set("tests/unit/%s.py" % name
                      for names in UNIT_TESTS.values() for name in names
                      if not os.path.isfile(os.path.join(
                          REPO, "tests", "unit", name + ".py"))))


def write_runner(where, module, property_runs, seconds):
    """The test command of ``module`` as a script in the scratch copy
    (mutmut runs its runner without a shell); returns mutmut's runner.

    mutmut 2.5.1 counts exit status 1 as a kill and anything else as a
    survivor, so the script turns every failure (a test failing, an import
    error from a mutant pytest reports as status 2, a timeout) into 1.
    The tests' output goes to a file, not to mutmut's pty: a process left
    behind holding the pty kept mutmut reading it, idle, for ever.
    mutmut's own timeout (10 times its baseline) SIGKILLs this script
    alone: the parent-death signal then ends timeout(1), and so pytest.
    ``seconds``, above mutmut's timeout, is a backstop only: a hang is
    then reported by mutmut as a timeout, apart from the kills."""
    units = " ".join("tests/unit/%s.py" % name
                     for name in UNIT_TESTS[module])
    guard = "setpriv --pdeathsig TERM timeout -k 5 %d" % seconds
    quiet = ">>.mutation-tests.log 2>&1 </dev/null || exit 1"
    lines = [": >.mutation-tests.log",
             "%s %s -m pytest -x -q -p no:cacheprovider --timeout=20 %s %s"
             % (guard, sys.executable, units, quiet)]
    if property_runs and module in WITH_PROPERTIES:
        # The "mutation" profile: the same examples for every mutant (a
        # random draw made kills vary from run to run), never shrunk.
        lines.append("HYPOTHESIS_PROFILE=mutation FASTMIG_PROPERTY_RUNS=%d "
                     "%s %s -m pytest -x -q "
                     "-p no:cacheprovider --timeout=300 tests/properties %s"
                     % (property_runs, guard, sys.executable, quiet))
    lines.append("exit 0")
    path = os.path.join(where, ".mutation-runner.sh")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
    return "bash .mutation-runner.sh"


def baseline_seconds(where, module, property_runs):
    """How long the unmutated tests take here, or None if they fail."""
    write_runner(where, module, property_runs, 600)
    started = time.time()
    status = subprocess.run(["bash", ".mutation-runner.sh"], cwd=where).returncode
    if status != 0:
        return None
    return time.time() - started


def untested(work):
    import sqlite3
    try:
        db = sqlite3.connect(os.path.join(work, ".mutmut-cache"))
        try:
            return db.execute("select count(*) from Mutant where status = "
                              "'untested'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


# mutmut 2.5.1's main process was seen to die of its own cache (a mutated
# line recorded as the original: "Attribute Mutant.line is required") and
# then hang, idle, on its worker's queue.  Its cache keeps what was tested,
# so it is started again, a few times, on what is left.
MAX_RESTARTS = 5


def stop(process):
    """End ``process``'s whole session: mutmut, its worker, the tests."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except OSError:
            pass
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass


def restore(work, path):
    """The module as it is in the working tree, and no mutmut backup."""
    shutil.copy2(os.path.join(REPO, path), os.path.join(work, path))
    if os.path.exists(os.path.join(work, path + ".bak")):
        os.remove(os.path.join(work, path + ".bak"))


def run_mutmut(mutmut, work, path, command, log, deadline):
    """mutmut run over ``path`` until no mutant is left untested or the
    deadline; returns how many times it had to be started again."""
    restarts = 0
    with open(log, "w") as out:
        while True:
            # A run ended mid-mutant leaves the mutant in place.
            restore(work, path)
            out.flush()
            seen = os.path.getsize(log)
            # Its own session, so that all of it can be ended.
            runner = subprocess.Popen(
                [mutmut, "run", "--paths-to-mutate", path, "--runner",
                 command, "--tests-dir", "tests",
                 "--simple-output", "--no-progress"],
                cwd=work, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
            crashed = False
            while runner.poll() is None:
                if time.time() > deadline:
                    stop(runner)
                    # What was tested still counts; the rest is "untested".
                    out.write("\nmutation: budget spent\n")
                    return restarts
                with open(log) as written:
                    written.seek(seen)
                    if "Traceback (most recent call last)" in written.read():
                        crashed = True
                        break
                time.sleep(2)
            stop(runner)
            if not crashed and untested(work) == 0:
                return restarts
            if restarts == MAX_RESTARTS:
                out.write("\nmutation: mutmut failed %d times; giving up\n"
                          % (restarts + 1))
                return restarts
            restarts = restarts + 1
            out.write("\nmutation: mutmut failed; starting it again (%d)\n"
                      % restarts)


def recheck_survivors(mutmut, work, path):
    """Test every survivor again, one by one, with the tests as they are.

    mutmut 2.5.1 looks a mutant's cached status up by its line's text:
    of two identical lines (the same message raised in two places) the
    second takes the first's status, so with the tests changed since, a
    survivor there is never tested again.  Only survivors tested against
    other tests than these are tested again.  Returns how many were killed
    now (they are recorded as killed)."""
    import sqlite3
    # mutmut's own hash of the tests, by its own code.
    current = subprocess.run(
        [os.path.join(VENV, "bin", "python"), "-c",
         "from mutmut.cache import hash_of_tests; "
         "print(hash_of_tests(['tests']))"],
        cwd=work, capture_output=True, text=True).stdout.strip()
    db = sqlite3.connect(os.path.join(work, ".mutmut-cache"))
    try:
        stale = [str(row[0]) for row in db.execute(
            "select id from Mutant where status = 'bad_survived' and "
            "tested_against_hash != ?", (current,))]
    finally:
        db.close()
    original = os.path.join(REPO, path)
    killed = 0
    for mutant in stale:
        shutil.copy2(original, os.path.join(work, path))
        subprocess.run([mutmut, "apply", mutant], cwd=work,
                       capture_output=True)
        try:
            status = subprocess.run(["bash", ".mutation-runner.sh"],
                                    cwd=work).returncode
        finally:
            shutil.copy2(original, os.path.join(work, path))
        if status != 0:
            killed = killed + 1
            db = sqlite3.connect(os.path.join(work, ".mutmut-cache"))
            try:
                db.execute("update Mutant set status = 'ok_killed' "
                           "where id = ?", (int(mutant),))
                db.commit()
            finally:
                db.close()
    return killed


def run_module(mutmut, module, property_runs, log, minutes, keep, reuse):
    """Run mutmut over one module in its own scratch copy; returns
    ``(counts, survivors)``, survivors as (id, diff)."""
    if reuse:
        # mutmut's cache there keeps the kills (tests only get added, so a
        # killed mutant stays killed); it tests the rest again.
        work = os.path.join(reuse, module)
        os.makedirs(work, exist_ok=True)
        keep = True
    else:
        work = tempfile.mkdtemp(prefix="fastmig-mutation-%s-" % module)
    try:
        scratch_copy(work)
        path = "xend_fastmig/%s.py" % module
        started = time.time()
        baseline = baseline_seconds(work, module, property_runs)
        if baseline is None:
            raise RuntimeError("%s: the tests fail without a mutant (see "
                               "%s/.mutation-tests.log)" % (module, work))
        command = write_runner(work, module, property_runs,
                               int(10 * baseline + 60))
        restarts = run_mutmut(mutmut, work, path, command, log,
                              started + minutes * 60)
        # Stopped mid-mutant, mutmut leaves it in place; mutmut's own
        # commands would read it as the original and corrupt the cache.
        restore(work, path)
        rechecked = recheck_survivors(mutmut, work, path)
        counts = {"untested": untested(work), "rechecked": rechecked}
        ids = {}
        for status in STATUSES:
            found = subprocess.run([mutmut, "result-ids", status], cwd=work,
                                   capture_output=True, text=True)
            ids[status] = found.stdout.split()
            counts[status] = len(ids[status])
        counts["seconds"] = time.time() - started
        counts["restarts"] = restarts
        survivors = []
        for mutant in ids["survived"]:
            shown = subprocess.run([mutmut, "show", mutant], cwd=work,
                                   capture_output=True, text=True)
            survivors.append((mutant, shown.stdout.strip()))
        return counts, survivors
    finally:
        if keep:
            print("mutation: %s: scratch copy kept in %s" % (module, work),
                  flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def score(counts):
    total = sum(counts[status] for status in STATUSES
                if status != "skipped")
    if not total:
        return None, 0
    return (total - counts["survived"]) * 100.0 / total, total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default=",".join(DEFAULT_MODULES),
                        help="comma-separated modules of xend_fastmig")
    parser.add_argument("--jobs", type=int, default=2,
                        help="modules mutated at the same time")
    parser.add_argument("--property-runs", type=int, default=3,
                        help="examples per property test (0: none)")
    parser.add_argument("--no-properties", action="store_true")
    parser.add_argument("--minutes", type=int, default=20,
                        help="budget per module; mutants left untested "
                        "are counted apart")
    parser.add_argument("--keep", action="store_true",
                        help="keep each module's scratch copy")
    parser.add_argument("--reuse", metavar="DIR",
                        help="scratch copies in DIR/<module>, kept and "
                        "used again: only mutants not yet killed are tested")
    args = parser.parse_args(argv)
    if missing_tests():
        parser.error("UNIT_TESTS names missing files: %s"
                     % ", ".join(missing_tests()))
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    for module in modules:
        if module not in UNIT_TESTS:
            parser.error("no test selection for module %r" % module)
    property_runs = 0 if args.no_properties else args.property_runs
    mutmut = ensure_mutmut()

    from concurrent.futures import ThreadPoolExecutor, as_completed
    # One directory per run: two runs at once must not share log files.
    logs = os.path.join(tempfile.gettempdir(), "fastmig-mutation-logs",
                        time.strftime("%Y%m%d-%H%M%S-") + str(os.getpid()))
    os.makedirs(logs, exist_ok=True)
    started = time.time()
    results = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = dict(
            (pool.submit(run_module, mutmut, module, property_runs,
                         os.path.join(logs, module + ".log"), args.minutes,
                         args.keep, args.reuse and os.path.abspath(args.reuse)),
             module)
            for module in modules)
        for future in as_completed(futures):
            module = futures[future]
            results[module] = future.result()
            # As each module ends: a long run is useful before it is over.
            counts, survivors = results[module]
            value, total = score(counts)
            print("mutation: %s: %d mutants tested, %d survived, score "
                  "%s%%, %d left untested (%.0f s, mutmut restarted %d "
                  "times, %d survivors killed when tested again)"
                  % (module, total, counts["survived"],
                     "-" if value is None else "%.1f" % value,
                     counts["untested"], counts["seconds"],
                     counts["restarts"], counts["rechecked"]), flush=True)
            for mutant, diff in survivors:
                print("-- surviving mutant %s of %s\n%s"
                      % (mutant, module, diff), flush=True)

    totals = dict((status, 0) for status in STATUSES)
    untested_total = 0
    print()
    print("%-10s %7s %7s %7s %10s %8s %7s %8s %7s"
          % ("module", "tested", "killed", "timeout", "suspicious",
             "survived", "score", "untested", "seconds"))
    for module in modules:
        counts = results[module][0]
        value, total = score(counts)
        for status in STATUSES:
            totals[status] += counts[status]
        print("%-10s %7d %7d %7d %10d %8d %6s%% %8d %7.0f"
              % (module, total, counts["killed"], counts["timeout"],
                 counts["suspicious"], counts["survived"],
                 "-" if value is None else "%.1f" % value,
                 counts["untested"], counts["seconds"]))
        untested_total += counts["untested"]
    value, total = score(totals)
    print("%-10s %7d %7d %7d %10d %8d %6s%% %8d %7.0f"
          % ("all", total, totals["killed"], totals["timeout"],
             totals["suspicious"], totals["survived"],
             "-" if value is None else "%.1f" % value, untested_total,
             time.time() - started))
    if value is not None:
        print("mutation score: %.1f%% (%d of %d tested mutants killed; "
              "%d left untested)" % (value, total - totals["survived"],
                                     total, untested_total))
    survivors = 0
    for module in modules:
        for mutant, diff in results[module][1]:
            survivors += 1
            print()
            print("== surviving mutant %s of %s" % (mutant, module))
            print(diff)
    print("(mutmut logs in %s)" % logs)
    if total == 0:
        return 1
    if survivors:
        return 2
    # Incomplete: a score over part of the mutants is no verdict.
    return 3 if untested_total else 0


if __name__ == "__main__":
    sys.exit(main())
