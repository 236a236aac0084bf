"""Which domains have a handover under way.

A domain object is handed over at most once at a time: a second
``xm migrate`` (or ``xm save``) of it must be refused, or its stock
failure path would resume the domain while the first migration's target
may already run it.  The entry is also how ``_releaseDevices(force=True)``
and ``testDeviceComplete(io_done=True)``, called on the domain object as
the 2008 interface has it, find the handover's captured devices and its
drain budget.
"""

import threading

__all__ = ["claim", "release", "lookup"]

_lock = threading.Lock()
# id(dominfo) -> (dominfo, handover); the domain object is kept so that
# its id cannot be reused while the entry exists.
_handovers = {}


def claim(dominfo, handover):
    """Register ``handover`` for ``dominfo``; False if one is under way."""
    _lock.acquire()
    try:
        if id(dominfo) in _handovers:
            return False
        _handovers[id(dominfo)] = (dominfo, handover)
        return True
    finally:
        _lock.release()


def release(dominfo, handover):
    """Forget ``handover``; a no-op when it is not the registered one."""
    _lock.acquire()
    try:
        entry = _handovers.get(id(dominfo))
        if entry is not None and entry[1] is handover:
            del _handovers[id(dominfo)]
    finally:
        _lock.release()


def lookup(dominfo):
    """The handover under way for ``dominfo``, or None."""
    _lock.acquire()
    try:
        entry = _handovers.get(id(dominfo))
    finally:
        _lock.release()
    if entry is None:
        return None
    return entry[1]
