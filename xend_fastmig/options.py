"""The handover's options, as an administrator sets them in xend-config.sxp.

    (xend-fast-migration yes)
    (xend-fast-migration-drain-timeout 30)
    (xend-fast-migration-verdict-timeout 120)

They are read through any object with ``get_config_string(name, default)``
(xend's ``XendOptions`` has it), so tests and the rehearsal inject their own.
A value that cannot be understood is logged and replaced by its default:
a typo in xend-config.sxp must never stop migrations.
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

_TRUE_WORDS = ("yes", "y", "true", "1", "on")
_FALSE_WORDS = ("no", "n", "false", "0", "off")


def _parse_bool(name, value, default):
    if value is None:
        return default
    if value is True or value is False:
        return value
    word = str(value).strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    log.warning("fastmig: option %s has value %r, not yes or no; using %s",
                name, value, default)
    return default


def _parse_seconds(name, value, default):
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        log.warning("fastmig: option %s has value %r, not a number of "
                    "seconds; using %s", name, value, default)
        return default
    if not seconds > 0:
        log.warning("fastmig: option %s must be positive, not %r; using %s",
                    name, value, default)
        return default
    return seconds


def _parse_port(name, value, default):
    if value is None:
        return default
    try:
        port = int(value)
    except (TypeError, ValueError):
        log.warning("fastmig: option %s has value %r, not a port; using %s",
                    name, value, default)
        return default
    if port <= 0 or port > 65535:
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
                 early_release=True):
        self.enabled = enabled
        self.early_release = early_release
        self.drain_timeout = drain_timeout
        self.verdict_timeout = verdict_timeout
        self.relocation_port = relocation_port

    def from_xoptions(cls, xoptions):
        """Read the options from an ``XendOptions``-like object."""
        def value(name):
            try:
                return xoptions.get_config_string(name, None)
            except Exception:
                log.warning("fastmig: could not read option %s: %s",
                            name, sys.exc_info()[1])
                return None
        return cls(
            enabled=_parse_bool(ENABLED, value(ENABLED), True),
            drain_timeout=_parse_seconds(DRAIN_TIMEOUT, value(DRAIN_TIMEOUT),
                                         DEFAULT_DRAIN_TIMEOUT),
            verdict_timeout=_parse_seconds(
                VERDICT_TIMEOUT, value(VERDICT_TIMEOUT),
                DEFAULT_VERDICT_TIMEOUT),
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
