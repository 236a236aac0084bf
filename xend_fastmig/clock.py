"""Clocks and deadlines that work on Python 2.4 and on Python 3.

Deadlines must end, whatever the clock does.  The raw clock is
``time.monotonic`` on Python 3; on Python 2 it is ``os.times()[4]``, which
Linux derives from jiffies since boot, but as a ``clock_t``: 32 bits on an
i386 dom0, so at USER_HZ = 100 it wraps every 2**32 / 100 s (about 497
days; the kernel starts jiffies 5 minutes before the first wrap, and
Python 2 raises OSError when ``times()`` happens to return -1).  A deadline
computed as ``reading + timeout`` across such a wrap never ends.

So a ``Deadline`` never subtracts readings that are far apart: it adds up
the elapsed time of successive readings, each step clamped to
``[0, MAX_STEP]``.  A step backwards (the wrap, a wall clock stepped back,
an unreadable clock) counts as no time; a step forward larger than
MAX_STEP (a wall clock stepped forward) counts as MAX_STEP.  Callers sleep
at most ``SLICE`` between readings (``Deadline.sleep_for``), so a wrap
costs at most one slice of extra waiting, and a wait of ``timeout`` seconds
ends after at most ``timeout + SLICE`` seconds plus whatever time the
process spent stalled (not sleeping) beyond MAX_STEP in one step.  A
deadline that runs late only delays a fallback or a verdict; one that ends
early could destroy a source copy a target is about to give back, so the
clamping errs on the late side.

``monotonic()`` stays for timestamps (the report's ``unleashed_at``);
``now()`` for logged durations: on Python 2 the wall clock, finer than
jiffies, where a jump only mislabels a log line.
"""

import os
import time

__all__ = ["monotonic", "now", "source", "Deadline", "Stopwatch", "SLICE",
           "MAX_STEP", "GRAIN"]

# Longest sleep between two readings of a deadline's clock.
SLICE = 1.0
# Shortest sleep while a deadline has time left (see sleep_for).
GRAIN = 0.001
# Most time one step between readings may count: a slice, plus room for a
# loaded dom0's store round trips between the readings.
MAX_STEP = 5.0


def _python2_monotonic():
    try:
        return os.times()[4]
    except OSError:
        # times() returned -1, a legitimate reading once per wrap.
        return None


def _clocks(time_module):
    """``(monotonic, now)`` for the Python that has ``time_module``."""
    # getattr, not a plain attribute: the name must not trip 2.4 checkers.
    found = getattr(time_module, "monotonic", None)
    if found is None:
        return _python2_monotonic, time_module.time
    return found, found


monotonic, now = _clocks(time)

# The raw clock deadlines read; tests replace it to simulate a wrap or a
# jump.  It may return None when it cannot be read.
source = monotonic


class Stopwatch:
    """Time elapsed since it started, from successive clamped steps."""

    def __init__(self, clock=None):
        if clock is None:
            clock = source
        self.clock = clock
        self.last = clock()
        self.total = 0.0

    def elapsed(self):
        reading = self.clock()
        if reading is None:
            return self.total
        if self.last is not None:
            step = reading - self.last
            # Also false for a NaN step: counted as no time.
            if step > 0:
                self.total = self.total + min(step, MAX_STEP)
        self.last = reading
        return self.total


class Deadline:
    """A wait of ``seconds`` that ends whatever the clock does.

    ``clock``: the raw clock (default: the module's ``source``).
    """

    def __init__(self, seconds, clock=None):
        self.seconds = seconds
        self.watch = Stopwatch(clock)

    def remaining(self):
        """Seconds left (never negative); reads the clock."""
        return max(0.0, self.seconds - self.watch.elapsed())

    def expired(self):
        return self.remaining() <= 0

    def sleep_for(self, cap=SLICE):
        """How long the caller may sleep before reading the clock again:
        what remains, at most ``cap`` and at most SLICE, and at least
        GRAIN while anything remains.  Python 2's clock moves in jiffies
        (10 ms at USER_HZ 100) while the float sum of the steps leaves
        nanoseconds: without the grain the last tick of a wait spins,
        each turn a xenstore read."""
        left = self.remaining()
        if left <= 0:
            return 0.0
        return max(GRAIN, min(cap, SLICE, left))
