"""The seam between the handover and what needs a hypervisor or xend.

``XendPlatform`` is the implementation used inside xend; the rehearsal and
the tests pass their own object with the same methods.  Everything outside
this module is the same code in both places.
"""

import logging
import os

from xend_fastmig.compat import write_all

__all__ = ["XendPlatform", "xend_environment", "QEMU_SIGNATURE"]

log = logging.getLogger("xend")

QEMU_SIGNATURE = "QemuDeviceModelRecord"
_DM_BATCH = 512


class XendPlatform:
    """The hypervisor and xend pieces of a save, as xend 3.1 does them.

    Imports xend lazily so that the rest of the package loads anywhere.
    """

    def config_string(self, dominfo):
        from xen.xend import sxp
        return sxp.to_string(dominfo.sxpr())

    def run_xc_save(self, fd, dominfo, live, hvm, on_suspend):
        import xen.util.auxbin
        from xen.xend.XendCheckpoint import forkHelper, XC_SAVE
        cmd = [xen.util.auxbin.pathTo(XC_SAVE), str(fd),
               str(dominfo.getDomid()), "0", "0",
               str(int(live) | (int(hvm) << 2))]
        log.debug("[xc_save]: %s", " ".join(cmd))

        def answer(line, tochild):
            if line == "suspend":
                on_suspend()
                tochild.write("done\n")
                tochild.flush()
        forkHelper(cmd, fd, answer, False)

    def write_device_model_state(self, fd, domid):
        write_all(fd, QEMU_SIGNATURE)
        path = "/tmp/xen.qemu-dm.%d" % domid
        state_fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                chunk = os.read(state_fd, _DM_BATCH)
                if not chunk:
                    break
                write_all(fd, chunk)
        finally:
            os.close(state_fd)
        os.remove(path)

    def domain_resume(self, domid, fast):
        from xen.xend.XendCheckpoint import xc
        xc.domain_resume(domid, fast)

    def resume_store(self, domid):
        from xen.xend.xenstore.xsutil import ResumeDomain
        ResumeDomain(domid)

    def error(self, message):
        """The exception xend's clients expect for a failed operation."""
        from xen.xend.XendError import XendError
        return XendError(message)

    def invalid_domain(self, domid):
        from xen.xend.XendError import XendInvalidDomain
        return XendInvalidDomain(str(domid))


def xend_environment():
    """The handover's environment inside the running xend."""
    from xen.xend import XendOptions
    from xend_fastmig.handover import Environment
    from xend_fastmig.options import FastMigrationOptions
    from xend_fastmig.store import xend_store
    return Environment(xend_store(), XendPlatform(),
                       FastMigrationOptions.from_xoptions(
                           XendOptions.instance()))
