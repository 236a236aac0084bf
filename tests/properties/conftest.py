"""Hypothesis profiles for the property tests, and the run tally.

``HYPOTHESIS_PROFILE`` (or pytest's ``--hypothesis-profile``) picks one:

* ``ci`` (default): a bounded subset, the whole folder in well under three
  minutes on two cores;
* ``full``: 1000 examples per property (what README's "Randomized
  schedules" figure reports);
* ``mutation``: 3 examples, always the same ones, never shrunk;
* ``FASTMIG_PROPERTY_RUNS=N`` overrides the number of examples of either.

Every run of the handover is counted; the summary line at the end says how
many ran and how many broke an invariant.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.properties import tally

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow,
                                      HealthCheck.data_too_large])


def _examples(default: int) -> int:
    return int(os.environ.get("FASTMIG_PROPERTY_RUNS", default))


settings.register_profile("ci", max_examples=_examples(40), **_COMMON)
settings.register_profile("full", max_examples=_examples(1000), **_COMMON)
# tools/mutation.py: the same examples for every mutant, and a failure is a
# kill at once (no shrinking, no example database).
settings.register_profile("mutation", max_examples=_examples(3),
                          derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate], **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# A property test runs all its examples in one test: its timeout grows with
# their number (each handover is bounded by its own short deadlines).
_SECONDS_PER_EXAMPLE = 3.0


def pytest_collection_modifyitems(config, items):
    examples = settings.default.max_examples
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        # This hook sees the whole session's items: only ours.
        if not str(item.path).startswith(here + os.sep):
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(
                300 + int(_SECONDS_PER_EXAMPLE * examples)))


def pytest_terminal_summary(terminalreporter):
    if tally.RUNS:
        terminalreporter.write_line(
            "fastmig property runs: %d handovers, %d with invariant "
            "violations (with the early release: %d, %d); the process "
            "could not run for %.1f s after their images (at most %.2f s "
            "in one run), which their deadlines' budget excuses"
            % (tally.RUNS, tally.VIOLATING, tally.EARLY,
               tally.EARLY_VIOLATING, tally.STALLED_SECONDS,
               tally.MOST_STALLED))
