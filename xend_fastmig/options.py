"""The handover's options, as an administrator sets them in xend-config.sxp.

    (xend-fast-migration yes)
    (xend-fast-migration-drain-timeout 30)
    (xend-fast-migration-verdict-timeout 120)

They are read through an ``XendOptions``-like object: its getters
``get_xend_fast_migration()``, ``get_xend_fast_migration_drain_timeout()``,
``get_xend_fast_migration_verdict_timeout()`` and
``get_xend_relocation_port()`` where it has them (they return the raw
configured value), else ``get_config_string(name, default)``; tests and the
rehearsal inject their own.  Every check is made here.  A value that cannot
be understood, is not finite or is out of its range is logged (one line)
and replaced by its default: a typo in xend-config.sxp must never stop
migrations, nor make a wait endless or a verdict unreadable.
"""

import logging
import sys

__all__ = ["FastMigrationOptions", "ENABLED", "DRAIN_TIMEOUT",
           "VERDICT_TIMEOUT", "RELOCATION_PORT"]

log = logging.getLogger("xend")

ENABLED = "xend-fast-migration"
EARLY_RELEASE = "xend-fast-migration-early-release"
DRAIN_TIMEOUT = "xend-fast-migration-drain-timeout"
VERDICT_TIMEOUT = "xend-fast-migration-verdict-timeout"
RELOCATION_PORT = "xend-relocation-port"

# Stock xend gives block backends MIGRATE_TIMEOUT = 30 s to go away; slow
# or failing-over storage needs that long, and we never wait less than
# stock would before falling back to stock's own order.
DEFAULT_DRAIN_TIMEOUT = 30.0
# After the go, the target still runs completeRestore and waitForDevices,
# whose device timeout in 3.1 is DEVICE_CREATE_TIMEOUT = 100 s, before it
# answers: a shorter wait would call healthy migrations "unknown".
DEFAULT_VERDICT_TIMEOUT = 120.0
DEFAULT_RELOCATION_PORT = 8002
# A resume after a failed target must first see the old backends gone;
# when the drain budget is spent, this much more is granted for it.  Not
# an xend-config.sxp option: the constructor takes it so that tests and
# the rehearsal can scale it down with the other deadlines.
DEFAULT_RESUME_GRACE = 5.0

# The ranges, both ends included.
#
# Drain timeout: the guest is paused while we wait, so every second is
# blackout.  Below 0.1 s not even a healthy blkback finishes its in-flight
# requests, every migration would take the (slower) stock order, and the
# value is most likely milliseconds typed as seconds.  Above 300 s, ten
# times stock's MIGRATE_TIMEOUT of 30 s, no storage failover is worth the
# guest's peers and watchdogs giving up on it; inf never ends at all.
MIN_DRAIN_TIMEOUT = 0.1
MAX_DRAIN_TIMEOUT = 300.0
# Verdict timeout: after the go the target runs completeRestore and
# waitForDevices, which may wait 3.1's DEVICE_CREATE_TIMEOUT of 100 s
# before it answers; giving up sooner calls a target that is about to say
# (err ...) "unknown" and destroys the only copy that could come back.
# Above 3600 s the source copy holds its memory, paused, for an hour on
# behalf of a target that will not answer; values such as 1e10 overflow
# select()'s timeval (the verdict read sleeps in slices now, but an hour
# bounds the migration thread all the same).
MIN_VERDICT_TIMEOUT = 100.0
MAX_VERDICT_TIMEOUT = 3600.0
MIN_PORT = 1
MAX_PORT = 65535

# XendOptions' getter of each option, used where it exists.
_GETTERS = {
    ENABLED: "get_xend_fast_migration",
    EARLY_RELEASE: "get_xend_fast_migration_early_release",
    DRAIN_TIMEOUT: "get_xend_fast_migration_drain_timeout",
    VERDICT_TIMEOUT: "get_xend_fast_migration_verdict_timeout",
    RELOCATION_PORT: "get_xend_relocation_port",
}

_TRUE_WORDS = ("yes", "y", "true", "1", "on")
_FALSE_WORDS = ("no", "n", "false", "0", "off")


