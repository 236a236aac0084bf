"""Hypothesis strategies for handover schedules (see ``harness``)."""
from __future__ import annotations

import errno

from hypothesis import strategies as st

from tests.properties.harness import (DRAIN_TIMEOUT, FAIL_ACTIONS,
                                      VERDICT_ACTIONS, Device, Schedule,
                                      StoreFault, TargetPlan)

# The clean runs' drain timeout: far above their I/O times (below), so
# that only a defect, never a busy CI machine, leaves the fast path.
CLEAN_DRAIN_TIMEOUT = 2.0

__all__ = ["devices", "target_plans", "store_faults", "schedules",
           "clean_schedules"]

# I/O completion after the suspend: mostly quick, sometimes near the
# drain timeout.
_quick = st.floats(min_value=0.0, max_value=DRAIN_TIMEOUT * 0.6)
_late = st.floats(min_value=DRAIN_TIMEOUT * 1.1, max_value=DRAIN_TIMEOUT * 2.5)


@st.composite
def devices(draw, kinds=("normal", "normal", "normal", "hung", "slow"),
            quick=_quick):
    kind = draw(st.sampled_from(kinds))
    delays = draw(st.lists(quick, max_size=4))
    if kind == "slow":
        delays.append(draw(_late))
    return Device(draw(st.sampled_from(("vbd", "vbd", "tap"))), kind,
                  tuple(delays))


@st.composite
def target_plans(draw):
    step = draw(st.sampled_from(("stream", "completeRestore",
                                 "waitForDevices", "unpause", "verdict",
                                 "verdict", "verdict", "last-round")))
    delay = draw(st.sampled_from((0.0, 0.0, 0.01, 0.05, 0.15)))
    if step == "verdict":
        return TargetPlan(step, draw(st.sampled_from(
            ("ok", "ok", "ok") + VERDICT_ACTIONS)), delay)
    return TargetPlan(step, draw(st.sampled_from(FAIL_ACTIONS)), delay)


_errs = st.sampled_from((errno.EAGAIN, errno.EACCES, errno.EIO))


@st.composite
def store_faults(draw):
    who = draw(st.sampled_from(("xend", "xend", "any", "reset-xend",
                                "reset-all")))
    return StoreFault(
        who=who,
        op=draw(st.sampled_from(("read", "write", "commit", "rm", "ls",
                                 "watch", "transaction_start"))),
        err=draw(_errs),
        at=draw(st.integers(min_value=0, max_value=60)),
        count=draw(st.integers(min_value=1, max_value=3)),
        path_index=draw(st.integers(min_value=0, max_value=20)))


@st.composite
def schedules(draw):
    return Schedule(
        devices=tuple(draw(st.lists(devices(), max_size=16))),
        protocol=draw(st.booleans()),
        shared_xenwatch=draw(st.booleans()),
        flavour=draw(st.sampled_from(("xen417", "xen31"))),
        suspend_cancel=draw(st.booleans()),
        hvm=draw(st.booleans()),
        target=draw(target_plans()),
        store_fault=draw(st.none() | store_faults()),
        source_fault=draw(st.sampled_from(
            (None, None, None, None, "save", "destroy", "resume",
             "verdict"))),
        destroy_cost=draw(st.sampled_from((0.0, 0.0, 0.02, 0.1))),
        early_release=draw(st.booleans()))


@st.composite
def clean_schedules(draw):
    """Nothing fails and every backend drains in time."""
    return Schedule(
        devices=tuple(draw(st.lists(devices(kinds=("normal",)),
                                    max_size=16))),
        # Room for a loaded machine: here the drain must never time out.
        drain_timeout=CLEAN_DRAIN_TIMEOUT,
        protocol=draw(st.booleans()),
        shared_xenwatch=draw(st.booleans()),
        flavour=draw(st.sampled_from(("xen417", "xen31"))),
        suspend_cancel=draw(st.booleans()),
        hvm=draw(st.booleans()),
        destroy_cost=draw(st.sampled_from((0.0, 0.05))),
        early_release=draw(st.booleans()))
