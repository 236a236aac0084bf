"""The handover's environment inside the running xend.

Everything that needs xend's own modules or the hypervisor is reached
from here, imported lazily, so that the rest of the package loads (and is
tested) anywhere; tests and the rehearsal pass their own ``Environment``.
"""

__all__ = ["XendPlatform", "xend_environment"]


class XendPlatform:
    """What the handover asks of the hypervisor and of xend."""

    def domain_running(self, domid):
        """Is the domain there and neither shut down nor dying?"""
        from xen.xend.XendCheckpoint import xc
        if domid is None:
            return False
        infos = xc.domain_getinfo(domid, 1)
        if not infos or infos[0]["domid"] != domid:
            return False
        return not infos[0]["shutdown"] and not infos[0]["dying"]

    def error(self, message):
        """The exception xend's clients (``xm``) report as a failure."""
        from xen.xend.XendError import XendError
        return XendError(message)


def xend_environment():
    from xen.xend import XendOptions
    from xend_fastmig.handover import Environment
    from xend_fastmig.options import FastMigrationOptions
    from xend_fastmig.store import xend_store
    return Environment(xend_store(), XendPlatform(),
                       FastMigrationOptions.from_xoptions(
                           XendOptions.instance()))
