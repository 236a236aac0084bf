"""Resuming the source copy of a domain whose migration did not complete."""

import logging

__all__ = ["resume_domain", "supports_fast_resume"]

log = logging.getLogger("xend")


def supports_fast_resume(dominfo):
    """Can the guest resume on its existing device connections?"""
    try:
        return bool(dominfo.info.get_notes().get("SUSPEND_CANCEL"))
    except Exception:
        return False


def resume_domain(dominfo, platform, allow_fast=True):
    """Resume the suspended domain; returns True when it was resumed.

    Like stock's ``resumeDomain`` but with ``allow_fast=False`` it always
    re-creates the devices: after the handover released them, a
    SUSPEND_CANCEL "fast" resume would bring the guest back on device
    connections that no longer exist.  Exceptions propagate: the caller
    must log that the guest could not be brought back.
    """
    domid = dominfo.getDomid()
    if domid is None:
        return False
    fast = allow_fast and supports_fast_resume(dominfo)
    if not fast:
        dominfo._releaseDevices()
        dominfo.testDeviceComplete()
        dominfo.testvifsComplete()
        dominfo._resetChannels()
        dominfo._removeDom("control/shutdown")
        dominfo._removeDom("device-misc/vif/nextDeviceID")
        dominfo._createChannels()
        dominfo._introduceDomain()
        dominfo._storeDomDetails()
        dominfo._createDevices()
    if fast:
        platform.domain_resume(domid, 1)
    else:
        platform.domain_resume(domid, 0)
    platform.resume_store(domid)
    return True
