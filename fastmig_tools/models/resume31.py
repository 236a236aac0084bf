"""Xen 3.1's ``XendDomainInfo.resumeDomain``, the order of its steps, for
the stand-ins that play it: the model (``domain.ModelDomainInfo``) and the
unit tests' fake (``tests/unit/fakes.py``, which runs on Python 2.7 as well
as 3, so this module keeps to syntax both understand).

Each stand-in brings its own steps (methods named as xend's) and its own
``xc_domain_resume(fast)``; this holds the one thing they must agree on:
when the resume is fast, and what follows in which order otherwise.
"""

__all__ = ["resume_domain"]


def resume_domain(dominfo, devices_released=False):
    """Run 3.1's resume on ``dominfo``; return ``"fast"`` or ``"recreate"``.

    Fast (``SUSPEND_CANCEL``: the guest resumes on the devices it has)
    unless the guest's kernel lacks the note or the handover released its
    block devices (the series' hunk: ``devices_released``).  Otherwise
    every device is released, waited for and re-created first.  Raises
    what a step raised; 3.1 logs it and leaves the guest suspended.  As
    3.1's libxc, resuming an HVM guest without its cooperation fails.
    """
    fast = bool(dominfo.info.get_notes().get("SUSPEND_CANCEL"))
    if devices_released:
        fast = False
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
    dominfo.xc_domain_resume(fast)
    if not fast and dominfo.info.is_hvm():
        raise RuntimeError("Cannot resume uncooperative HVM guests")
    if fast:
        return "fast"
    return "recreate"
