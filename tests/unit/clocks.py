"""Raw clocks for tests that simulate what a dom0's clock can do."""

__all__ = ["SteppedClock", "clock_t"]


def clock_t(seconds):
    """What Python 2's os.times()[4] reads on an i386 dom0 ``seconds``
    after jiffies started: a 32-bit signed clock_t at USER_HZ = 100."""
    ticks = int(round(seconds * 100)) % (1 << 32)
    if ticks >= 1 << 31:
        ticks = ticks - (1 << 32)
    return ticks / 100.0


class SteppedClock(object):
    """Advances ``step`` seconds per reading, from ``start``; ``jumps``
    maps a reading's number (1 = the first) to an extra step (a wall
    clock set forward or back); ``wrap``: read as a 32-bit clock_t."""

    def __init__(self, start, step, wrap=False, jumps=None):
        self.reading = start
        self.step = step
        self.wrap = wrap
        self.jumps = dict(jumps or {})
        self.count = 0

    def __call__(self):
        self.count = self.count + 1
        self.reading = self.reading + self.step \
            + self.jumps.get(self.count, 0)
        if self.wrap:
            return clock_t(self.reading)
        return self.reading
