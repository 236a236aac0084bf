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

from xend_fastmig.clock import monotonic
from xend_fastmig.compat import select_readable, to_text
from xend_fastmig.errors import TargetFailed

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

    def __init__(self, kind, text="", reason=""):
        self.kind = kind
        self.text = text
        self.reason = reason

    def __repr__(self):
        return "Verdict(%s, %r, %r)" % (self.kind, self.text, self.reason)

    def describe(self):
        if self.kind == UNKNOWN:
            return "unknown (%s)" % self.reason
        return self.text.strip()


def _sexp_end(text):
    """Index just past the first complete s-expression in ``text``, or -1.

    Parentheses inside double-quoted strings (an error message may hold
    some) do not count.
    """
    depth = 0
    started = False
    quoted = False
    escaped = False
    for index in range(len(text)):
        char = text[index]
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char == "(":
            depth = depth + 1
            started = True
        elif char == ")":
            depth = depth - 1
            if depth < 0:
                return -1
            if started and depth == 0:
                return index + 1
        elif not started and not char.isspace():
            return -1
    return -1


def parse_verdict(text):
    """Classify a complete reply: exactly ``(ok)``, an ``(err ...)``, or not."""
    reply = text.strip()
    if reply == "(ok)":
        return Verdict(OK, reply)
    if reply.startswith("(err") and len(reply) > 4 \
            and reply[4] in " \t\n)" and _sexp_end(reply) == len(reply):
        return Verdict(ERR, reply)
    return Verdict(UNKNOWN, reply, "not a verdict: %r" % reply[:200])


def peek_for_failure(sock):
    """Look, without blocking, whether the target already failed.

    Raises ``TargetFailed`` when the target hung up, reset the connection
    or sent an ``(err ...)``.  Returns whatever else it read (logged by the
    caller, kept for ``read_verdict``), or "" when nothing was waiting.
    """
    if not select_readable(sock.fileno(), 0):
        return ""
    try:
        data = to_text(sock.recv(MAX_REPLY_BYTES))
    except socket.error:
        raise TargetFailed("connection error: %s" % (sys.exc_info()[1],))
    if not data:
        raise TargetFailed("the target closed the connection")
    end = _sexp_end(data)
    if end > 0 and parse_verdict(data[:end]).kind == ERR:
        raise TargetFailed(data[:end])
    return data


def read_reply(sock, timeout, already=""):
    """Read the first complete s-expression, waiting at most ``timeout``.

    Returns ``(text, reason)``: ``text`` is the s-expression, or None with
    ``reason`` saying why there is none (deadline, end of stream, reset,
    oversized or malformed data).  Never raises on the peer's behaviour.
    """
    deadline = monotonic() + timeout
    data = already
    while True:
        end = _sexp_end(data)
        if end > 0:
            return data[:end], ""
        if len(data) > MAX_REPLY_BYTES:
            return None, "reply longer than %d bytes" % MAX_REPLY_BYTES
        if data.strip() and data.strip()[0] != "(":
            return None, "garbage from the target: %r" % data[:200]
        remaining = deadline - monotonic()
        if remaining <= 0:
            return None, "no reply within %.1f s" % timeout
        if not select_readable(sock.fileno(), remaining):
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


def read_verdict(sock, timeout, already=""):
    """The target's verdict after the go; UNKNOWN unless exactly ok or err."""
    text, reason = read_reply(sock, timeout, already)
    if text is None:
        return Verdict(UNKNOWN, already, reason)
    return parse_verdict(text)
