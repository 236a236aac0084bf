"""Our fork of ``XendCheckpoint.save``: the save that can hand over.

With no migration socket, or for a checkpoint, it does what stock 3.1 does.
With the relocation socket of a live migration and fast migration enabled,
the end of the save is the handover (``xend_fastmig.handover``) instead of
"destroy, then wait, then let the caller close".
"""

import logging
import socket
import struct
import sys

from xend_fastmig.compat import write_all
from xend_fastmig.handover import Handover
from xend_fastmig.release import release_devices

__all__ = ["save", "SIGNATURE", "DEV_MIGRATE_STEP1", "DEV_MIGRATE_STEP2",
           "DEV_MIGRATE_STEP3", "abort_connection"]

log = logging.getLogger("xend")

SIGNATURE = "LinuxGuestRecord"
# xend's XendConstants values.
DEV_MIGRATE_STEP1 = 1
DEV_MIGRATE_STEP2 = 2
DEV_MIGRATE_STEP3 = 3


def abort_connection(sock):
    """Reset the relocation connection instead of closing it.

    A 3.1 target releases its copy on end-of-stream *or on any byte*, so a
    failed source must never close gracefully once the image is out: a
    reset makes the target's read fail, and its restore then destroys its
    copy.  Never raises.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
        sock.close()
    except Exception:
        log.warning("fastmig: resetting the relocation connection failed: "
                    "%s", sys.exc_info()[1])


def save(fd, dominfo, network, live, dst, checkpoint=False, sock=None,
         env=None):
    """Save ``dominfo`` to ``fd``; returns the HandoverReport, or None.

    On failure before the handover the source copy is resumed, as stock
    does; on the handover path the relocation connection is reset first (a
    3.1 target would otherwise start its copy on our close) and the error
    is raised to the caller.  Stock 3.1.0 swallows save errors; so does
    this function when there is no migration socket.
    """
    if env is None:
        from xend_fastmig.platform import xend_environment
        env = xend_environment()
    handing_over = sock is not None and not checkpoint \
        and env.options.enabled
    write_all(fd, SIGNATURE)
    config = env.platform.config_string(dominfo)
    domain_name = dominfo.getName()
    # The temporary name avoids a clash when migrating to localhost.
    dominfo.setName("migrating-" + domain_name)
    report = None
    try:
        dominfo.migrateDevices(network, dst, DEV_MIGRATE_STEP1, domain_name)
        write_all(fd, struct.pack("!i", len(config)))
        write_all(fd, config)
        hvm = dominfo.info.is_hvm()

        def suspend():
            log.debug("Suspending %d ...", dominfo.getDomid())
            dominfo.shutdown("suspend")
            dominfo.waitForShutdown()
            dominfo.migrateDevices(network, dst, DEV_MIGRATE_STEP2,
                                   domain_name)
            log.info("Domain %d suspended.", dominfo.getDomid())
            dominfo.migrateDevices(network, dst, DEV_MIGRATE_STEP3,
                                   domain_name)
            if hvm:
                # Makes the device model save its state and exit.
                release_devices(dominfo, env.store, suspend=True)

        env.platform.run_xc_save(fd, dominfo, live, hvm, suspend)
        if hvm:
            env.platform.write_device_model_state(fd, dominfo.getDomid())

        if checkpoint:
            dominfo.resumeDomain()
        elif handing_over:
            report = Handover(dominfo, sock, env).run()
        else:
            dominfo.destroyDomain()
            dominfo.testDeviceComplete()
        _restore_name(dominfo, domain_name)
    except Exception:
        exc = sys.exc_info()[1]
        log.exception("Save failed on domain %s (%s).", domain_name,
                      dominfo.getDomid())
        if handing_over:
            abort_connection(sock)
        dominfo.resumeDomain()
        log.debug("XendCheckpoint.save: resumeDomain")
        _restore_name(dominfo, domain_name)
        if handing_over:
            raise exc
    return report


def _restore_name(dominfo, domain_name):
    try:
        dominfo.setName(domain_name)
    except Exception:
        # A clash arises when migrating to localhost; stock ignores it too.
        log.debug("Could not restore the name of domain %s: %s",
                  domain_name, sys.exc_info()[1])
