"""Stand-in for an HVM guest's qemu-dm device model (Xen 3.1's ioemu).

xend spawns it as ``qemu-dm -d DOMID [args...] [-loadvm FILE]`` (image.py,
HVMImageHandler.createDeviceModel).  What xend relies on:

* with ``-loadvm FILE`` it loads the device state xend wrote there;
* SIGUSR1 (image.destroy(suspend=True) at save): it writes its device
  state to the file its tree's xend will read back and exits; xend reaps
  it with waitpid.  That file is ``/tmp/xen.qemu-dm.<domid>`` in 3.1.0 and
  ``/var/lib/xen/qemu-save.<domid>`` from c056297fe7 on; the harness passes
  the tree's pattern in ``HARNESS_QEMU_SAVE`` (read from the tree's own
  XendCheckpoint.py);
* SIGKILL at destroy.

If the ``-loadvm`` file cannot be read it exits with status 1 (what the
real ioemu then does was not established here).  Note that the
2007-06-08 tree's restore writes ``/var/lib/xen/qemu-save.<domid>`` while
its image.py passes ``-loadvm /var/lib/xen/xen.qemu-dm.<domid>``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    domid = int(args[args.index("-d") + 1])
    loaded = None
    if "-loadvm" in args:
        path = args[args.index("-loadvm") + 1]
        try:
            with open(path) as f:
                loaded = json.load(f)
        except (OSError, ValueError) as e:
            # What the real ioemu does then was not established; the
            # stand-in refuses to run a guest whose device state is gone.
            sys.stderr.write("qemu-dm: cannot load VM state %s: %s\n" % (path, e))
            return 1
    pattern = os.environ.get("HARNESS_QEMU_SAVE", "/tmp/xen.qemu-dm.%d")
    saved = []

    def save(_signum, _frame):
        path = pattern % domid
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"qemu-dm": domid, "loaded": loaded, "t": time.time()}, f)
        saved.append(path)
        os._exit(0)

    signal.signal(signal.SIGUSR1, save)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
