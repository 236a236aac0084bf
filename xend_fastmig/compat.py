"""The few helpers that let one source run on Python 2.4 and on Python 3."""

import errno
import os
import select
import sys

__all__ = ["to_bytes", "to_text", "write_all", "select_readable"]

try:
    _bytes_type = bytes
except NameError:
    _bytes_type = str


def to_bytes(data):
    """``data`` as bytes: unchanged on Python 2, UTF-8 on Python 3."""
    if isinstance(data, _bytes_type):
        return data
    return data.encode("utf-8")


def to_text(data):
    """``data`` as the native str: unchanged on Python 2."""
    if isinstance(data, str):
        return data
    return data.decode("latin-1")


def write_all(fd, data):
    """Write every byte of ``data`` to ``fd`` (os.write may write less)."""
    data = to_bytes(data)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def select_readable(fd, timeout):
    """True when ``fd`` is readable within ``timeout`` seconds.

    A signal interrupting the select (Python 2 raises EINTR) counts as "not
    yet"; the caller loops on its own deadline.
    """
    try:
        ready = select.select([fd], [], [], max(0, timeout))[0]
    except select.error:
        if sys.exc_info()[1].args[0] == errno.EINTR:
            return False
        raise
    return len(ready) > 0
