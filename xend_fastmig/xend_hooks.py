"""The entry points that the patched xend calls (see ``patches/``).

Each hook is imported lazily by a two-line hunk in xend, so a broken
installation of this package shows up as a clear error at the moment a
migration is attempted, not as a xend that fails to start.
"""

import logging
import sys

from xend_fastmig import drain, migrate, release
from xend_fastmig.options import FastMigrationOptions
from xend_fastmig.store import xend_store

__all__ = ["fast_migration_enabled", "domain_migrate", "release_devices",
           "test_device_complete"]

log = logging.getLogger("xend")


def _options():
    from xen.xend import XendOptions
    return FastMigrationOptions.from_xoptions(XendOptions.instance())


def fast_migration_enabled():
    """Is ``(xend-fast-migration yes)`` in force?  False if unreadable."""
    try:
        return _options().enabled
    except Exception:
        log.error("fastmig: cannot read xend's options (%s); using the "
                  "stock migration", sys.exc_info()[1])
        return False


def domain_migrate(xd, domid, dst, live, resource, port):
    """Returns None, as stock does: xend hands the return value to its
    XML-RPC server, which cannot marshal a report."""
    migrate.domain_migrate(xd, domid, dst, live, resource, port)


def release_devices(dominfo, suspend, force):
    return release.release_devices(dominfo, xend_store(), suspend, force)


def test_device_complete(dominfo, io_done):
    return drain.test_device_complete(dominfo, xend_store(), io_done,
                                      timeout=_options().drain_timeout)
