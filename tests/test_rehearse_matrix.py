"""``xend-fastmig rehearse --fault`` and ``--matrix``: the named faults,
the invariant checker, and the outcome table.

The checker must have teeth (stock, patch2008 and xen41 are caught where
their code is unsafe) and fastmig must break no invariant under any fault
but the one nobody can detect (a kernel removing its backend directory
before its drain).
"""
from __future__ import annotations

import json
import sys

import pytest

from fastmig_tools.rehearse.catalogue import (FAULTS, FaultError, apply_fault,
                                           parse_fault)
from fastmig_tools.rehearse.matrix import MATRIX_BASE, run_fault_matrix
from fastmig_tools.rehearse.runner import AT_TARGET, LOST, RESUMED, run_once
from fastmig_tools.rehearse.scenario import Scenario


def _main(argv, capsys):
    from fastmig_tools.cli import main
    code = main(["rehearse"] + argv)
    out, err = capsys.readouterr()
    return code, out, err


def _scenario(policy, fault):
    return apply_fault(Scenario(policy=policy, **MATRIX_BASE), fault)


# ---------------------------------------------------------------------------
# fastmig under every fault
# ---------------------------------------------------------------------------

DETECTABLE = [name for name, spec in FAULTS.items() if not spec.undetectable]


def test_fastmig_breaks_no_invariant_under_any_detectable_fault():
    cells = run_fault_matrix(DETECTABLE, ["fastmig"], runs=1)
    broken = {fault: dict(cell.kinds) for (fault, _p), cell in cells.items()
              if cell.violating}
    assert broken == {}
    assert sum(cell.runs for cell in cells.values()) == len(DETECTABLE)


@pytest.mark.parametrize("fault", ["target-stream", "target-completeRestore",
                                   "target-waitForDevices", "target-unpause",
                                   "target-reset-before", "suspend-cancel"])
def test_a_target_failing_before_it_runs_gets_the_guest_back(fault):
    result = run_once(_scenario("fastmig", fault))
    assert result.outcome == RESUMED
    assert result.violations == []


def _ids(result):
    return set(v.split(" ", 1)[0] for v in result.violations)


def test_stock_loses_the_guest_when_the_target_says_err():
    """Stock destroyed its copy before the target's (err ...) (it releases
    only after the destroy), so that loss is stock's own (I2 holds it
    against no one), but it reports success for a guest running nowhere."""
    result = run_once(_scenario("stock", "target-completeRestore"))
    assert result.outcome == LOST
    assert result.source_destroy_started_ms < result.target_said_ms
    assert _ids(result) == {"I9"}


@pytest.mark.parametrize("policy", ["stock", "xen41", "patch2008"])
def test_a_slow_write_corrupts_the_disk_of_the_other_policies(policy):
    result = run_once(_scenario(policy, "slow-write"))
    assert "I3" in _ids(result)


def test_a_write_after_the_whole_drain_budget_is_waited_out_not_longer():
    """Issue 11, defect 8: one budget.  A write landing after it lands after
    the target's release under every bounded wait; fastmig must have
    waited out the whole budget and destroyed the source first, and the
    source's time after the image stays within one drain timeout."""
    result = run_once(_scenario("fastmig", "late-drain"))
    assert result.outcome == AT_TARGET
    assert result.violations == []
    drain_ms = result.scenario["drain_timeout"] * 1000.0
    assert result.released_ms >= drain_ms
    assert result.source_destroyed_ms <= result.released_ms
    assert "stock-order handover" in result.handover
    destroy_ms = result.scenario["memory_gb"] * \
        result.scenario["destroy_per_gb"] * 1000.0
    # Not a second full wait after the destroy (slack: scheduling).
    assert result.released_ms < drain_ms + destroy_ms + 0.5 * drain_ms
    stock = run_once(_scenario("stock", "late-drain"))
    assert "I3" in _ids(stock)


