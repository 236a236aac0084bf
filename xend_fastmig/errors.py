"""The errors the handover raises: one root, one class per failure."""

__all__ = ["FastMigError", "DrainTimeout", "TargetFailed"]


class FastMigError(Exception):
    """Root of every error this package raises on purpose."""


class DrainTimeout(FastMigError):
    """Block backends did not confirm their drain before the deadline.

    ``busy`` lists the devices still busy, as ``"class/devid"`` strings, so
    the log line names what an administrator has to look at.
    """

    def __init__(self, busy, timeout):
        self.busy = list(busy)
        self.timeout = timeout
        FastMigError.__init__(
            self, "block backends still busy after %.1f s: %s"
            % (timeout, ", ".join(self.busy)))


class TargetFailed(FastMigError):
    """The target reported a failure (or hung up) before it was released.

    Raised before anything of the source domain was released, so the stock
    failure path can resume the source with its devices intact.
    """

    def __init__(self, reason):
        self.reason = reason
        FastMigError.__init__(self, "migration target failed: %s" % reason)

