"""Hypothesis strategies for the early release (issue 12), on top of
``strategies``: the target failing in the last round, xc_save failing
after the release."""
from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from tests.properties.harness import FAIL_ACTIONS, TargetPlan
from tests.properties.strategies import schedules, target_plans

__all__ = ["last_round_plans", "early_release_schedules"]


@st.composite
def last_round_plans(draw):
    """The target fails while the source still sends the last round."""
    return TargetPlan("last-round", draw(st.sampled_from(FAIL_ACTIONS)),
                      draw(st.sampled_from((0.0, 0.005, 0.02, 0.05))))


@st.composite
def early_release_schedules(draw):
    """``schedules()`` with the early release on, weighted towards what
    can go wrong once the devices are released at the suspend: xc_save
    failing in the last round, the target failing during it; a last
    round long enough for both, and the calibrated teardown or none."""
    schedule = draw(schedules())
    target = draw(st.one_of(last_round_plans(), target_plans()))
    source_fault = draw(st.sampled_from(
        (None, None, "save", "save", "destroy", "resume")))
    return dataclasses.replace(
        schedule, early_release=True, target=target,
        source_fault=source_fault,
        last_round=draw(st.sampled_from((0.0, 0.01, 0.03, 0.1))),
        teardown=draw(st.sampled_from((0.0, 0.03))))
