"""Stand-ins for Xen 3.1's ``xc_save`` and ``xc_restore`` helper binaries.

xend runs them through ``xen.util.auxbin.pathTo`` with the image fd as
their first argument (tools/xcutils/xc_save.c, xc_restore.c) and talks to
them over stdin/stdout:

* ``xc_save FD DOMID MAXIT MAXF FLAGS``: for a live save sends a first
  round of memory while the guest runs, then prints ``suspend`` and waits
  for ``done`` (xend has suspended the guest), then sends the rest and
  exits 0.  Non-live saves suspend first.
* ``xc_restore FD DOMID STORE_PORT CONSOLE_PORT HVM PAE APIC``: reads the
  image (exactly, leaving the fd at the byte after it), writes the guest's
  memory for DOMID, prints ``store-mfn N`` and, for PV, ``console-mfn N``.

The image is real bytes on the wire: a header, the guest's memory state
(the guest kernel's JSON, as the real image carries its pages) and filler
proportional to the guest's memory (``image_bytes_per_gb``).  The last
memory round, sent after xend's ``done`` (the guest suspended), takes at
least ``last_round_seconds`` (default 0: as fast as the pipe goes), as a
real xc_save's last round of dirty pages does.  Faults and knobs are
read from ``$HARNESS_HV_DIR/faults.json``; every helper run is logged to
``$HARNESS_HV_DIR/helpers.log``.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import time

MAGIC = b"HARNESSXENIMAGE1"
# Records after the magic: kind (1 byte) + length (8 bytes) + payload.
_RECORD = struct.Struct("!BQ")
PAGES, STATE, END = 1, 2, 0


def _hv_dir() -> str:
    return os.environ.get("HARNESS_HV_DIR", "/tmp/harness-hv")


def _faults() -> dict:
    try:
        with open(os.path.join(_hv_dir(), "faults.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _log(**entry) -> None:
    entry["t"] = time.time()
    with open(os.path.join(_hv_dir(), "helpers.log"), "a") as f:
        f.write(json.dumps(entry) + "\n")


def _memory(domid: int) -> dict:
    try:
        with open(os.path.join(_hv_dir(), "mem", str(domid))) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    parts = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("image truncated")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _filler_bytes(mem_kb: int, faults: dict) -> int:
    per_gb = int(faults.get("image_bytes_per_gb", 64 * 1024))
    return int(mem_kb / (1024.0 * 1024.0) * per_gb)


def _record(fd: int, kind: int, payload: bytes) -> None:
    _write_all(fd, _RECORD.pack(kind, len(payload)) + payload)


def save(argv: list[str]) -> int:
    fd, domid, flags = int(argv[0]), int(argv[1]), int(argv[4])
    live = bool(flags & 1)
    faults = _faults()
    _log(helper="xc_save", what="start", domid=domid, live=live)
    mem_kb = int(_memory(domid).get("mem_kb", 0))
    filler = _filler_bytes(mem_kb, faults)
    first = filler // 2 if live else 0
    _write_all(fd, MAGIC)
    if live:
        _record(fd, PAGES, b"\0" * first)      # round 1, guest running
    sys.stdout.write("suspend\n")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if answer.strip() != "done":
        _log(helper="xc_save", what="no-done", domid=domid, got=answer)
        return 1
    # The last round's clock starts at xend's "done": from here the source
    # xend's suspend handler (the early release) runs alongside it.
    last_round_end = time.time() + float(faults.get("last_round_seconds", 0))
    _log(helper="xc_save", what="suspended", domid=domid)
    if faults.get("save_fail_after_suspend"):
        _log(helper="xc_save", what="failed", domid=domid)
        return 1
    # The guest's state is read after the suspend: what it had in flight.
    _record(fd, PAGES, b"\0" * (filler - first))
    _record(fd, STATE, json.dumps(_memory(domid)).encode())
    left = last_round_end - time.time()
    if left > 0:
        time.sleep(left)
    _record(fd, END, b"")
    _log(helper="xc_save", what="sent", domid=domid, bytes=filler)
    return 0


def restore(argv: list[str]) -> int:
    fd, domid, hvm = int(argv[0]), int(argv[1]), int(argv[4])
    faults = _faults()
    _log(helper="xc_restore", what="start", domid=domid)
    state = None
    try:
        if _read_exact(fd, len(MAGIC)) != MAGIC:
            raise ValueError("not a harness image")
        while True:
            kind, length = _RECORD.unpack(_read_exact(fd, _RECORD.size))
            if kind == END:
                break
            payload = _read_exact(fd, length)
            if kind == STATE:
                state = json.loads(payload)
        if state is None:
            raise ValueError("image without guest state")
    except (EOFError, ValueError) as e:
        _log(helper="xc_restore", what="bad-image", domid=domid, error=str(e))
        return 1
    if faults.get("restore_fail_in_stream"):
        _log(helper="xc_restore", what="failed", domid=domid)
        return 1
    mem_dir = os.path.join(_hv_dir(), "mem")
    os.makedirs(mem_dir, exist_ok=True)
    tmp = os.path.join(mem_dir, "%d.new" % domid)
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.rename(tmp, os.path.join(mem_dir, str(domid)))
    sys.stdout.write("store-mfn %d\n" % (1000 + domid))
    if not hvm:
        sys.stdout.write("console-mfn %d\n" % (2000 + domid))
    sys.stdout.flush()
    _log(helper="xc_restore", what="done", domid=domid)
    return 0


def main() -> int:
    name = os.path.basename(sys.argv[1]) if len(sys.argv) > 1 else ""
    if name == "xc_save":
        return save(sys.argv[2:])
    if name == "xc_restore":
        return restore(sys.argv[2:])
    sys.stderr.write("unknown helper %s\n" % name)
    return 2


def _exit_now(status: int) -> None:
    """Exit as the C helpers do, at once: xend waits for the helper's exit
    before it goes on, and an interpreter's shutdown (10-20 ms here) would
    sit between the image's end and xend's next step."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    _exit_now(main())