def test_the_undetectable_fault_is_caught_by_the_checker_not_by_fastmig():
    result = run_once(_scenario("fastmig", "remove-before-drain"))
    assert result.outcome == AT_TARGET
    assert "I3" in _ids(result)


# ---------------------------------------------------------------------------
# issue 11's rows (defects 1, 3, 4, 6, 7): fastmig holds, a regression shows
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["guest-rewrites-backend",
                                   "guest-rewrites-backend-dom0"])
def test_defect1_the_bystanders_devices_are_left_alone(fault, mocker):
    """The guest points its frontends' ``backend`` keys at a bystander's
    disks (or at dom0's whole backend tree): fastmig releases only what
    dom0's own tree names; the 2008 patch's forced destroyDevice, and a
    release that follows the guest's key, remove the bystander's
    backends (I10)."""
    result = run_once(_scenario("fastmig", fault))
    assert result.outcome == AT_TARGET
    assert result.violations == []
    assert result.bystanders_touched == []
    assert "fast handover" in result.handover
    assert "I10" in _ids(run_once(_scenario("patch2008", fault)))

    from xend_fastmig import release
    real = release.release_block_device

    def trusting(store, device):
        # Before the fix: the guest-named path, as destroyDevice(force).
        named = device.frontend and store.xstransact.Read(device.frontend,
                                                          "backend")
        if named and named != device.backend:
            store.xstransact.Remove(named)
        return real(store, device)
    mocker.patch("xend_fastmig.release.release_block_device",
                 side_effect=trusting)
    broken = run_once(_scenario("fastmig", fault))
    assert "I10" in _ids(broken)
    assert any(line.endswith(": removed")
               for line in broken.bystanders_touched)


def test_defect3_an_err_in_two_parts_over_two_looks_is_seen(mocker):
    """The (err ...) comes in two parts, the rest only after the source's
    first look; a late write sends the source down the stock-order
    fallback, whose look before the destroy sees only the rest.  Parsing
    what accumulated, fastmig resumes; parsing each look's bytes alone,
    it destroys a guest whose target already failed (I2)."""
    result = run_once(_scenario("fastmig", "target-err-split"))
    assert result.outcome == RESUMED
    assert result.violations == []
    assert "stock-order handover" in result.handover
    assert "then migration target failed: (err" in result.handover
    # The first part was there before the first look (the image was
    # still being sent), the rest came before the fallback's look.
    assert result.target_said_ms < result.image_sent_ms

    from xend_fastmig import verdict
    real = verdict.peek_for_failure
    mocker.patch("xend_fastmig.handover.peek_for_failure",
                 side_effect=lambda sock, already="":
                 already + real(sock, ""))
    broken = run_once(_scenario("fastmig", "target-err-split"))
    assert broken.outcome == LOST
    assert "I2" in _ids(broken)


def _double_quotes_only(text, start=0):
    """The verdict reader before defect 4's fix: strings in double quotes
    only, so a repr()'s single-quoted "(" opens a list that never ends."""
    from xend_fastmig.sxp_parse import Malformed
    depth, quoted, escaped, began = 0, False, False, None
    for index in range(start, len(text)):
        char = text[index]
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "(":
            began = index if began is None else began
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0 and began is not None:
                return text[began + 1:index].split()[:1], index + 1
        elif began is None and not char.isspace():
            raise Malformed("not a list: %r" % text[start:start + 20])
    return None, -1


def test_defect4_an_err_written_as_xend_writes_it_is_read(mocker):
    """xend writes the (err ...)'s value as a repr(): single quotes, here
    around an unbalanced "(" and a lone '"'.  fastmig reads it as an error
    and resumes; a reader that knows double quotes only waits for the end
    of a list that never comes and destroys the source copy (I2)."""
    from fastmig_tools.rehearse.target import QUOTED_ERR_REPLY
    assert "'Restore failed: bad ( and \" here'" in QUOTED_ERR_REPLY
    result = run_once(_scenario("fastmig", "target-err-quoted"))
    assert result.outcome == RESUMED
    assert result.violations == []
    assert "bad ( and" in result.handover

    mocker.patch("xend_fastmig.verdict._first",
                 side_effect=_double_quotes_only)
    broken = run_once(_scenario("fastmig", "target-err-quoted"))
    assert broken.outcome == LOST
    assert "I2" in _ids(broken)


