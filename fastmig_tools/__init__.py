"""xend-fastmig tools (Python 3): the command, xenstore stand-ins, backend
models, the rehearsal and the patch tool.  See docs/architecture.md."""
# One version for the project: the in-xend package's, which the patch
# series carries into xend.
from xend_fastmig import __version__

__all__ = ["__version__"]
