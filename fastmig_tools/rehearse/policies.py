"""The source side of a migration under each policy.

``fastmig`` runs the project's own handover inside a model of the patched
save (``fastmig_tools.models.patched_save``), ``fastmig-late`` the same
with ``(xend-fast-migration-early-release no)``: the block devices are
released only once the image is sent; the
others are small models of what their code does once the image is sent,
quirks included, behind a shared front that does what 3.1's
``XendDomain.domain_migrate`` and the first part of
``XendCheckpoint.save`` do (connect, ``receive``, read one reply, send the
signature, config and image, suspending the guest for the last round).
"""
from __future__ import annotations

import socket
import struct
import time

from fastmig_tools.rehearse.stream import SIGNATURE

__all__ = ["run_policy", "TAILS", "stock_tail", "patch2008_tail",
           "xen41_tail"]

DEV_MIGRATE_STEP1, DEV_MIGRATE_STEP2, DEV_MIGRATE_STEP3 = 1, 2, 3
# XendDomainInfo.MIGRATE_TIMEOUT in 3.1 (the 2008 patch kept it).
MIGRATE_TIMEOUT = 30.0


def stock_tail(sock, dominfo, store):
    """Xen 3.1.0 as released (xen@3.1.0-branched).

    ``XendCheckpoint.save`` calls ``dominfo.destroyDomain()``, which takes
    the memory-proportional ``xc.domain_destroy`` and then clears
    ``domid``; its ``testDeviceComplete()`` therefore lists
    ``/local/domain/0/backend/vbd/None`` and returns at once (the fix,
    xen commit 1a46ed999b, came after 3.1.0 branched).  Only then does
    ``domain_migrate`` close the socket: the target's EOF gate.  The verdict
    is never read.
    """
    dominfo.destroyDomain()
    dominfo.testDeviceComplete()
    sock.close()


def patch2008_tail(sock, dominfo, store, sleep=time.sleep):
    """The 2008 xen-devel patch as posted (why deleting the backend
    directory loses the drain signal: docs/design.md, "Steps", step b).

    ``_releaseDevices(force=True)`` makes ``DevController.destroyDevice``
    delete each device's backend directory from xend (throwing away the
    only drain signal a 3.1 blkback gives), then its wait loops over
    ``deviceIDs()`` -- the backend directories it has just deleted --
    reading ``shutdown-done`` (which 3.1 blkback never writes) and
    sleeping 100 ms per device still listed; none are, so it returns at
    once.  Then the socket is shut down and only then is the domain
    destroyed.
    """
    xst = store.xstransact
    for devclass in xst.List("%s/device" % dominfo.dompath):
        controller = dominfo.getDeviceController(devclass)
        for devid in xst.List("%s/device/%s" % (dominfo.dompath, devclass)):
            try:
                controller.destroyDevice(devid, True)
            except Exception:   # the patch logged and went on
                pass
    started = time.monotonic()
    controller = dominfo.getDeviceController("vbd")
    while True:
        busy = [devid for devid in controller.deviceIDs()
                if xst.Read("%s/%s" % (controller.backendRoot(), devid),
                            "shutdown-done") is None]
        for _devid in busy:
            sleep(0.1)
        if not busy or time.monotonic() - started >= MIGRATE_TIMEOUT:
            break
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    dominfo.destroyDomain()
    sock.close()


def xen41_tail(sock, dominfo, store):
    """Upstream Xen 4.1 (commit 0f114a5181, 2010), live migration.

    ``save`` shuts the socket down and closes it before ``destroy()`` and
    ``testDeviceComplete()``: the target starts at once, with no wait for
    the source's block backends.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
    dominfo.destroyDomain()
    dominfo.testDeviceComplete()


TAILS = {"stock": stock_tail, "patch2008": patch2008_tail,
         "xen41": xen41_tail}


def _modelled_migrate(policy, dominfo, port, platform, store, timeout):
    """3.1's domain_migrate + the front of save, then ``policy``'s tail.

    Exceptions before the tail resume the source copy, as 3.1's save does.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(b"receive\n")
        sock.recv(80)                 # (ready receive), never checked in 3.1
        fd = sock.fileno()
        name = dominfo.getName()
        dominfo.setName("migrating-" + name)
        try:
            dominfo.migrateDevices(True, "127.0.0.1", DEV_MIGRATE_STEP1, name)
            config = platform.config_string(dominfo).encode("utf-8")
            sock.sendall(SIGNATURE + struct.pack("!i", len(config)) + config)

            def suspend():
                dominfo.shutdown("suspend")
                dominfo.waitForShutdown()
                dominfo.migrateDevices(True, "127.0.0.1", DEV_MIGRATE_STEP2,
                                       name)
                dominfo.migrateDevices(True, "127.0.0.1", DEV_MIGRATE_STEP3,
                                       name)
            platform.run_xc_save(fd, dominfo, True, False, suspend)
            TAILS[policy](sock, dominfo, store)
        except Exception:
            dominfo.resumeDomain()
            raise
        finally:
            try:
                dominfo.setName(name)
            except Exception:
                pass
    finally:
        sock.close()
    return None


def run_policy(policy, dominfo, port, platform, store, options, log=None,
               timeout=300.0, wrap_socket=None, failures=None):
    """Migrate ``dominfo`` to 127.0.0.1:``port`` under ``policy``.

    Returns the core's ``HandoverReport`` for fastmig (whose patched save
    raises ``MigrationFailed`` unless the guest ended at the target: it is
    appended to ``failures``, the report says how it ended), None
    otherwise.  ``wrap_socket``: fastmig's relocation socket goes through
    it (a fault injector's seam).
    """
    if policy in ("fastmig", "fastmig-late"):
        from xend_fastmig.handover import Environment
        from fastmig_tools.models.patched_save import (
            MigrationFailed, domain_migrate)
        env = Environment(store, platform, options, log=log)
        handovers = []
        try:
            domain_migrate(dominfo, "127.0.0.1", port, live=True, env=env,
                           platform=platform, handovers=handovers,
                           timeout=timeout, wrap_socket=wrap_socket)
        except MigrationFailed as exc:
            if failures is not None:
                failures.append(exc)
        if handovers:
            return handovers[0].report
        return None
    return _modelled_migrate(policy, dominfo, port, platform, store, timeout)
