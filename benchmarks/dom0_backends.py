"""Block backend models in a process of their own, as dom0's kernel is.

On a real host blkback and udev are not inside xend's interpreter; run in
the benchmark's own process, their threads would take xend's GIL and add
their scheduling to the very delay being measured.  ``Dom0Backends``
starts one child process that runs the classic 3.1 blkback models on its
own connections to the same xenstored; times are CLOCK_MONOTONIC, which
both processes share.
"""
from __future__ import annotations

import multiprocessing
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["Dom0Backends"]

_TIMEOUT = 30.0


def _serve(conn, env):
    os.environ.update(env)
    from fastmig_tools.models.blkback import ClassicBlkback, InflightRequest
    from fastmig_tools.xenstore.real import lowlevel_module
    from fastmig_tools.xenstore.xend_api import XendApi
    binding = lowlevel_module()
    actors = []
    while True:
        command, argument = conn.recv()
        if command == "start":
            actors = []
            for backend, delay in argument:
                api = XendApi(binding.xs(), thread_name="blkback-watcher")
                actor = ClassicBlkback(api.store(), backend, requests=[
                    InflightRequest(sector=0, delay=delay)]).start()
                actors.append((actor, api))
            conn.send("ready")
        elif command == "suspend":
            for actor, _ in actors:
                actor.set_suspend_time(argument)
            conn.send("ok")
        elif command == "collect":
            for actor, _ in actors:
                actor.wait_removed(_TIMEOUT)
            last = max(r.completed_at for actor, _ in actors
                       for r in actor.requests)
            gone = [actor.removed_at for actor, _ in actors]
            for actor, api in actors:
                actor.stop()
                api.close()
            actors = []
            conn.send((last, gone))
        else:
            conn.send("bye")
            return


class Dom0Backends:
    """A child process running blkback models against ``daemon``."""

    def __init__(self, daemon_env: dict[str, str]):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve,
                                       args=(child, dict(daemon_env)),
                                       daemon=True)
        self.process.start()

    def _ask(self, command, argument=None):
        self.conn.send((command, argument))
        if not self.conn.poll(_TIMEOUT):
            raise RuntimeError("dom0 backend process did not answer %s"
                               % command)
        return self.conn.recv()

    def start(self, backends_and_delays):
        """Start one classic blkback per ``(backend path, delay)``."""
        self._ask("start", list(backends_and_delays))

    def suspend(self, when: float):
        self._ask("suspend", when)

    def collect(self):
        """Wait for the teardowns; ``(last completion, [removed_at])``."""
        return self._ask("collect")

    def close(self):
        try:
            self._ask("quit")
        except (OSError, EOFError, RuntimeError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
