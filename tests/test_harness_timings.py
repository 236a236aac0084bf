"""TwoHosts.timings' reading of the target's EOF gate: hostd's stamp of
the restore thread meeting the end of the stream, or a harness error."""
from __future__ import annotations

import pytest

from fastmig_tools.xendharness.harness import TwoHosts

pytestmark = pytest.mark.timeout(30)

_GUEST_DOMID = 7
_RESTORE_THREAD = 41


class _Host:
    xend_alive = True

    def __init__(self, calls, events, ends):
        self._answers = {"xc_calls": calls, "stream_ends": ends}
        self._events = events

    def call(self, op, **_args):
        return self._answers[op]

    def helper_events(self):
        return self._events


def _pair(ends):
    source = _Host([], [], [])
    target = _Host(
        [dict(call="handle", thread_id=_RESTORE_THREAD, t=1.0, args=[]),
         dict(call="domain_getinfo", thread_id=_RESTORE_THREAD, t=2.5,
              args=[_GUEST_DOMID]),
         dict(call="domain_unpause", thread_id=_RESTORE_THREAD, t=3.0,
              args=[_GUEST_DOMID])],
        [dict(helper="xc_restore", what="done", t=2.0)], ends)
    pair = TwoHosts.__new__(TwoHosts)
    pair.source, pair.target = source, target
    return pair


class _Guest:
    domid = _GUEST_DOMID


def test_the_gate_is_the_restore_threads_stamped_end_of_stream():
    pair = _pair([dict(thread_id=99, t=2.1),
                  dict(thread_id=_RESTORE_THREAD, t=2.2)])
    t = pair.timings(_Guest())
    assert t.gate_open == 2.2
    assert t.unpaused == 3.0


def test_a_restore_without_a_stamp_is_a_harness_error_not_a_guess():
    pair = _pair([dict(thread_id=99, t=2.1)])
    with pytest.raises(RuntimeError, match="no stream_ends stamp"):
        pair.timings(_Guest())
