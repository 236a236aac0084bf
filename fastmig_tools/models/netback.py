"""Network backends as a Xen 3.1 dom0 runs them: netback + vif hotplug.

Reduced to its teardown: the xenbus backend device (watches, frontend
states, unregister, udev's cleanup: ``xenbus_backend.XenbusBackend``) and
no traffic, so nothing is in flight and its teardown waits for nothing.
Enough for ``testvifsComplete`` to see vif backends go away.
"""
from __future__ import annotations

from fastmig_tools.models.xenbus_backend import XenbusBackend

__all__ = ["ClassicNetback"]


class ClassicNetback(XenbusBackend):
    """3.1 netback + vif hotplug on one vif: no requests, never drains.

    The rehearsal reads every backend actor alike, so it answers the
    block actors' questions about in-flight work: there is none.
    """

    driver = "netback"

    @property
    def requests(self) -> list:
        return []

    def pending(self) -> int:
        return 0

    def set_suspend_time(self, t: float) -> None:
        """Nothing of netback's is timed from the suspend."""