def test_defect6_a_second_migrate_is_refused_and_resumes_nothing(mocker):
    """A second ``xm migrate`` of the domain at its suspend: refused with a
    clear error, the domain never resumed at the source; the run's target
    connection is the first one's.  Without the refusal, the second save's
    stock failure path resumes the domain while the first one's target
    runs it (I1); stock 3.1 and Xen 4.1 do that too."""
    result = run_once(_scenario("fastmig", "second-migrate"))
    assert result.outcome == AT_TARGET
    assert result.violations == []
    assert result.second_migration.startswith("refused: ")
    assert "is being migrated" in result.second_migration
    assert result.resumed_ms is None
    assert result.target_said == "ok"
    assert "I1" in _ids(run_once(_scenario("xen41", "second-migrate")))

    from xend_fastmig import handover, registry
    real = handover.begin

    def forgetful(dominfo, sock, checkpoint, env=None):
        # Before the fix: a domain under handover got a save in stock's
        # order, whose failure path resumes it.
        if registry.lookup(dominfo) is not None:
            return None
        return real(dominfo, sock, checkpoint, env=env)
    mocker.patch("fastmig_tools.models.patched_save.begin",
                 side_effect=forgetful)
    # A 0.6 s destroy: the second save's resume (two polls of 0.1 s per
    # device) comes well before the first one's destroy clears the domid.
    broken = run_once(_scenario("fastmig", "second-migrate")
                      .replace(memory_gb=1.0))
    # The model's save logs the failure and returns, as 3.1's does.
    assert broken.second_migration == "returned"
    assert broken.resumed_ms is not None
    assert "I1" in _ids(broken)


def test_defect7_a_backend_gone_before_the_release_stays_gone(mocker):
    """A block-detach completes between the capture and the release: its
    backend directory is gone when the release comes.  fastmig writes
    nothing there and counts it drained; a release that writes without
    looking re-creates it, the drain waits out its budget for a directory
    nobody removes, and the entry is left behind (I7)."""
    result = run_once(_scenario("fastmig", "backend-gone-before-release"))
    assert result.outcome == AT_TARGET
    assert result.violations == []
    assert result.leftovers == []
    assert "fast handover" in result.handover
    assert len(result.drain_confirmations) == 2

    def writes_blindly(store, device):
        store.xstransact.Write(device.backend, "online", "0")
        if device.frontend:
            store.xstransact.Remove(device.frontend)
        return True
    mocker.patch("xend_fastmig.release.release_block_device",
                 side_effect=writes_blindly)
    broken = run_once(_scenario("fastmig", "backend-gone-before-release"))
    assert "I7" in _ids(broken)
    assert "stock-order handover" in broken.handover


def test_the_matrix_lists_invariants_in_id_order_and_long_fault_names():
    from fastmig_tools.rehearse.matrix import Cell, format_matrix
    cell = Cell("guest-rewrites-backend-dom0", "patch2008", runs=1,
                violating=1)
    cell.outcomes[AT_TARGET] += 1
    cell.kinds["I10 bystanders"] += 1
    cell.kinds["I2 no-loss"] += 1
    out = format_matrix({(cell.fault, cell.policy): cell}, ["patch2008"])
    assert "  guest-rewrites-backend-dom0 patch2008 1x I2 no-loss\n" \
        "  guest-rewrites-backend-dom0 patch2008 1x I10 bystanders" in out
    assert out.index("  I2 no-loss:") < out.index("  I10 bystanders:")


