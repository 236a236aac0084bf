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

xend forks ``helper_client.c`` under those names; it hands its arguments
and descriptors to this module's server (``helpers.py --serve SOCKET``,
one per host, started by host.py) and exits with the status the run
returns.  A Python helper's own exit would take over a millisecond here,
between the image's end and xend's next step; Xen's C helpers exit at
once.

The image is real bytes on the wire: a header, the guest's memory state
(the guest kernel's JSON, as the real image carries its pages) and filler
proportional to the guest's memory (``image_bytes_per_gb``).  The last
memory round, sent after xend's ``done`` (the guest suspended), takes at
least ``last_round_seconds`` (default 0: as fast as the pipe goes), as a
real xc_save's last round of dirty pages does; a live save's rounds before
the suspend at least ``precopy_seconds`` (default 0).  Faults and knobs are
read from ``$HARNESS_HV_DIR/faults.json``; every helper run is logged to
``$HARNESS_HV_DIR/helpers.log``.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time
import traceback

MAGIC = b"HARNESSXENIMAGE1"
# Records after the magic: kind (1 byte) + length (8 bytes) + payload.
_RECORD = struct.Struct("!BQ")
PAGES, STATE, END = 1, 2, 0
# What the paced pre-copy writes at a time.
_CHUNK = 1 << 16


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


def _paced_pages(fd: int, size: int, seconds: float) -> None:
    """One PAGES record of ``size`` bytes, its writes spread over at least
    ``seconds``."""
    _write_all(fd, _RECORD.pack(PAGES, size))
    start = time.time()
    sent = 0
    while sent < size:
        n = min(_CHUNK, size - sent)
        _write_all(fd, b"\0" * n)
        sent += n
        ahead = start + seconds * sent / size - time.time()
        if ahead > 0:
            time.sleep(ahead)
    left = start + seconds - time.time()
    if left > 0:
        time.sleep(left)


def save(argv: list[str], stdin, stdout) -> int:
    fd, domid, flags = int(argv[0]), int(argv[1]), int(argv[4])
    live = bool(flags & 1)
    faults = _faults()
    _log(helper="xc_save", what="start", domid=domid, live=live)
    mem_kb = int(_memory(domid).get("mem_kb", 0))
    filler = _filler_bytes(mem_kb, faults)
    first = filler // 2 if live else 0
    _write_all(fd, MAGIC)
    if live:
        # Round 1, the guest running: a real one streams the guest's
        # memory for seconds per GB, and a target that goes away meanwhile
        # fails one of its writes, before the suspend.
        _paced_pages(fd, first, float(faults.get("precopy_seconds", 0)))
    stdout.write("suspend\n")
    stdout.flush()
    answer = stdin.readline()
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


def restore(argv: list[str], stdin, stdout) -> int:
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
    stdout.write("store-mfn %d\n" % (1000 + domid))
    if not hvm:
        stdout.write("console-mfn %d\n" % (2000 + domid))
    stdout.flush()
    _log(helper="xc_restore", what="done", domid=domid)
    return 0


HELPERS = {"xc_save": save, "xc_restore": restore}
SOCKET_NAME = "helpers.sock"


class _Session:
    """One client's run: its descriptors (stdin, stdout, stderr, the
    image), closed once, under a lock, so that stopping a run never
    touches a descriptor number the process has since reused."""

    def __init__(self, fds: list[int]):
        self.fds = list(fds)
        self.lock = threading.Lock()
        self.closed = False

    def run(self, name: str, argv: list[str]) -> int:
        # close() below closes the descriptors, once, under the lock.
        stdin = os.fdopen(self.fds[0], "r", closefd=False)
        stdout = os.fdopen(self.fds[1], "w", closefd=False)
        try:
            helper = HELPERS.get(name)
            if helper is None:
                self._complain("unknown helper %s\n" % name)
                return 2
            if len(self.fds) > 3:
                argv = [str(self.fds[3])] + list(argv[1:])
            try:
                return helper(argv, stdin, stdout)
            except Exception:
                # What a crashing helper prints; xend logs its stderr.
                self._complain(traceback.format_exc())
                return 1
        finally:
            for stream in (stdout, stdin):
                try:
                    stream.close()
                except OSError:
                    pass

    def _complain(self, text: str) -> None:
        try:
            os.write(self.fds[2], text.encode("utf-8", "replace"))
        except OSError:
            pass

    def close(self) -> None:
        """Close every descriptor: xend sees the ends of its pipes as soon
        as the client exits."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for fd in self.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def stop(self) -> None:
        """The client died (its xend was killed): end the helper's blocking
        reads and writes on the image, as its death would have."""
        with self.lock:
            if self.closed:
                return
            for fd in self.fds[3:]:
                copy = os.dup(fd)
                try:
                    image = socket.socket(fileno=copy)
                except OSError:
                    os.close(copy)
                    continue      # not a socket (a save to a file)
                try:
                    image.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                finally:
                    image.close()


def _serve_one(conn: socket.socket) -> None:
    try:
        message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 8)
        session = _Session(fds)
        if len(fds) < 3:
            session.close()
            return
        parts = message.decode("utf-8", "replace").split("\0")[:-1]
        watcher = threading.Thread(target=_watch_client,
                                   args=(conn, session), daemon=True)
        watcher.start()
        try:
            status = session.run(parts[0], parts[1:])
        finally:
            session.close()
        try:
            conn.send(bytes([status & 0xFF]))
        except OSError:
            pass
    finally:
        conn.close()


def _watch_client(conn: socket.socket, session: _Session) -> None:
    # The client sends nothing more: recv returns when it is gone (or
    # when _serve_one closes the connection, after the session closed).
    try:
        conn.recv(1)
    except OSError:
        pass
    session.stop()


def serve(path: str) -> None:
    """Answer the clients (helper_client.c) of one host until killed."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen(16)
    sys.stdout.write("ready %d\n" % os.getpid())
    sys.stdout.flush()
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
        return 0
    sys.stderr.write("usage: helpers.py --serve SOCKET\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
