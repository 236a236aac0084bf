"""A clock for deadlines that works on Python 2.4 and on Python 3.

Deadlines must not move when an administrator or NTP steps the wall clock
during a migration, so they use a monotonic clock where one exists:
``time.monotonic`` on Python 3; on Python 2 ``os.times()[4]``, which Linux
derives from jiffies since boot (monotonic, 10 ms resolution: plenty for
deadlines measured in seconds).  Durations that are logged use ``now()``,
which is the same monotonic clock on Python 3 and the wall clock (finer
than jiffies) on Python 2.
"""

import os
import time

__all__ = ["monotonic", "now"]


def _python2_monotonic():
    return os.times()[4]


# getattr, not a plain attribute: the name must not trip 2.4 checkers.
monotonic = getattr(time, "monotonic", None)
if monotonic is None:
    monotonic = _python2_monotonic
    now = time.time
else:
    now = monotonic
