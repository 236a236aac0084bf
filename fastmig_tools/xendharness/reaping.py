"""Child processes of the harness that cannot outlive their parent.

Xen 3.1's hotplug scripts turn a failed ``xenstore-write`` inside their
``fatal`` into another ERR trap, which calls ``fatal`` again: once the
host's xenstored is gone, a script still running recurses without end,
growing by gigabytes.  So every harness child gets the kernel's parent-death
signal (it dies with whoever started it, even after a SIGKILL), and the
hotplug scripts also run under a memory limit.
"""
from __future__ import annotations

import ctypes
import resource
import signal

__all__ = ["die_with_parent", "script_limits"]

_PR_SET_PDEATHSIG = 1
# Far above what `block` or `xen-hotplug-cleanup` need (a few MB).
SCRIPT_MEMORY_BYTES = 256 << 20


# Looked up once, in the parent: between fork and exec a child of a
# threaded process must not dlopen (another thread may hold its lock).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL this child when its parent exits."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def script_limits() -> None:
    """``preexec_fn`` for a hotplug script: dies with its parent, and a
    runaway recursion hits the memory limit instead of the machine's."""
    die_with_parent()
    resource.setrlimit(resource.RLIMIT_AS,
                       (SCRIPT_MEMORY_BYTES, SCRIPT_MEMORY_BYTES))
