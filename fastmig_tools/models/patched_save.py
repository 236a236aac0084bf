"""A model of Xen 3.1's ``save`` and ``domain_migrate`` as the series
patches them (``patches/0004-*``, ``patches/0005-*``).

The rehearsal and the property tests run the real handover
(``xend_fastmig.handover``) from here, called where and as the patched
xend calls it: ``begin`` right before save's ``try``, ``suspended`` once xc_save
was told ``done``, ``run`` in place of "destroy, then wait", ``failed`` in
place of save's ``resumeDomain``, ``finish`` at the end.  The hypervisor
side (xc_save, the device model) is the platform's; a platform with
``xc_save_told_done()`` hears when ``done`` is written (xc_save's last round
starts then, while the handler goes on).  The domain object is the
caller's (``fastmig_tools.models.domain.ModelDomainInfo``).
"""
from __future__ import annotations

import logging
import os
import socket
import struct

from xend_fastmig.handover import Environment, begin

__all__ = ["MigrationFailed", "save", "domain_migrate", "SIGNATURE"]

log = logging.getLogger("xend")

SIGNATURE = b"LinuxGuestRecord"
DEV_MIGRATE_STEP1, DEV_MIGRATE_STEP2, DEV_MIGRATE_STEP3 = 1, 2, 3


class MigrationFailed(RuntimeError):
    """The model's XendError: what ``xm migrate`` would print."""


class _HandoverPlatform:
    """The handover's platform seam over a model domain."""

    def __init__(self, dominfo):
        self.dominfo = dominfo

    def domain_running(self, domid):
        return (self.dominfo.getDomid() == domid
                and self.dominfo.state in ("running", "resumed"))

    def error(self, message):
        return MigrationFailed(message)


def _write(fd, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def save(fd, dominfo, network, live, dst, checkpoint=False, sock=None, *,
         env, platform, handovers=None):
    """3.1's save with the series' hunks.

    ``env`` is the handover's environment (store, options, log; its
    platform is replaced by one over ``dominfo``); ``platform`` runs
    xc_save and writes the device model's state.  ``handovers``, when
    given, receives the handover, so a caller can read its report even
    when ``finish`` raises ``MigrationFailed``.
    """
    _write(fd, SIGNATURE)
    config = platform.config_string(dominfo).encode("utf-8")
    domain_name = dominfo.getName()
    dominfo.setName("migrating-" + domain_name)
    # Right before the try, as in the hunk: failed() and finish() end it.
    handover = None
    if env.options.enabled:
        handover = begin(dominfo, sock, checkpoint, env=Environment(
            env.store, _HandoverPlatform(dominfo), env.options, env.log))
        if handover is not None and handovers is not None:
            handovers.append(handover)
    try:
        dominfo.migrateDevices(network, dst, DEV_MIGRATE_STEP1, domain_name)
        _write(fd, struct.pack("!i", len(config)) + config)
        hvm = dominfo.info.is_hvm()

        def on_suspend():
            dominfo.shutdown("suspend")
            dominfo.waitForShutdown()
            dominfo.migrateDevices(network, dst, DEV_MIGRATE_STEP2,
                                   domain_name)
            dominfo.migrateDevices(network, dst, DEV_MIGRATE_STEP3,
                                   domain_name)
            if hvm:
                dominfo._releaseDevices(True)
            # Here 3.1 writes "done" back to xc_save, a process of its
            # own: the last round is sent from now on, whatever xend does
            # next.
            told_done = getattr(platform, "xc_save_told_done", None)
            if told_done is not None:
                told_done()
            if handover:
                handover.suspended()

        platform.run_xc_save(fd, dominfo, live, hvm, on_suspend)
        if hvm:
            platform.write_device_model_state(fd, dominfo.getDomid())
        if checkpoint:
            dominfo.resumeDomain()
        elif handover:
            handover.run()
        else:
            dominfo.destroyDomain()
            dominfo.testDeviceComplete()
        _set_name(dominfo, domain_name)
    except Exception:
        log.exception("Save failed on domain %s (%s).", domain_name,
                      dominfo.getDomid())
        if handover:
            handover.failed()
        else:
            dominfo.resumeDomain()
        _set_name(dominfo, domain_name)
    if handover:
        handover.finish()


def _set_name(dominfo, name):
    try:
        dominfo.setName(name)
    except Exception:
        log.debug("could not restore the name %s", name)


def domain_migrate(dominfo, dst, port, live=True, *, env, platform,
                   handovers=None, timeout=300.0, wrap_socket=None):
    """3.1's domain_migrate with the series' hunk: the socket goes to save
    (through ``wrap_socket`` first if given: a fault injector's seam)."""
    sock = socket.create_connection((dst, port), timeout=timeout)
    sock.settimeout(None)
    if wrap_socket is not None:
        sock = wrap_socket(sock)
    sock.sendall(b"receive\n")
    sock.recv(80)
    save(sock.fileno(), dominfo, True, live, dst, sock=sock, env=env,
         platform=platform, handovers=handovers)
    sock.close()
