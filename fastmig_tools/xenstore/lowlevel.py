"""The ``xen.lowlevel.xs.xs()`` handle interface that every store provides.

Both Xen's own binding (reaching a real ``xenstored``) and
``embedded.EmbeddedXenstore.connect()`` hand out objects with the methods
of ``XsHandle`` below, with the binding's semantics (Xen 4.17,
``tools/python/xen/lowlevel/xs/xs.c``):

* Transactions are opaque ``str`` handles; ``""`` or ``"0"`` means none.
* Paths are ``str``; a path not starting with ``/`` or ``@`` is relative to
  ``/local/domain/0`` (every client here is dom0).  Invalid names (trailing
  or double ``/``, characters outside ``[A-Za-z0-9/_@-]``) raise EINVAL.
* Values are ``bytes`` out; ``write`` takes ``bytes`` or ``str``.
* ``read`` and ``ls`` of a missing node return None; ``rm`` of a missing
  node is a no-op; ``write``/``mkdir`` create missing parents (empty).
* ``transaction_end(t, abort)`` returns False on a conflict (EAGAIN).
* ``watch(path, token)``: ``token`` is any object, matched by identity;
  ``read_watch()`` blocks and returns ``(path, token)``; events of tokens no
  longer registered on this handle are dropped.
* Every other failure raises the binding's ``Error``: a ``RuntimeError``
  subclass whose ``args`` are ``(errno, strerror)``.  Code that must run
  on both stores catches ``RuntimeError`` and reads ``args[0]``.
* ``close()`` while another thread blocks in ``read_watch()`` is undefined
  for the real binding (libxenstore frees the handle): stop the reader
  first.  Any call after ``close()`` raises EINVAL.
"""

import os
from typing import Any, Protocol

__all__ = ["XsHandle", "XenstoreError", "error_errno", "NO_TRANSACTION",
           "IMPLICIT_ROOT"]

NO_TRANSACTION = ""
IMPLICIT_ROOT = "/local/domain/0"


class XenstoreError(RuntimeError):
    """What the embedded store raises: shaped like ``xen.lowlevel.xs.Error``."""

    def __init__(self, err: int, message: str | None = None):
        super().__init__(err, message or os.strerror(err))

    @property
    def errno(self) -> int:
        return self.args[0]


def error_errno(exc: BaseException) -> int | None:
    """The errno carried by a store error (either store), else None."""
    args = getattr(exc, "args", ())
    if isinstance(exc, RuntimeError) and args and isinstance(args[0], int):
        return args[0]
    return None


class XsHandle(Protocol):
    """One connection to xenstore (``xen.lowlevel.xs.xs()``)."""

    def read(self, t: str, path: str) -> bytes | None: ...
    def write(self, t: str, path: str, data: bytes | str) -> None: ...
    def ls(self, t: str, path: str) -> list[str] | None: ...
    def rm(self, t: str, path: str) -> None: ...
    def mkdir(self, t: str, path: str) -> None: ...
    def get_permissions(self, t: str, path: str) -> list[dict]: ...
    def set_permissions(self, t: str, path: str, perms: list[dict]) -> None: ...
    def watch(self, path: str, token: Any) -> None: ...
    def unwatch(self, path: str, token: Any) -> None: ...
    def read_watch(self) -> tuple[str, Any]: ...
    def check_watch(self) -> tuple[str, Any] | None: ...
    def fileno(self) -> int: ...
    def transaction_start(self) -> str: ...
    def transaction_end(self, t: str, abort: bool = False) -> bool: ...
    def get_domain_path(self, domid: int) -> str: ...
    def close(self) -> None: ...

