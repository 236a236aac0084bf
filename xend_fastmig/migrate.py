"""Our fork of ``XendDomain.domain_migrate``: it hands the socket to save."""

import logging
import socket
import sys

from xend_fastmig.checkpoint import abort_connection, save
from xend_fastmig.verdict import read_reply

__all__ = ["domain_migrate", "READY_TIMEOUT"]

log = logging.getLogger("xend")

DOM0_ID = 0
# How long the target may take to accept a "receive" request.
READY_TIMEOUT = 30.0


def domain_migrate(xd, domid, dst, live=False, resource=0, port=0,
                   env=None):
    """Migrate ``domid`` to ``dst``; returns the HandoverReport or None.

    Unlike stock, it checks that the target answered ``(ready receive)``
    before sending anything (nothing of the source is touched otherwise),
    and passes the socket itself to ``save`` so the handover can half-close
    it and read the verdict.  Raises the platform's XendError on failure.
    """
    if env is None:
        from xend_fastmig.platform import xend_environment
        env = xend_environment()
    platform = env.platform
    dominfo = xd.domain_lookup_nr(domid)
    if not dominfo:
        raise platform.invalid_domain(domid)
    if dominfo.getDomid() == DOM0_ID:
        raise platform.error("Cannot migrate privileged domain %s" % domid)
    dominfo.testMigrateDevices(True, dst)
    if live:
        # Shadow mode needs free memory.
        dominfo.checkLiveMigrateMemory()
    if port == 0:
        port = env.options.relocation_port

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.connect((dst, port))
    except socket.error:
        sock.close()
        raise platform.error("can't connect: %s" % (sys.exc_info()[1],))
    try:
        sock.sendall("receive\n".encode("ascii"))
        reply, reason = read_reply(sock, READY_TIMEOUT)
        if reply is None or not reply.startswith("(ready"):
            abort_connection(sock)
            raise platform.error("%s:%s refused the migration: %s"
                                 % (dst, port, reply or reason))
        report = save(sock.fileno(), dominfo, True, live, dst, sock=sock,
                      env=env)
    finally:
        sock.close()
    return report
