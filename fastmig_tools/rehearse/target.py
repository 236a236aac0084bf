"""The target host: a relocation listener on 127.0.0.1 and 3.1's restore.

What one connection gets, as Xen 3.1's ``server/relocate.py`` and
``XendCheckpoint.restore`` do it:

1. ``receive`` → ``(ready receive)``;
2. the stream: signature, config, the image (``xc_restore``; a
   ``last-round`` fault fails it while the source still sends the last
   memory round);
3. the EOF gate: ``os.read(fd, 1)`` returns on the source's close or
   half-close (or on an error, which fails the restore);
4. ``completeRestore`` and ``waitForDevices`` (a stated fixed cost), then
   ``unpause``: the guest runs and its block I/O restarts;
5. ``(ok)``; any exception in 2-4 destroys the target's copy first and
   answers ``(err (type ...) (value ...))`` instead, as 2.4's xend prints
   it, then closes.

Every wait has a deadline; a target that waits past it fails the restore.
"""
from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time

from fastmig_tools.models.domain import ModelDomainInfo
from fastmig_tools.rehearse.stream import (
    SIGNATURE, StreamError, parse_config, read_exact, read_image)

__all__ = ["TargetHost", "TargetRun", "InjectedFailure", "ERR_REPLY",
           "QUOTED_ERR_REPLY", "SPLIT_GAP"]

log = logging.getLogger(__name__)

# relocate.py's send_error on Python 2.4, where XendError is a classic
# class: str(type) is its dotted name, and sxp.show quotes the value.
ERR_REPLY = "(err (type xen.xend.XendError.XendError) (value 'Restore failed'))\n"
# The same for an exception whose text holds an unbalanced parenthesis and
# a lone double quote: sxp.show writes a string that is not an atom as its
# repr(), single-quoted.
QUOTED_ERR_REPLY = ("(err (type xen.xend.XendError.XendError) (value %s))\n"
                    % repr('Restore failed: bad ( and " here'))
# An ``err-split`` fault sends the first half of ERR_REPLY, then the rest
# this many seconds later (a stalled relocation server, a congested link).
SPLIT_GAP = 0.4
OK_REPLY = "(ok)\n"
READY_REPLY = "(ready receive)\n"


class InjectedFailure(Exception):
    """The fault the rehearsal injects into the target's restore."""


class _HangUp(Exception):
    """The target process dies (``reset``: its connection is reset)."""

    def __init__(self, reset: bool):
        super().__init__("reset" if reset else "hang-up")
        self.reset = reset


class TargetRun:
    """What happened to one incoming migration (times are monotonic)."""

    def __init__(self):
        self.connected_at: float | None = None
        self.image_read_at: float | None = None
        self.image_bytes = 0
        self.released_at: float | None = None
        self.release_how: str | None = None
        self.unpaused_at: float | None = None
        self.destroyed_at: float | None = None
        self.reply: str | None = None
        self.replied_at: float | None = None
        self.error: str | None = None
        self.dominfo: ModelDomainInfo | None = None
        self.done = threading.Event()

    @property
    def running(self) -> bool:
        return self.unpaused_at is not None and self.destroyed_at is None


