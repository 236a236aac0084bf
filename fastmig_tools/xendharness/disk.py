"""The guests' shared disk images and the stale-block checker.

Each harness block device is backed by one real image file that both
hosts' backend processes write with ``pwrite``.  Every block holds a
self-describing record (slot, version, writer, CRC).  A version is issued
by the guest: v1 is the write in flight at the suspend (and blkfront's
re-issue of it at the target), v2 the newer write the resumed guest makes.
The checker reads the file back block by block: a block that does not hold
the newest version any backend was given is stale (silent corruption on a
real disk).
"""
from __future__ import annotations

import dataclasses
import os
import struct
import zlib

__all__ = ["BLOCK_SIZE", "SLOTS", "create_image", "write_block", "read_block",
           "DiskVerdict", "check_images"]

BLOCK_SIZE = 4096
SLOTS = 32            # one 3.1 blkif ring's worth of requests
_MAGIC = b"XHBLOCK1"
_HEAD = struct.Struct("!8sII32s")     # magic, slot, version, writer


def _record(slot: int, version: int, writer: str) -> bytes:
    head = _HEAD.pack(_MAGIC, slot, version, writer.encode()[:32].ljust(32, b"\0"))
    body = (head + b"\0" * BLOCK_SIZE)[:BLOCK_SIZE - 4]
    return body + struct.pack("!I", zlib.crc32(body))


def create_image(path: str, slots: int = SLOTS) -> None:
    with open(path, "wb") as f:
        f.write(b"".join(_record(s, 0, "setup") for s in range(slots)))


def write_block(path: str, slot: int, version: int, writer: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, _record(slot, version, writer), slot * BLOCK_SIZE)
    finally:
        os.close(fd)


def read_block(path: str, slot: int):
    """(version, writer) of the block, or None if unreadable."""
    with open(path, "rb") as f:
        f.seek(slot * BLOCK_SIZE)
        data = f.read(BLOCK_SIZE)
    if len(data) != BLOCK_SIZE:
        return None
    body, crc = data[:-4], struct.unpack("!I", data[-4:])[0]
    if zlib.crc32(body) != crc:
        return None
    magic, s, version, writer = _HEAD.unpack_from(body)
    if magic != _MAGIC or s != slot:
        return None
    return version, writer.rstrip(b"\0").decode()


@dataclasses.dataclass
class DiskVerdict:
    blocks_checked: int
    stale: list          # (file, slot, newest issued, found, landings)

    @property
    def clean(self) -> bool:
        return not self.stale

    def summary(self) -> str:
        return "clean" if self.clean else "CORRUPT (%d stale)" % len(self.stale)


def check_images(images, backend_events) -> DiskVerdict:
    """Compare every touched block with the newest version dispatched.

    ``backend_events``: the backend processes' log entries of both hosts
    (``dispatch`` and ``landed`` events carry file, slot, version)."""
    newest: dict = {}
    landings: dict = {}
    for e in backend_events:
        if e.get("event") == "dispatch":
            key = (e["file"], int(e["slot"]))
            newest[key] = max(newest.get(key, 0), int(e["version"]))
        elif e.get("event") == "landed":
            landings.setdefault((e["file"], int(e["slot"])), []).append(
                (e["t"], e["version"], e["writer"]))
    stale = []
    checked = 0
    for path in images:
        for slot in range(SLOTS):
            checked += 1
            want = newest.get((path, slot), 0)
            got = read_block(path, slot)
            if got is None or got[0] != want:
                stale.append((path, slot, want, got,
                              sorted(landings.get((path, slot), []))))
    return DiskVerdict(checked, stale)
