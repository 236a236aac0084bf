"""The early release in the rehearsal (issue 12): the timeline and the
limit in --json, the fastmig-late policy (the early release off), the
teardown delay, and the faults in the last memory round.

Every run is a real rehearsal run (two modelled hosts, a real TCP
connection, the real handover inside the patched-save model).
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from fastmig_tools.rehearse.catalogue import FAULTS, apply_fault
from fastmig_tools.rehearse.observe import violations
from fastmig_tools.rehearse.matrix import MATRIX_BASE
from fastmig_tools.rehearse.runner import AT_TARGET, LOST, RESUMED, run_once
from fastmig_tools.rehearse.scenario import Scenario, TEARDOWN_MS

pytestmark = pytest.mark.timeout(120)

SUSPENDED = "suspended at the source, running nowhere"


def _scenario(policy="fastmig", fault=None, **knobs):
    scenario = Scenario(policy=policy, **dict(MATRIX_BASE, **knobs))
    if fault is not None:
        scenario = apply_fault(scenario, fault)
    return scenario


def _last_drain(result):
    return max(ms for _device, _how, ms in result.drains_confirmed)


# ---------------------------------------------------------------------------
# the timeline and the limit
# ---------------------------------------------------------------------------

def test_early_release_drains_during_the_last_round_and_meets_the_limit():
    result = run_once(_scenario(last_round_seconds=0.15, slow_write_ms=40.0))
    assert result.outcome == AT_TARGET and result.violations == []
    assert result.early_release is True
    assert result.suspend_ms == 0.0
    # Released at the suspend; drained (40 ms + the teardown) before the
    # 150 ms round ended; the target released after the image.
    assert 0 <= result.devices_released_ms < 40
    assert len(result.drains_confirmed) == MATRIX_BASE["devices"]
    assert {how for _d, how, _ms in result.drains_confirmed} == \
        {"backend-gone"}
    assert 40 + TEARDOWN_MS <= _last_drain(result) < result.image_sent_ms
    assert result.image_sent_ms <= result.released_ms <= result.unpaused_ms
    assert result.restore_ms == pytest.approx(
        result.unpaused_ms - result.released_ms)
    assert result.limit_ms == pytest.approx(
        max(result.image_sent_ms, _last_drain(result)) + result.restore_ms)
    assert result.over_limit_ms == pytest.approx(
        result.blackout_ms - result.limit_ms)
    assert result.over_limit_ms >= -0.01


def test_late_release_starts_the_drain_after_the_image():
    result = run_once(_scenario("fastmig-late", last_round_seconds=0.15,
                                slow_write_ms=40.0))
    assert result.outcome == AT_TARGET and result.violations == []
    assert result.early_release is False
    assert result.scenario["early_release"] is False
    assert result.devices_released_ms >= result.image_sent_ms
    # The writes had long landed: the drain signal is the teardown after
    # the release, and the limit counts this run's own drains.
    assert _last_drain(result) >= result.image_sent_ms + TEARDOWN_MS
    assert result.limit_ms == pytest.approx(
        _last_drain(result) + result.restore_ms)


def test_the_limit_is_none_where_the_guest_does_not_run_at_the_target():
    result = run_once(_scenario(fault="target-completeRestore"))
    assert result.outcome == RESUMED
    assert result.limit_ms is None and result.over_limit_ms is None


def test_json_gives_the_timeline_of_each_run(capsys):
    from fastmig_tools.cli import main
    code = main(["rehearse", "--quiet", "--json", "--policies",
                 "fastmig,fastmig-late", "--memory", "512M", "--precopy",
                 "0", "--slow-write", "20", "--last-round", "200",
                 "--teardown", "10"])
    out = capsys.readouterr().out
    assert code == 0
    runs = {p["policy"]: p["runs"][0]
            for p in json.loads(out)["points"][0]["policies"]}
    assert set(runs) == {"fastmig", "fastmig-late"}
    for record in runs.values():
        for key in ("suspend_ms", "image_sent_ms", "drains_confirmed",
                    "released_ms", "unpaused_ms", "restore_ms", "limit_ms",
                    "over_limit_ms", "early_release", "devices_released_ms"):
            assert record[key] is not None, key
        assert record["scenario"]["teardown_ms"] == 10.0
        assert record["scenario"]["last_round_seconds"] == \
            pytest.approx(0.2)
    assert runs["fastmig"]["early_release"] is True
    assert runs["fastmig-late"]["early_release"] is False
    # The late release follows the image; the early one comes at the
    # suspend (200 ms before the image: room for a loaded machine).
    late = runs["fastmig-late"]
    assert late["devices_released_ms"] >= late["image_sent_ms"]
    assert runs["fastmig"]["devices_released_ms"] < \
        runs["fastmig"]["image_sent_ms"]


# ---------------------------------------------------------------------------
# the teardown delay
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("teardown_ms", [0.0, 120.0])
def test_a_classic_drain_signal_trails_the_last_write_by_the_teardown(
        teardown_ms):
    result = run_once(_scenario(slow_write_ms=20.0, teardown_ms=teardown_ms,
                                last_round_seconds=0.01))
    assert result.outcome == AT_TARGET and result.violations == []
    trail = _last_drain(result) - result.last_write_ms
    assert teardown_ms <= trail < teardown_ms + 40
    assert result.released_ms >= _last_drain(result)


def test_shutdown_done_does_not_wait_for_the_hotplug_cleanup():
    result = run_once(_scenario(backend="shutdown-request",
                                slow_write_ms=20.0, teardown_ms=200.0))
    assert result.outcome == AT_TARGET and result.violations == []
    assert {how for _d, how, _ms in result.drains_confirmed} == \
        {"shutdown-done"}
    assert _last_drain(result) - result.last_write_ms < 100


# ---------------------------------------------------------------------------
# faults in the last round
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["fastmig", "fastmig-late"])
def test_xc_save_failing_after_the_suspend_resumes_the_source(policy):
    result = run_once(_scenario(policy, "xc-save-fails"))
    assert result.outcome == RESUMED
    assert result.violations == []
    assert result.disk_clean
    assert result.released_ms is None          # the target never ran
    if policy == "fastmig":
        # Released at the suspend: back only on re-created devices.
        assert result.devices_released_ms is not None
        assert result.resume_path == "recreate"


@pytest.mark.parametrize("policy,path", [("fastmig", "recreate"),
                                         ("fastmig-late", "fast"),
                                         ("stock", "fast")])
def test_a_suspend_cancel_guest_resumes_fast_only_on_untouched_devices(
        policy, path):
    result = run_once(_scenario(policy, "xc-save-fails-suspend-cancel"))
    assert result.outcome == RESUMED
    assert result.resume_path == path
    assert result.fast_resume_after_release is False
    assert result.violations == []


def test_the_checker_catches_a_fast_resume_on_torn_down_devices():
    result = run_once(_scenario("fastmig", "xc-save-fails-suspend-cancel"))
    assert result.devices_force_released_ms is not None
    broken = dataclasses.replace(
        result, fast_resumes_ms=[result.devices_force_released_ms + 1.0])
    assert violations(broken) == [
        "I8 no-fast-resume: resumed fast (SUSPEND_CANCEL) on torn-down "
        "devices"]


def test_an_hvm_guest_is_reported_suspended_when_xc_save_fails():
    result = run_once(_scenario("fastmig", "xc-save-fails-hvm"))
    # Xen 3.1 cannot resume it: running nowhere, as under stock.
    assert result.outcome == LOST
    assert result.source_destroyed_ms is None
    assert result.handover_outcome == SUSPENDED
    assert result.violations == []
    stock = run_once(_scenario("stock", "xc-save-fails-hvm"))
    assert stock.outcome == LOST and stock.violations == []
    # The checker: a core calling it resumed would be caught.
    misreported = dataclasses.replace(result, handover_outcome=RESUMED)
    assert violations(misreported) == [
        "I9 honest-outcome: source copy left suspended but reported as %s"
        % RESUMED]


@pytest.mark.parametrize("fault", ["target-err-last-round",
                                   "target-reset-last-round"])
def test_a_target_failing_in_the_last_round_leaves_the_guest_at_the_source(
        fault):
    assert FAULTS[fault].target[0] == "last-round"
    result = run_once(_scenario("fastmig", fault))
    assert result.outcome == RESUMED
    assert result.violations == []
    assert result.released_ms is None
    assert result.disk_clean
    # The target failed 20 ms after the suspend, before the 100 ms round
    # ended, and after the early release.
    assert result.devices_released_ms < 20
    assert result.image_sent_ms is None or result.image_sent_ms >= 100
    assert result.resume_path == "recreate"


def test_stock_loses_the_guest_when_the_target_says_err_in_the_last_round():
    """3.1's restore destroys its copy before it answers (err ...), so the
    answer comes after stock destroyed the source copy: the loss is
    stock's own (I2 counts it against no one), but stock reports success
    for a guest that runs nowhere (I9)."""
    result = run_once(_scenario("stock", "target-err-last-round"))
    assert result.outcome == LOST
    assert result.target_said == "err"
    assert result.source_destroy_started_ms < result.target_said_ms
    assert [v.split(":")[0] for v in result.violations] == [
        "I9 honest-outcome"]


# ---------------------------------------------------------------------------
# the backend model
# ---------------------------------------------------------------------------

def test_a_frontend_gone_during_a_shutdown_request_drain_still_unregisters():
    """shutdown-request and the frontend's removal in one wake-up (the
    early release, then a resume's teardown right after): the frontend's
    event waits for the drain, as on a real xenwatch, and the backend
    directory goes."""
    import uuid as uuidlib

    from fastmig_tools.models.blkback import ShutdownRequestBlkback
    from fastmig_tools.models.xenbus_backend import Xenwatch
    from fastmig_tools.models.layout import write_domain_layout
    from fastmig_tools.xenstore.embedded import EmbeddedXenstore
    from fastmig_tools.xenstore.xend_api import XendApi

    store = EmbeddedXenstore()
    apis = [XendApi(store.connect()), XendApi(store.connect())]
    actor = None
    try:
        xst = apis[0].xstransact
        layout = write_domain_layout(apis[0].store(), 7, "guest7",
                                     str(uuidlib.uuid4()), vbds=["/dev/x"])
        device = layout.vbds[0]
        xenwatch = Xenwatch()
        actor = ShutdownRequestBlkback(apis[1].store(), device.backend,
                                       xenwatch=xenwatch).start()
        # Another backend's callback holds dom0's xenwatch: both events
        # reach this one together.
        other = object()
        assert xenwatch._try_acquire(other)
        seen = (actor.backend_events, actor.frontend_events)
        xst.Write(device.backend, "shutdown-request", "force")
        xst.Remove(device.frontend)
        assert actor.wait_for(lambda a: a.backend_events > seen[0]
                              and a.frontend_events > seen[1], 5.0)
        xenwatch._release(other)
        assert actor.wait_shutdown_done(5.0)
        assert actor.wait_removed(5.0), actor.events
        assert xst.Read(device.backend) is None
    finally:
        if actor is not None:
            actor.stop()
        for api in apis:
            api.close()
