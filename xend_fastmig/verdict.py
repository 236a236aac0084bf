"""The target's answers on the relocation connection.

Xen 3.1's relocation server answers ``(ready receive)`` to ``receive``, and
when ``domain_restore_fd`` has finished, ``(ok)``, or ``(err (type ..)
(value ..))`` after its restore has destroyed the target's copy.  Stock
sources never read that verdict; the handover does, because it decides
whether the source copy is destroyed or resumed.
"""

import errno
import socket
import sys

from xend_fastmig.clock import Deadline
from xend_fastmig.compat import select_readable, to_text
from xend_fastmig.errors import TargetFailed
from xend_fastmig.sxp_parse import Malformed, first_value

__all__ = ["OK", "ERR", "UNKNOWN", "Verdict", "parse_verdict",
           "peek_for_failure", "read_verdict", "read_reply",
           "MAX_REPLY_BYTES"]

OK = "ok"
ERR = "err"
UNKNOWN = "unknown"

# An error verdict carries an exception's text; anything longer than this
# is not a relocation server talking.
MAX_REPLY_BYTES = 65536


class Verdict:
    """What the target said: ``kind`` is OK, ERR or UNKNOWN.

    ``text`` is what was read (for the log); ``reason`` says why a verdict
    is UNKNOWN.
    """

    def __init__(self, kind, text, reason=""):
        self.kind = kind
        self.text = text
        self.reason = reason

    def __repr__(self):
        return "Verdict(%s, %r, %r)" % (self.kind, self.text, self.reason)

    def describe(self):
        if self.kind == UNKNOWN:
            return "unknown (%s)" % self.reason
        return self.text.strip()


def _is_list(value):
    return isinstance(value, list)


def _first(text, start=0):
    """``(value, end)`` of the first s-expression, (None, -1) while
    incomplete; raises ``Malformed`` (see sxp_parse)."""
    return first_value(text, start)


def _kind(reply):
    try:
        value, end = _first(reply)
    except Malformed:
        return UNKNOWN
    if end != len(reply) or not _is_list(value) or not value:
        return UNKNOWN
    if value == ["ok"]:
        return OK
    if value[0] == "err":
        return ERR
    return UNKNOWN


def parse_verdict(text):
    """Classify a complete reply: exactly ``(ok)``, an ``(err ...)``, or not.

    Read as xend's own parser reads it (its strings are ``repr()``s).
    """
    reply = text.strip()
    kind = _kind(reply)
    if kind == UNKNOWN:
        return Verdict(UNKNOWN, reply, "not a verdict: %r" % reply[:200])
    return Verdict(kind, reply)


def _first_error(text):
    """The raw text of the first ``(err ...)`` among the complete
    s-expressions in ``text``, or None."""
    start = 0
    while True:
        try:
            value, end = _first(text, start)
        except Malformed:
            return None
        if end == -1:
            return None
        if _is_list(value) and value and value[0] == "err":
            return text[start:end].strip()
        start = end


def peek_for_failure(sock, already=""):
    """Look, without blocking, whether the target already failed.

    ``already``: what earlier peeks returned; an ``(err ...)`` may arrive
    in pieces, so what has accumulated is parsed, not just the new bytes.
    Raises ``TargetFailed`` when the target hung up, reset the connection
    or sent an ``(err ...)``.  Returns ``already`` plus whatever else it
    read (logged by the caller, kept for ``read_verdict``).
    """
    if len(already) > MAX_REPLY_BYTES:
        # Not a relocation server talking; the verdict read says so.
        return already
    if not select_readable(sock.fileno(), 0):
        return already
    try:
        data = to_text(sock.recv(MAX_REPLY_BYTES))
    except socket.error:
        raise TargetFailed("connection error: %s" % (sys.exc_info()[1],))
    if not data:
        raise TargetFailed("the target closed the connection")
    text = already + data
    failure = _first_error(text)
    if failure is not None:
        raise TargetFailed(failure)
    return text


def read_reply(sock, timeout, already="", clock=None):
    """Read the first complete s-expression, waiting at most ``timeout``.

    Returns ``(text, reason)``: ``text`` is the s-expression, or None with
    ``reason`` saying why there is none (deadline, end of stream, reset,
    oversized or malformed data).  Never raises on the peer's behaviour.
    ``clock``: the raw clock of the deadline (tests simulate its wrap).
    """
    deadline = Deadline(timeout, clock)
    data = already
    while True:
        try:
            value, end = _first(data)
        except Malformed:
            return None, "garbage from the target: %r" % data[:200]
        if end > 0:
            if not _is_list(value):
                return None, "garbage from the target: %r" % data[:200]
            return data[:end].strip(), ""
        if len(data) > MAX_REPLY_BYTES:
            return None, "reply longer than %d bytes" % MAX_REPLY_BYTES
        if deadline.expired():
            return None, "no reply within %.1f s" % timeout
        # In slices: a wrap of the clock costs at most one (clock.py).
        if not select_readable(sock.fileno(), deadline.sleep_for()):
            continue
        try:
            chunk = to_text(sock.recv(4096))
        except socket.error:
            exc = sys.exc_info()[1]
            if getattr(exc, "errno", None) == errno.EINTR:
                continue
            return None, "connection error: %s" % (exc,)
        if not chunk:
            return None, "the target closed the connection without a reply"
        data = data + chunk


def read_verdict(sock, timeout, already="", clock=None):
    """The target's verdict after the go; UNKNOWN unless exactly ok or err."""
    text, reason = read_reply(sock, timeout, already, clock)
    if text is None:
        return Verdict(UNKNOWN, already, reason)
    return parse_verdict(text)
