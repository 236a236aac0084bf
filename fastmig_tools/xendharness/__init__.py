"""Run a Xen 3.1 tree's real xend: two hosts on one machine.

Public API (Python 3)::

    from fastmig_tools.xendharness import TwoHosts, prepare_tree

    with TwoHosts("../shared/xen/3.1.0",
                  patches=[Path("p1.patch"), ...],       # source tree's patches
                  target_patches=None,                   # None: the same list
                  xend_config={"xend-fast-migration": "no"},
                  backend="classic",                     # or "shutdown-request", "hung"
                  target_backend=None,                   # None: the same flavour
                  destroy_seconds_per_gb=0.05) as pair:
        guest = pair.create_guest(disks=16, memory_mb=4096, devclass="vbd")  # or "tap", hvm=True
        pair.arm_inflight(guest, delay=0.3)     # writes in flight at the suspend
        pair.fail_unpause()                     # fault injection (see below)
        result = pair.migrate(guest, live=True) # XendDomain.domain_migrate
        result.ok, result.error, result.target_domid
        result.timings.gate, result.timings.blackout   # seconds
        pair.disk_verdict().clean / .stale
        pair.leftovers(keep_domids={"target": [result.target_domid]})
        pair.hypervisor_calls(pair.source)      # normalised xc call log

Also ``save(guest, path, checkpoint=False)``, ``restore(path, host=None)``,
``destroy(guest)``, ``shutdown(guest, "poweroff"|"reboot")``,
``domains(host)``, ``wait_running(host, domid)``; faults:
``fail_in_stream()``, ``fail_unpause()``, ``fail_hotplug()``,
``fail_save_after_suspend()``, ``kill_target_after_image()``.
``pair.source`` / ``pair.target`` are ``Host`` objects: ``call(op, **args)``
reaches the host's xend process (ops in py2/hostd.py), ``store_tree()``,
``backend_events()``, ``xend_log()``, ``processes()``, ``live_watches()``.

Pieces, one job each:

* build.py: copy a tree's tools/python + tools/examples, apply patches
  (``patch -p1 --fuzz=0``), build its xen.lowlevel.xs and ptsname for
  Python 2.7; cached outside the repository per tree and patch bytes.
* host.py: one host's processes (xenstored, xend on 2.7, dom0 backend,
  helper server).
* py2/hostd.py: the xend process (XendDomain + relocation server, and
  the control socket); py2/lowlevel/xc.py and acm.py: the hypervisor
  stand-ins; py2/guestkernel.py: each guest's kernel (xenbus shutdown
  handler, blkfront and its recovery).
* helpers.py: xc_save / xc_restore, run by a server per host on behalf of
  helper_client.c, the binaries xend forks (a C process's quick exit, as
  Xen's own helpers'); devicemodel.py: qemu-dm.
* backend.py: dom0's blkback/blktap + udev running the tree's own hotplug
  scripts; disk.py: the shared images and the stale-block checker.
* harness.py: the two-host driver.
"""

from fastmig_tools.xendharness.build import HarnessUnavailable, prepare_tree
from fastmig_tools.xendharness.harness import (Guest, MigrationResult,
                                               Timings, TwoHosts)
from fastmig_tools.xendharness.host import Host, HostError

__all__ = ["TwoHosts", "Guest", "MigrationResult", "Timings", "Host",
           "HostError", "HarnessUnavailable", "prepare_tree"]
