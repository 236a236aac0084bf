"""The migration stream as the modelled hosts write and read it.

The outer frame is Xen 3.1's (``XendCheckpoint.save``/``restore``): the
``LinuxGuestRecord`` signature, ``!i`` config length, the sxp config, then
what ``xc_save`` writes.  That image is modelled as tagged records:

* ``PAGE``: a batch of memory pages (filler bytes; the size is modest);
* ``RING``: blkfront's shadow ring, i.e. the requests in flight at the
  suspend.  It lives in guest memory on a real host, which is how the
  restored guest knows what to re-issue;
* ``END\\0``: the end of the image (xc_save's terminator).
"""
from __future__ import annotations

import json
import os
import re
import socket
import struct

__all__ = ["SIGNATURE", "write_record", "read_image", "config_sxp",
           "parse_config", "read_exact", "StreamError", "PAGE", "RING", "END"]

SIGNATURE = b"LinuxGuestRecord"
PAGE = b"PAGE"
RING = b"RING"
END = b"END\0"
_RECORD = struct.Struct("!4sI")
_MAX_RECORD = 64 * 1024 * 1024


class StreamError(Exception):
    """The stream is not what a 3.1 source sends."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_record(fd: int, tag: bytes, payload: bytes = b"") -> None:
    _write_all(fd, _RECORD.pack(tag, len(payload)) + payload)


def read_exact(sock: socket.socket, size: int, what: str) -> bytes:
    """``size`` bytes from ``sock`` (it has a timeout), or StreamError."""
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 16))
        if not chunk:
            raise StreamError("not a valid guest state file: EOF reading %s"
                              % what)
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_image(sock: socket.socket) -> tuple[int, list[dict]]:
    """Read image records up to END: (bytes read, shadow ring entries)."""
    total = 0
    ring: list[dict] = []
    while True:
        tag, length = _RECORD.unpack(read_exact(sock, _RECORD.size,
                                                "an image record"))
        if length > _MAX_RECORD:
            raise StreamError("image record of %d bytes" % length)
        payload = read_exact(sock, length, "image record %r" % tag)
        total += _RECORD.size + length
        if tag == END:
            return total, ring
        if tag == RING:
            ring = json.loads(payload.decode("ascii"))
        elif tag != PAGE:
            raise StreamError("unknown image record %r" % tag)


def config_sxp(name: str, uuid: str, memory_mb: int, disks: list[str],
               domid: int) -> str:
    """The sxp a 3.1 source would send (the parts the target reads)."""
    devices = "".join(" (device (vbd (dev %s) (uname %s) (mode w)))"
                      % (dev, uname) for dev, uname in disks)
    return ("(domain (domid %d) (uuid %s) (name %s) (memory %d) (maxmem %d)"
            " (vcpus 1) (on_poweroff destroy)%s)"
            % (domid, uuid, name, memory_mb, memory_mb, devices))


_ATOM = r"\(%s ([^()\s]+)\)"


def parse_config(text: str) -> dict:
    """name, uuid, memory_mb and disks of a config from ``config_sxp``."""
    if not text.startswith("(domain") or text.count("(") != text.count(")"):
        raise StreamError("not a valid guest state file: config parse")
    found = {}
    for key in ("name", "uuid", "memory"):
        match = re.search(_ATOM % key, text)
        if match is None:
            raise StreamError("config has no %s" % key)
        found[key] = match.group(1)
    disks = re.findall(r"\(vbd \(dev ([^()\s]+)\) \(uname ([^()\s]+)\)", text)
    return {"name": found["name"], "uuid": found["uuid"],
            "memory_mb": int(found["memory"]), "disks": disks}
