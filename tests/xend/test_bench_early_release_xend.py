"""fastmig_tools.xendharness.bench: one early-release run per policy on
the real xend, with the fields benchmarks/bench_early_release.py reads
defined as the model's RunResult defines them.  Only the arithmetic and
the order of the timeline are checked, never how long anything took."""
from __future__ import annotations

import pytest

from fastmig_tools.xendharness import bench

pytestmark = [pytest.mark.xend, pytest.mark.timeout(240)]


@pytest.fixture
def bench_on(xen_tree):
    bench.configure(tree=xen_tree)
    yield bench
    bench.close()
    bench.configure(tree=bench.DEFAULT_TREE)


def _consistent(r):
    assert r.outcome == bench.AT_TARGET, (r.error, r.violations)
    assert r.error is None
    assert r.disk_clean and r.violations == [] and r.leftovers == {}
    assert r.image_sent_ms > 0 and r.released_ms > 0
    # Dispatched by the guest kernel just before its suspend hypercall, so
    # a 5 ms write may land before the suspend is stamped.
    assert r.last_write_ms is not None
    assert [how for _path, how, _ms in r.drains_confirmed] == ["backend-gone"]
    ready = max(r.image_sent_ms, r.backends_confirmed_ms)
    assert r.restore_ms == pytest.approx(r.unpaused_ms - r.released_ms)
    assert r.limit_ms == pytest.approx(ready + r.restore_ms)
    assert r.over_limit_ms == pytest.approx(r.blackout_ms - r.limit_ms)
    assert r.blackout_ms == pytest.approx(r.unpaused_ms)
    assert r.teardown_measured_ms > 0


def test_one_run_per_policy_on_reused_hosts(bench_on):
    runs = {}
    for policy in bench.POLICIES:
        runs[policy] = bench_on.run(policy, last_round_ms=30, slowest_ms=50,
                                    teardown_ms=30, seed=1)
        _consistent(runs[policy])
    early, late = runs["fastmig"], runs["fastmig-late"]
    # The safe policies hand over only after the drain and the image: the
    # limit is a floor for them.  Slack, not a timing target: the drain is
    # stamped by the backend process's watch, the EOF by the target's xend,
    # and either may be descheduled on a loaded machine.
    for r in (early, late):
        assert r.released_ms >= max(r.image_sent_ms, r.backends_confirmed_ms) - 20
        assert r.limit_ms <= r.blackout_ms + 20
    # xc_save's last round: the image ends at least 30 ms after the suspend.
    assert early.image_sent_ms >= 30
    # The early release releases before the image is sent, the late after.
    assert early.devices_released_ms < early.image_sent_ms
    assert late.devices_released_ms >= late.image_sent_ms
    # A second run reuses the pair and leaves nothing behind either.
    again = bench_on.run("fastmig", last_round_ms=10, slowest_ms=5,
                         teardown_ms=30, seed=2)
    _consistent(again)
    assert len(bench._pairs) == 3
