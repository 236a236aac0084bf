"""The guest's disk: a real image file both modelled hosts write to.

Every block the rehearsal touches holds a self-describing record: which
block it belongs to, which *version* of the guest's data it is, and who
wrote it, sealed by a CRC.  Version 0 is the data before the migration,
version 1 the write that was in flight at the suspend (and its re-issue by
blkfront's recovery), version 2 the newer write the guest makes once it
runs again.  The checker reads the file back and compares every block with
the newest version the guest issued for it: anything older is a stale
block, which is silent corruption on a real disk.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import threading
import time
import zlib

__all__ = ["BLOCK_SIZE", "SLOTS_PER_DEVICE", "SharedDisk", "DiskVerdict",
           "BlockProblem", "block_of", "INITIAL", "INFLIGHT", "NEWER"]

BLOCK_SIZE = 4096
# A 3.1 blkif ring has 32 slots; one more for the optional slow write.
SLOTS_PER_DEVICE = 33

INITIAL = 0
INFLIGHT = 1
NEWER = 2

_MAGIC = b"FASTMIGB"
_HEADER = struct.Struct("!8sIIII16s")   # magic, device, slot, version, run, writer
_CRC = struct.Struct("!I")


def block_of(device: int, slot: int) -> int:
    """The block index of request ``slot`` of device ``device``."""
    return device * SLOTS_PER_DEVICE + slot


def _record(device: int, slot: int, version: int, run: int,
            writer: str) -> bytes:
    header = _HEADER.pack(_MAGIC, device, slot, version, run,
                          writer.encode("ascii")[:16].ljust(16, b"\0"))
    filler = (b"v%d " % version) * BLOCK_SIZE
    body = (header + filler)[:BLOCK_SIZE - _CRC.size]
    return body + _CRC.pack(zlib.crc32(body))


def _parse(data: bytes):
    """(device, slot, version, run, writer) or None for a torn/foreign block."""
    if len(data) != BLOCK_SIZE:
        return None
    body, crc = data[:-_CRC.size], _CRC.unpack(data[-_CRC.size:])[0]
    if zlib.crc32(body) != crc:
        return None
    magic, device, slot, version, run, writer = _HEADER.unpack_from(body)
    if magic != _MAGIC:
        return None
    return device, slot, version, run, writer.rstrip(b"\0").decode("ascii")


@dataclasses.dataclass
class BlockProblem:
    """One block that does not hold the guest's newest data."""

    block: int
    device: int
    slot: int
    expected_version: int
    found_version: int | None     # None: unreadable
    found_writer: str | None
    history: list                 # [(seconds since suspend, version, writer)]

    def describe(self) -> str:
        events = ", ".join("v%d by %s at %+.1f ms" % (v, w, t * 1000)
                           for t, v, w in self.history)
        found = ("unreadable" if self.found_version is None
                 else "v%d from the %s" % (self.found_version,
                                           self.found_writer))
        return ("dev%d block %d holds %s, newest is v%d (%s)"
                % (self.device, self.block, found, self.expected_version,
                   events))


@dataclasses.dataclass
class DiskVerdict:
    """What the checker found: clean, or the stale blocks."""

    blocks_checked: int
    problems: list[BlockProblem]

    @property
    def clean(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.clean:
            return "clean"
        return "CORRUPT (%d stale)" % len(self.problems)


class SharedDisk:
    """One image file, opened separately by each host that writes to it.

    Guarantees: every write lands with one ``pwrite`` of a whole block at
    the moment the caller makes it (no caching in between, so the order of
    landings is the order of calls); ``issued`` tracks the newest version
    the guest issued per block, ``landings`` every write that landed.
    ``close()`` closes the descriptors; the file belongs to the caller.
    """

    def __init__(self, path: str, devices: int, run: int = 0,
                 clock=time.monotonic):
        self.path = path
        self.devices = devices
        self.run = run
        self.clock = clock
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self.issued: dict[int, int] = {}
        self.landings: list[tuple[float, int, int, str]] = []
        self.epoch: float | None = None
        size = devices * SLOTS_PER_DEVICE * BLOCK_SIZE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            blocks = []
            for device in range(devices):
                for slot in range(SLOTS_PER_DEVICE):
                    blocks.append(_record(device, slot, INITIAL, run, "setup"))
            os.pwrite(fd, b"".join(blocks), 0)
            os.fsync(fd)
            assert os.fstat(fd).st_size == size
        finally:
            os.close(fd)
        for device in range(devices):
            for slot in range(SLOTS_PER_DEVICE):
                self.issued[block_of(device, slot)] = INITIAL

    def _fd(self, host: str) -> int:
        with self._lock:
            fd = self._fds.get(host)
            if fd is None:
                fd = os.open(self.path, os.O_RDWR)
                self._fds[host] = fd
            return fd

    def issue(self, device: int, slot: int, version: int) -> None:
        """The guest issued this write (it may land much later)."""
        block = block_of(device, slot)
        with self._lock:
            self.issued[block] = max(self.issued.get(block, INITIAL), version)

    def write(self, host: str, device: int, slot: int, version: int) -> float:
        """Land ``version`` of the block now, as written from ``host``."""
        block = block_of(device, slot)
        data = _record(device, slot, version, self.run, host)
        os.pwrite(self._fd(host), data, block * BLOCK_SIZE)
        t = self.clock()
        with self._lock:
            self.landings.append((t, block, version, host))
        return t

    def check(self) -> DiskVerdict:
        """Read the file back; every block must hold its newest version."""
        problems = []
        with open(self.path, "rb") as f:
            data = f.read()
        with self._lock:
            issued = dict(self.issued)
            landings = list(self.landings)
        epoch = self.epoch if self.epoch is not None else 0.0
        for block, expected in sorted(issued.items()):
            raw = data[block * BLOCK_SIZE:(block + 1) * BLOCK_SIZE]
            parsed = _parse(raw)
            device, slot = divmod(block, SLOTS_PER_DEVICE)
            if parsed is not None and parsed[:2] == (device, slot) \
                    and parsed[3] == self.run and parsed[2] == expected:
                continue
            history = [(t - epoch, v, w) for t, b, v, w in landings
                       if b == block]
            problems.append(BlockProblem(
                block, device, slot, expected,
                None if parsed is None or parsed[3] != self.run else parsed[2],
                None if parsed is None else parsed[4], history))
        return DiskVerdict(len(issued), problems)

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)