class TargetHost:
    """One modelled Xen 3.1 host receiving migrations.

    Guarantees: ``start()`` listens on 127.0.0.1 (a free port); each
    connection is served on its own thread and always ends with the
    socket closed and ``TargetRun.done`` set; ``stop()`` ends every thread
    it started (or raises) and may be called any number of times.
    """

    def __init__(self, host_store, guest_io, *, memory_gb: float,
                 destroy_per_gb: float, restore_seconds: float,
                 fail_after_image: bool = False, timeout: float = 300.0,
                 clock=time.monotonic, first_domid: int = 1,
                 fault: tuple | None = None, fault_delay: float = 0.0,
                 step_delay: float = 0.0,
                 split_gap: float = SPLIT_GAP):
        self.host_store = host_store
        self.guest_io = guest_io
        self.memory_gb = memory_gb
        self.destroy_per_gb = destroy_per_gb
        self.restore_seconds = restore_seconds
        self.fail_after_image = fail_after_image
        # (step, action): step last-round (during the source's last
        # memory round, ``fault_delay`` s after the suspend) / stream /
        # completeRestore / waitForDevices / unpause (action err, hangup,
        # reset, or hang: stuck until the host stops, then the restore
        # fails without a word; the copy is destroyed; err-split: the
        # (err ...) goes in two parts ``split_gap`` s apart; err-quoted:
        # its value holds an unbalanced "(" and a lone '"') or verdict (the
        # copy runs; action ok, garbage, oversized, silent, reset, or
        # hangup: the connection closes without a verdict).  The target
        # spends ``step_delay`` s in its failing (or verdict) step first.
        if fail_after_image and fault is None:
            fault = ("stream", "err")
        self.fault = fault
        # last-round faults: seconds after the guest's suspend.
        self.fault_delay = fault_delay
        self.step_delay = step_delay
        self.split_gap = split_gap
        # The connection being restored (one migration at a time here).
        self._current: socket.socket | None = None
        self.timeout = timeout
        self.clock = clock
        self._next_domid = first_domid
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.runs: list[TargetRun] = []
        self.api = None
        self.port: int | None = None

    # -- life cycle ------------------------------------------------------

    def start(self) -> "TargetHost":
        self.api = self.host_store.api(thread_name="target-xend-watcher")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept_loop,
                                  name="relocation-listener", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            # On Linux a shut-down listener wakes the accept loop's
            # select at once (a close alone leaves it to its timeout).
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise RuntimeError("target thread %s did not stop"
                                   % thread.name)
        self._threads = []
        api, self.api = self.api, None
        if api is not None:
            self.host_store.release(api)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every connection so far has been served."""
        deadline = time.monotonic() + timeout
        for run in list(self.runs):
            if not run.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # -- the listener ----------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set():
            try:
                ready = select.select([listener], [], [], 0.2)[0]
            except (OSError, ValueError):
                return   # stop() closed it between two waits
            if self._stopping.is_set():
                return
            if not ready:
                continue
            try:
                conn, _addr = listener.accept()
            except OSError:
                return
            run = TargetRun()
            run.connected_at = self.clock()
            self.runs.append(run)
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, run),
                                      name="relocation-connection",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, run: TargetRun) -> None:
        try:
            conn.settimeout(self.timeout)
            request = self._read_line(conn)
            if request.strip() != "receive":
                run.error = "unknown request %r" % request
                self._send(conn, run, "(err (type xen.xend.XendError."
                           "XendError) (value 'Invalid operation: %s'))\n"
                           % request.strip().replace("'", ""))
                return
            self._send(conn, run, READY_REPLY)
            try:
                self._restore(conn, run)
            except _HangUp as exc:
                run.error = "target %s (injected)" % exc
                return
            except Exception as exc:
                run.error = "%s: %s" % (type(exc).__name__, exc)
                log.info("target: restore failed: %s", run.error)
                self._send_error(conn, run, exc)
                return
            if not self._verdict_fault(conn, run):
                self._send(conn, run, OK_REPLY)
            # relocate.py closes when its read loop sees EOF.
            self._wait_readable(conn)
        except Exception as exc:
            if run.error is None:
                run.error = "%s: %s" % (type(exc).__name__, exc)
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()
            run.done.set()

    def _read_line(self, conn: socket.socket) -> str:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                break
            data += chunk
            if len(data) > 4096:
                break
        return data.decode("latin-1")

    def _send(self, conn: socket.socket, run: TargetRun, text: str) -> None:
        if run.replied_at is None and text != READY_REPLY:
            run.replied_at = self.clock()
        run.reply = (run.reply or "") + text
        try:
            conn.sendall(text.encode("ascii"))
        except OSError as exc:
            # The source already closed (3.1.0 and xen41 never read it).
            log.debug("target: reply %r not delivered: %s", text, exc)

    def _send_error(self, conn: socket.socket, run: TargetRun,
                    exc: Exception) -> None:
        """relocate.py's send_error, shaped as the injected fault says."""
        action = self.fault[1] if self.fault is not None else None
        if not isinstance(exc, InjectedFailure) or action == "err":
            self._send(conn, run, ERR_REPLY)
        elif action == "err-quoted":
            self._send(conn, run, QUOTED_ERR_REPLY)
        elif action == "err-split":
            half = len(ERR_REPLY) // 2
            self._send(conn, run, ERR_REPLY[:half])
            self._drop_input(conn, self.split_gap)
            self._send(conn, run, ERR_REPLY[half:])
            # What the source sent meanwhile is read, so that the close is
            # a FIN: unread data would make it a reset, which the source
            # takes for a failure without parsing anything.
            self._drop_input(conn, 0.0)
        else:
            self._send(conn, run, ERR_REPLY)

    def _drop_input(self, conn: socket.socket, seconds: float) -> None:
        """Read and drop what the source sends for ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            try:
                if not select.select([conn], [], [], max(left, 0.0))[0]:
                    if left <= 0:
                        return
                    continue
                if not conn.recv(1 << 16):
                    # The source closed its side: nothing more will come.
                    if left > 0:
                        self._stopping.wait(left)
                    return
            except OSError:
                return

    def _wait_readable(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if select.select([conn], [], [], min(left, 0.5))[0]:
                try:
                    if not conn.recv(4096):
                        return
                except OSError:
                    return

    # -- XendCheckpoint.restore -----------------------------------------

    def _restore(self, conn: socket.socket, run: TargetRun) -> None:
        self._current = conn
        signature = read_exact(conn, len(SIGNATURE), "signature")
        if signature != SIGNATURE:
            raise StreamError("not a valid guest state file: found %r"
                              % signature)
        size = struct.unpack("!i", read_exact(conn, 4, "config size"))[0]
        if not 0 < size < 1 << 20:
            raise StreamError("config size %d" % size)
        config = parse_config(read_exact(conn, size, "config")
                              .decode("utf-8"))
        domid = self._next_domid
        self._next_domid += 1
        dominfo = ModelDomainInfo(
            self.api.store(), domid, config["name"], config["uuid"],
            vbds=[{"dev": dev, "uname": uname}
                  for dev, uname in config["disks"]],
            memory_gb=self.memory_gb,
            destroy_seconds_per_gb=self.destroy_per_gb)
        run.dominfo = dominfo
        try:
            if self.fault is not None and self.fault[0] == "last-round":
                self._fail_in_last_round(conn)
            run.image_bytes, ring = read_image(conn)
            run.image_read_at = self.clock()
            self._fail_at("stream")
            self._gate(conn, run)
            self._fail_at("completeRestore")
            self._fail_at("waitForDevices")
            # completeRestore + waitForDevices: a modelled, fixed cost.
            if self.restore_seconds > 0:
                time.sleep(self.restore_seconds)
            self._fail_at("unpause")
            run.unpaused_at = self.guest_io.run_again("target", ring)
        except BaseException:
            # restore's "except: dominfo.destroy(); raise"
            if self._stopping.is_set():
                # Being shut down (Ctrl-C): don't model the destroy's time.
                dominfo.destroy_seconds_per_gb = 0.0
            dominfo.destroyDomain()
            run.destroyed_at = self.clock()
            raise

    def _pause(self) -> None:
        """The time spent in the faulty step before it acts (stoppable)."""
        if self.step_delay > 0:
            self._stopping.wait(self.step_delay)

    def _fail_at(self, step: str) -> None:
        if self.fault is None or self.fault[0] != step:
            return
        action = self.fault[1]
        if step != "last-round":
            self._pause()
        if action == "hang":
            # Stuck (xc_restore, a device that never connects) until the
            # host goes down; by then nobody hears an answer.
            self._stopping.wait(self.timeout)
            raise _HangUp(False)
        if action in ("err", "err-split", "err-quoted"):
            raise InjectedFailure("%s failed (injected)" % step)
        # The connection goes first (a process dies, a link resets); the
        # copy is destroyed after, by the restore's own except clause.
        conn = self._current
        if action == "reset":
            # A close with a zero linger sends RST, no FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
        else:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        conn.close()
        raise _HangUp(action == "reset")

    def _fail_in_last_round(self, conn: socket.socket) -> None:
        """Fail ``fault_delay`` s after the guest's suspend, while the
        source still sends its last memory round (xc_restore runs out of
        memory, the host's link resets).  What arrived meanwhile is read
        (and dropped), so that a failing restore closes with FIN, as 3.1's
        relocation server does once it answered."""
        deadline = time.monotonic() + self.timeout
        while self.guest_io.suspended_at is None:
            if time.monotonic() > deadline or self._stopping.is_set():
                raise TimeoutError("the source never suspended the guest")
            time.sleep(0.001)
        fail_at = self.guest_io.suspended_at + self.fault_delay
        while True:
            left = fail_at - self.clock()
            if left <= 0:
                break
            if select.select([conn], [], [], left)[0]:
                if not conn.recv(1 << 16):
                    raise StreamError("EOF in the last round")
        self._fail_at("last-round")

    def _verdict_fault(self, conn: socket.socket, run: TargetRun) -> bool:
        """The copy runs; answer as the fault says.  True if it did."""
        if self.fault is None or self.fault[0] != "verdict":
            return False
        self._pause()
        action = self.fault[1]
        if action == "ok":
            return False
        if action == "hangup":
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if action == "garbage":
            self._send(conn, run, "garbage, not a verdict\n")
        elif action == "oversized":
            self._send(conn, run, "(" * 70000)
        elif action == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
            return True
        # silent: nothing at all; the source's verdict deadline runs out.
        self._wait_readable(conn)
        return True

    def _gate(self, conn: socket.socket, run: TargetRun) -> None:
        """``os.read(fd, 1)``: wait for the source to close its side."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                raise TimeoutError("no EOF from the source within %.0f s"
                                   % self.timeout)
            if select.select([conn], [], [], min(left, 0.5))[0]:
                break
        data = conn.recv(1)   # an error (reset) raises: restore fails
        run.released_at = self.clock()
        run.release_how = "EOF" if not data else "data %r" % data