def test_parse_fault():
    assert parse_fault("xs-eagain-read@3") == ("xs-eagain-read", 3.0)
    assert parse_fault("hung-backend") == ("hung-backend", None)
    with pytest.raises(FaultError):
        parse_fault("gremlins")
    with pytest.raises(FaultError):
        parse_fault("slow-write@soon")
    with pytest.raises(FaultError):
        apply_fault(Scenario(xenstored="real"), "xs-reset")


def test_when_sets_the_slow_write():
    assert apply_fault(Scenario(), "slow-write", 900.0).slow_write_ms == 900.0
    late = apply_fault(Scenario(drain_timeout=1.0), "late-drain")
    assert late.slow_write_ms == 1500.0


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

def test_matrix_table(capsys):
    code, out, err = _main(["--matrix", "--quiet", "--policies",
                            "stock,xen41,fastmig", "--faults",
                            "none,slow-write,target-stream"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    header = next(l for l in lines if l.startswith("fault"))
    assert header.split() == ["fault", "stock", "xen41", "fastmig"]
    rows = {l.split()[0]: l.split()[1:] for l in lines
            if not l.startswith(" ") and l.split()
            and l.split()[0] in ("none", "slow-write", "target-stream")}
    # Xen 4.1 closes, then destroys: its target takes the EOF while the
    # destroy runs, before any backend confirmed its drain.
    assert rows["none"] == ["0/1", "target", "1/1", "target", "0/1", "target"]
    assert rows["slow-write"][0] == "1/1" and rows["slow-write"][4] == "0/1"
    assert rows["target-stream"] == ["1/1", "LOST", "1/1", "LOST",
                                     "0/1", "source"]
    assert "fastmig: 3 runs, 0 with invariant violations" in out
    assert "stock: 3 runs, 2 with invariant violations" in out
    # Stock destroyed its copy before the target's (err ...): a loss of its
    # own; what it breaks is its report of success.
    assert "target-stream          stock     1x I9 honest-outcome" in out
    assert "  I9 honest-outcome: the outcome is reported as it is" in out


def test_matrix_json(capsys):
    code, out, err = _main(["--matrix", "--quiet", "--json", "--policies",
                            "stock,fastmig", "--faults", "hung-backend",
                            "--runs", "2"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "xend-fastmig-matrix/1"
    assert doc["runs_per_cell"] == 2
    cells = {(c["fault"], c["policy"]): c for c in doc["cells"]}
    assert set(cells) == {("hung-backend", "stock"),
                          ("hung-backend", "fastmig")}
    assert cells[("hung-backend", "fastmig")]["runs"] == 2
    assert cells[("hung-backend", "fastmig")]["violating_runs"] == 0
    assert doc["totals"]["fastmig"] == {"runs": 2, "violating_runs": 0,
                                        "undetectable_violating_runs": 0}


def test_one_run_with_a_fault(capsys):
    code, out, err = _main(["--fault", "target-completeRestore",
                            "--policies", "stock,fastmig", "--precopy", "10",
                            "--memory", "0.25G", "--quiet", "--json"],
                           capsys)
    assert code == 0, err
    doc = json.loads(out)
    runs = {p["policy"]: p["runs"][0] for p in doc["points"][0]["policies"]}
    assert runs["fastmig"]["outcome"] == RESUMED
    assert runs["fastmig"]["violations"] == []
    assert runs["stock"]["outcome"] == LOST
    assert runs["stock"]["violations"]


@pytest.mark.parametrize("argv, message", [
    (["--fault", "gremlins"], "unknown fault 'gremlins'"),
    (["--fault", "slow-write@soon"], "is not a number"),
    (["--matrix", "--faults", "none,gremlins"], "unknown fault 'gremlins'"),
    (["--matrix", "--fault", "none"], "--matrix runs its own scenarios"),
    (["--faults", "none"], "--faults chooses the faults of --matrix"),
    (["--fault", "xs-reset", "--xenstored", "real"],
     "needs the embedded xenstore"),
])
def test_bad_fault_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        from fastmig_tools.cli import main
        sys.exit(main(["rehearse"] + argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
