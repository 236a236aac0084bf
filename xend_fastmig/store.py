"""The handle through which the handover reaches xenstore.

The core never imports xend's xenstore modules itself: it is given an
``XendStore`` holding xend's own ``xstransact`` and ``xswatch`` classes
inside xend, and stand-ins with the same behaviour in tests and in the
rehearsal.  So the code that ships is the code that is tested.
"""

__all__ = ["XendStore", "xend_store", "domain_path", "backend_root",
           "frontend_root"]


class XendStore:
    """xend's xenstore API: ``xstransact`` and ``xswatch`` (may be None).

    ``xswatch`` None means watches are unavailable; waits then poll.
    ``read`` (optional) reads one node outside any transaction: one round
    trip to xenstored where ``xstransact.Read`` takes three, and the drain
    wait's confirmations sit on the blackout's critical path.
    """

    def __init__(self, xstransact, xswatch=None, read=None):
        self.xstransact = xstransact
        self.xswatch = xswatch
        self._read = read

    def read(self, path):
        """The value at ``path``, or None when it does not exist."""
        if self._read is None:
            return self.xstransact.Read(path)
        return self._read(path)


def xend_store():
    """The store handle of the running xend (only works inside xend)."""
    from xen.xend.xenstore.xstransact import xstransact
    from xen.xend.xenstore.xswatch import xswatch
    from xen.xend.xenstore.xsutil import xshandle

    def read(path):
        return xshandle().read("", path)
    return XendStore(xstransact, xswatch, read)


def domain_path(domid):
    return "/local/domain/%s" % domid


def frontend_root(dompath, devclass):
    return "%s/device/%s" % (dompath, devclass)


def backend_root(backend_domid, devclass, domid):
    return "/local/domain/%s/backend/%s/%s" % (backend_domid, devclass, domid)
