"""Stand-in for Xen 3.1's ``xen.lowlevel.acm`` (tools/python/xen/lowlevel/acm/acm.c).

The C module talks to the hypervisor's ACM hypercall; a hypervisor built
without ACM (the default for 3.1) fails those calls, which xend's
``xen.util.security`` reads as "no policy" ("INACTIVE").  This stand-in
answers the same way.  Python 2.7, inside xend.
"""


class error(Exception):
    pass


def policy():
    raise error("ACM hypercall failed: no ACM in this hypervisor")


def getssid(*args, **kwargs):
    raise error("ACM hypercall failed: no ACM in this hypervisor")


def getdecision(*args, **kwargs):
    raise error("ACM hypercall failed: no ACM in this hypervisor")