def _parse_bool(name, value, default):
    if value is None:
        return default
    # str(True) is "True": booleans from a getter read as words too.
    word = str(value).strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    log.warning("fastmig: option %s has value %r, not yes or no; using %s",
                name, value, default)
    return default


def _is_finite(number):
    # Spelt out: Python 2.4 has no math.isinf/isnan, and its comparisons
    # with NaN depend on the platform.  inf - inf and NaN - NaN are NaN,
    # and NaN is the only value unequal to itself.
    difference = number - number
    return difference == difference


def _parse_seconds(name, value, default, lowest, highest):
    if value is None:
        return default
    if value is True or value is False:
        seconds = None
    else:
        try:
            seconds = float(value)
        except (TypeError, ValueError, OverflowError):
            seconds = None
    if seconds is None:
        log.warning("fastmig: option %s has value %r, not a number of "
                    "seconds; using %s", name, value, default)
        return default
    if not _is_finite(seconds):
        log.warning("fastmig: option %s has value %r, not a finite number "
                    "of seconds; using %s", name, value, default)
        return default
    if seconds < lowest or seconds > highest:
        log.warning("fastmig: option %s has value %r, outside %s..%s "
                    "seconds; using %s", name, value, lowest, highest,
                    default)
        return default
    return seconds


def _parse_port(name, value, default):
    if value is None:
        return default
    try:
        # Through str: int(True) and int(80.5) would pass, "True" and
        # "80.5" do not.
        port = int(str(value).strip())
    except (TypeError, ValueError, OverflowError):
        port = None
    if port is None:
        log.warning("fastmig: option %s has value %r, not a port; using %s",
                    name, value, default)
        return default
    if port < MIN_PORT or port > MAX_PORT:
        log.warning("fastmig: option %s out of range: %r; using %s",
                    name, value, default)
        return default
    return port


class FastMigrationOptions:
    """What the handover needs to know from the configuration.

    Guarantees: every attribute holds a usable value (defaults where the
    configuration is missing or garbled); reading never raises.
    """

    def __init__(self, enabled=True, drain_timeout=DEFAULT_DRAIN_TIMEOUT,
                 verdict_timeout=DEFAULT_VERDICT_TIMEOUT,
                 relocation_port=DEFAULT_RELOCATION_PORT,
                 early_release=True, resume_grace=DEFAULT_RESUME_GRACE):
        self.enabled = enabled
        self.resume_grace = resume_grace
        self.early_release = early_release
        self.drain_timeout = drain_timeout
        self.verdict_timeout = verdict_timeout
        self.relocation_port = relocation_port

    def from_xoptions(cls, xoptions):
        """Read the options from an ``XendOptions``-like object."""
        def value(name):
            getter = getattr(xoptions, _GETTERS[name], None)
            try:
                if getter is not None:
                    return getter()
                return xoptions.get_config_string(name, None)
            except Exception:
                log.warning("fastmig: could not read option %s: %s",
                            name, sys.exc_info()[1])
                return None
        return cls(
            enabled=_parse_bool(ENABLED, value(ENABLED), True),
            drain_timeout=_parse_seconds(
                DRAIN_TIMEOUT, value(DRAIN_TIMEOUT), DEFAULT_DRAIN_TIMEOUT,
                MIN_DRAIN_TIMEOUT, MAX_DRAIN_TIMEOUT),
            verdict_timeout=_parse_seconds(
                VERDICT_TIMEOUT, value(VERDICT_TIMEOUT),
                DEFAULT_VERDICT_TIMEOUT, MIN_VERDICT_TIMEOUT,
                MAX_VERDICT_TIMEOUT),
            relocation_port=_parse_port(
                RELOCATION_PORT, value(RELOCATION_PORT),
                DEFAULT_RELOCATION_PORT),
            early_release=_parse_bool(EARLY_RELEASE, value(EARLY_RELEASE),
                                      True))
    from_xoptions = classmethod(from_xoptions)

    def __repr__(self):
        return ("FastMigrationOptions(enabled=%r, early_release=%r, "
                "drain_timeout=%r, verdict_timeout=%r, relocation_port=%r)"
                % (self.enabled, self.early_release, self.drain_timeout,
                   self.verdict_timeout, self.relocation_port))
