"""How long this process could not run, so that a deadline check does not
charge it to the handover.

The deadlines invariant (I6) compares wall-clock seconds with the sum of
the handover's deadlines.  On a loaded machine (another process has the
CPUs), or while some thread of this process keeps the GIL, every step of
a handover waits for its turn: a run whose waits all kept their deadlines
then overruns its budget, and the invariant flags a machine, not a bug.

A ``StallMeter``'s thread asks to wake every ``period``.  Whatever it
wakes later than that, beyond ``threshold`` (the ordinary jitter of a
timed wait), is time in which it could not run; ``stalled(start, end)``
sums those gaps within a window, and a budget adds them.

What it cannot tell apart: a thread of the code under test that spins
holding the GIL delays the meter as much as a loaded machine does, so a
busy-wait in the handover is excused, not flagged, by I6.  The drain
wait's tests pin that it is event driven (``tests/unit/test_drain.py``).
"""
from __future__ import annotations

import threading
import time

__all__ = ["StallMeter"]


class StallMeter:
    """Records the gaps in which this process's threads could not run."""

    PERIOD = 0.005
    THRESHOLD = 0.002

    def __init__(self, period: float = PERIOD,
                 threshold: float = THRESHOLD) -> None:
        self.period = period
        self.threshold = threshold
        # (when the meter should have woken, when it did), in order.
        self._gaps: list[tuple[float, float]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "StallMeter":
        self._thread = threading.Thread(target=self._run,
                                        name="stall-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            due = time.monotonic() + self.period
            if self._stopping.wait(self.period):
                return
            woke = time.monotonic()
            if woke - due > self.threshold:
                self._gaps.append((due, woke))

    def stalled(self, start: float, end: float) -> float:
        """Seconds of the gaps that fall within ``[start, end]``
        (``time.monotonic()`` values)."""
        total = 0.0
        for due, woke in list(self._gaps):
            overlap = min(end, woke) - max(start, due)
            if overlap > 0:
                total += overlap
        return total
