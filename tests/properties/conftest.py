"""Hypothesis profiles for the property tests, and the run tally.

``HYPOTHESIS_PROFILE`` (or pytest's ``--hypothesis-profile``) picks one:

* ``ci`` (default): a bounded subset, the whole folder in well under three
  minutes on two cores;
* ``full``: 1000 examples per property (what README's "Randomized
  schedules" figure reports);
* ``FASTMIG_PROPERTY_RUNS=N`` overrides the number of examples of either.

Every run of the handover is counted; the summary line at the end says how
many ran and how many broke an invariant.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.properties import tally

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow,
                                      HealthCheck.data_too_large])


def _examples(default: int) -> int:
    return int(os.environ.get("FASTMIG_PROPERTY_RUNS", default))


settings.register_profile("ci", max_examples=_examples(40), **_COMMON)
settings.register_profile("full", max_examples=_examples(1000), **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter):
    if tally.RUNS:
        terminalreporter.write_line(
            "fastmig property runs: %d handovers, %d with invariant "
            "violations" % (tally.RUNS, tally.VIOLATING))
