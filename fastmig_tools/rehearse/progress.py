"""The progress line of long work (runs of the rehearsal, the matrix, the
benchmarks) on stderr.

On a terminal (or when asked with ``live=True``) one line is redrawn in
place, and a background ticker redraws it every ``interval`` seconds
while a run is in progress, so that the clock moves during a 30 s run.
Off a terminal each completed step prints one line, so that a log shows
what finished when.  Once a step has finished, the line also shows an ETA
from the steps done so far.
"""
from __future__ import annotations

import sys
import threading
import time

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``75.2`` → ``"1m15s"``; ``4.2`` → ``"4s"``; ``3725`` → ``"1h02m"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % (seconds // 60, seconds % 60)
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)


class Progress:
    """A one-line progress bar on ``stream`` (stderr); silent if disabled.

    ``update(label)`` says what runs now, ``step(label)`` that one step
    finished, ``close()`` ends the line and stops the ticker (call it in a
    ``finally``).
    """

    def __init__(self, total: int, stream=None, enabled: bool = True,
                 width: int = 30, live: bool | None = None,
                 interval: float = 1.0, clock=time.monotonic):
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 0
        self.width = width
        self.clock = clock
        self.started = clock()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.live = self.tty if live is None else live
        self.interval = interval
        self.label = ""
        self.step_started = self.started
        self.last_step_at = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = None
        self._closed = False

    # -- what the line says ------------------------------------------------

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Time left, from the mean of the steps done so far (None before
        the first one finished)."""
        if not self.done or self.last_step_at is None:
            return None
        now = self.clock() if now is None else now
        per_step = (self.last_step_at - self.started) / self.done
        left = per_step * (self.total - self.done) - (now - self.last_step_at)
        return max(left, 0.0)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        text = "rehearse [%s] %d/%d %s" % (
            bar, self.done, self.total,
            format_duration(now - self.started))
        if self.done < self.total:
            eta = self.eta_seconds(now)
            text += " ETA %s" % ("?" if eta is None else format_duration(eta))
        if self.label:
            text += "  " + self.label
            if self.done < self.total and self.live:
                text += " (%s)" % format_duration(now - self.step_started)
        return text

    # -- drawing -----------------------------------------------------------

    def _draw(self, final_line: bool = False) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\x1b[K" + self.line())
            elif final_line:
                self.stream.write(self.line() + "\n")
            else:
                return
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._draw()
            except (OSError, ValueError):    # the stream went away
                return

    def update(self, label: str, final: bool = False) -> None:
        """A step starts (``label`` says what); redraw the live line."""
        if not self.enabled:
            return
        self.label = label
        self.step_started = self.clock()
        if self.live and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick,
                                            name="progress-ticker",
                                            daemon=True)
            self._ticker.start()
        self._draw(final_line=final)

    def step(self, label: str) -> None:
        """One step finished."""
        self.done += 1
        self.last_step_at = self.clock()
        if not self.enabled:
            return
        self.label = label
        self._draw(final_line=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self.enabled and self.live:
            self.stream.write("\n")
            self.stream.flush()
