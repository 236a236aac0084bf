import socket
import threading
import time

import pytest

from tests.unit.clocks import SteppedClock
from xend_fastmig.errors import TargetFailed
from xend_fastmig.verdict import (ERR, MAX_REPLY_BYTES, OK, UNKNOWN,
                                  parse_verdict, peek_for_failure,
                                  read_reply, read_verdict)


@pytest.mark.parametrize("text,kind", [
    ("(ok)\n", OK),
    ("(ok)", OK),
    ('(err (type "<class XendError>") (value "Restore failed"))\n', ERR),
    ('(err (value "a ) inside"))', ERR),
    ("(ok 1)", UNKNOWN),
    ("(okay)", UNKNOWN),
    ("(error)", UNKNOWN),
    ("(err (value x)", UNKNOWN),
    ("(ready receive)", UNKNOWN),
    ("ok", UNKNOWN),
    ("", UNKNOWN),
])
def test_only_exact_ok_or_err_count(text, kind):
    assert parse_verdict(text).kind == kind


def test_peek_with_nothing_waiting_returns_nothing(socketpair):
    source, target = socketpair
    assert peek_for_failure(source) == ""


def test_peek_sees_the_target_hang_up(socketpair):
    source, target = socketpair
    target.close()
    with pytest.raises(TargetFailed) as info:
        peek_for_failure(source)
    assert "closed" in str(info.value)


def test_peek_sees_an_error_verdict(socketpair):
    source, target = socketpair
    target.sendall(b'(err (type "x") (value "Restore failed"))\n')
    with pytest.raises(TargetFailed) as info:
        peek_for_failure(source)
    assert "Restore failed" in str(info.value)


def test_peek_returns_other_data_for_the_caller_to_log(socketpair):
    source, target = socketpair
    target.sendall(b"(hello)")
    assert peek_for_failure(source) == "(hello)"


def test_read_verdict_ok_in_pieces(socketpair):
    source, target = socketpair

    def answer():
        target.sendall(b"(o")
        time.sleep(0.05)
        target.sendall(b"k)\n")
    threading.Thread(target=answer).start()
    assert read_verdict(source, 5).kind == OK


def test_read_verdict_uses_what_was_peeked(socketpair):
    source, target = socketpair
    target.sendall(b"k)\n")
    assert read_verdict(source, 5, already="(o").kind == OK


def test_no_verdict_before_the_deadline_is_unknown(socketpair):
    source, target = socketpair
    started = time.time()
    verdict = read_verdict(source, 0.2)
    assert verdict.kind == UNKNOWN
    assert "no reply within" in verdict.reason
    assert 0.2 <= time.time() - started < 1.0


def test_hang_up_without_verdict_is_unknown(socketpair):
    source, target = socketpair
    target.close()
    verdict = read_verdict(source, 5)
    assert verdict.kind == UNKNOWN
    assert "without a reply" in verdict.reason


def test_garbage_is_unknown_at_once(socketpair):
    source, target = socketpair
    target.sendall(b"HTTP/1.0 400 Bad Request\r\n")
    started = time.time()
    assert read_verdict(source, 5).kind == UNKNOWN
    assert time.time() - started < 1.0


def test_an_oversized_reply_is_unknown(socketpair):
    source, target = socketpair

    def flood():
        try:
            target.sendall(b"(" + b"x" * (MAX_REPLY_BYTES + 10))
        except socket.error:
            pass
    threading.Thread(target=flood).start()
    verdict = read_verdict(source, 5)
    assert verdict.kind == UNKNOWN
    assert "longer than" in verdict.reason


def test_a_reset_connection_is_unknown():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    source = socket.create_connection(listener.getsockname())
    target = listener.accept()[0]
    import struct
    target.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                      struct.pack("ii", 1, 0))
    target.close()
    try:
        verdict = read_verdict(source, 5)
        assert verdict.kind == UNKNOWN
    finally:
        source.close()
        listener.close()


def test_read_reply_returns_the_first_sexp(socketpair):
    source, target = socketpair
    target.sendall(b"(ready receive)\n(ok)")
    assert read_reply(source, 5) == ("(ready receive)", "")


def _tcp_pair():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    source = socket.create_connection(listener.getsockname())
    target = listener.accept()[0]
    listener.close()
    return source, target


def _wait_readable(sock):
    import select
    assert select.select([sock], [], [], 5)[0]


@pytest.mark.parametrize("transport", ["socketpair", "tcp"])
def test_an_error_split_over_two_peeks_is_seen(transport):
    """Regression (defect 3): each peek parsed only its own bytes."""
    if transport == "tcp":
        source, target = _tcp_pair()
    else:
        source, target = socket.socketpair()
    try:
        target.sendall(b"(err (type ")
        _wait_readable(source)
        seen = peek_for_failure(source)
        assert seen == "(err (type "
        target.sendall(b"\"<class 'XendError'>\") (value 'no ( memory'))\n")
        _wait_readable(source)
        with pytest.raises(TargetFailed) as info:
            peek_for_failure(source, seen)
        assert "no ( memory" in str(info.value)
    finally:
        source.close()
        target.close()


def test_peek_returns_what_has_accumulated(socketpair):
    source, target = socketpair
    assert peek_for_failure(source, "(o") == "(o"
    target.sendall(b"k)")
    _wait_readable(source)
    assert peek_for_failure(source, "(o") == "(ok)"


def test_an_error_after_other_data_is_seen(socketpair):
    source, target = socketpair
    target.sendall(b"(hello) (err (value 'x'))")
    _wait_readable(source)
    with pytest.raises(TargetFailed):
        peek_for_failure(source)


def test_a_repr_quoted_error_verdict_is_read_as_an_error(socketpair):
    """Regression (defect 4): as 3.1's sxp.show writes it."""
    source, target = socketpair
    target.sendall(b"(err (type \"<class 'xen.xend.XendError.XendError'>\")"
                   b" (value 'Restore failed: \" unbalanced ('))\n")
    verdict = read_verdict(source, 5)
    assert verdict.kind == ERR
    assert "unbalanced (" in verdict.text


def test_a_verdict_wait_across_the_clock_wrap_ends(socketpair):
    """Regression (defect 9): 2**31 ticks after boot the clock_t of
    os.times() jumps to -2**31; a deadline computed before never came."""
    source, target = socketpair
    clock = SteppedClock((2 ** 31 - 50) / 100.0, 0.4, wrap=True)
    started = time.time()
    verdict = read_verdict(source, 1.0, clock=clock)
    assert verdict.kind == UNKNOWN
    assert "no reply within" in verdict.reason
    assert time.time() - started < 3.0


@pytest.mark.parametrize("timeout", [1e10, float("inf")])
def test_a_huge_verdict_timeout_still_reads_the_verdict(socketpair, timeout):
    """Regression (defect 2): select() raised OverflowError for timeouts
    this large, and the verdict counted as unknown at once; now the read
    sleeps in slices (options.py also refuses such values)."""
    source, target = socketpair
    timer = threading.Timer(0.1, lambda: target.sendall(
        b"(err (value 'late'))\n"))
    timer.start()
    try:
        assert read_verdict(source, timeout).kind == ERR
    finally:
        timer.cancel()


def test_the_verdict_kinds_are_the_words_the_logs_and_reports_show():
    assert (OK, ERR, UNKNOWN) == ("ok", "err", "unknown")
    assert parse_verdict("(ok)").reason == ""
    assert parse_verdict("(err)").reason == ""
    assert parse_verdict("(ok)").describe() == "(ok)"


def test_a_reply_one_byte_too_long_is_refused(socketpair):
    source, target = socketpair
    assert MAX_REPLY_BYTES == 65536

    def send():
        try:
            target.sendall(b"(" + b"x" * MAX_REPLY_BYTES)
        except socket.error:
            pass
    threading.Thread(target=send).start()
    verdict = read_verdict(source, 5)
    assert "longer than 65536 bytes" in verdict.reason


def test_what_a_verdict_says_about_itself():
    unknown = parse_verdict("(ok extra)")
    assert unknown.reason == "not a verdict: '(ok extra)'"
    assert unknown.describe() == "unknown (not a verdict: '(ok extra)')"
    assert repr(parse_verdict(" (ok)\n")) == "Verdict(ok, '(ok)', '')"
    assert parse_verdict("(err 'x)").reason == "not a verdict: \"(err 'x)\""
    long_reply = "(" + "x" * 300 + ")("
    assert parse_verdict(long_reply).reason == \
        "not a verdict: %r" % long_reply[:200]


def test_a_peek_still_reads_when_exactly_the_limit_has_accumulated(
        socketpair):
    source, target = socketpair
    target.sendall(b" (err)")
    _wait_readable(source)
    with pytest.raises(TargetFailed):
        peek_for_failure(source, "x" * MAX_REPLY_BYTES)
    target.sendall(b" (err)")
    _wait_readable(source)
    assert peek_for_failure(source, "x" * (MAX_REPLY_BYTES + 1)) == \
        "x" * (MAX_REPLY_BYTES + 1)


@pytest.mark.parametrize("text", [")", "(ok \x00)", "\x00", "(ok) x", "(ok",
                                  "ok", "(ok)(err)", "()", "((ok))",
                                  "('ok' 'x')", "(err"])
def test_malformed_or_partial_replies_are_unknown(text):
    verdict = parse_verdict(text)
    assert verdict.kind == UNKNOWN
    assert verdict.reason == "not a verdict: %r" % text.strip()


def test_peek_names_a_reset_connection():
    """A reset is a failure of the target (TargetFailed), said as such."""
    source, target = _tcp_pair()
    import struct
    try:
        target.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          struct.pack("ii", 1, 0))
        target.close()
        _wait_readable(source)
        with pytest.raises(TargetFailed) as info:
            peek_for_failure(source)
        assert info.value.reason == \
            "connection error: [Errno 104] Connection reset by peer"
    finally:
        source.close()


def test_peek_says_the_target_closed_the_connection(socketpair):
    source, target = socketpair
    target.close()
    with pytest.raises(TargetFailed) as info:
        peek_for_failure(source)
    assert info.value.reason == "the target closed the connection"


@pytest.mark.parametrize("garbage", [
    # Malformed at once; a top-level atom, not a list.
    ")" + "x" * 300, "x" * 300 + " (ok)"])
def test_garbage_is_quoted_up_to_200_characters(socketpair, garbage):
    source, target = socketpair
    assert read_reply(source, 5, already=garbage) == (
        None, "garbage from the target: %r" % garbage[:200])


def test_a_one_character_atom_is_garbage_at_once(socketpair):
    source, target = socketpair
    started = time.time()
    assert read_reply(source, 5, already="x ") == (
        None, "garbage from the target: 'x '")
    assert time.time() - started < 1.0


def test_a_reply_of_exactly_the_limit_is_still_waited_for(socketpair):
    source, target = socketpair
    incomplete = "(" + "x" * (MAX_REPLY_BYTES - 2) + " "
    assert len(incomplete) == MAX_REPLY_BYTES
    target.sendall(b")")
    assert read_reply(source, 5, already=incomplete) == (incomplete + ")", "")


def test_what_read_reply_says_when_there_is_no_reply(socketpair):
    source, target = socketpair
    assert read_reply(source, 0.2) == (None, "no reply within 0.2 s")
    assert read_reply(source, 5, already="(" + "x" * MAX_REPLY_BYTES) == (
        None, "reply longer than 65536 bytes")
    target.close()
    assert read_reply(source, 5) == (
        None, "the target closed the connection without a reply")


def test_read_reply_names_a_reset_connection():
    source, target = _tcp_pair()
    import struct
    try:
        target.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          struct.pack("ii", 1, 0))
        target.close()
        assert read_reply(source, 5) == (
            None, "connection error: [Errno 104] Connection reset by peer")
    finally:
        source.close()


class _InterruptedOnce(object):
    """A socket whose first recv is interrupted by a signal (EINTR), as on
    the Pythons before 3.5, which do not retry it themselves."""

    def __init__(self, sock):
        self._sock = sock
        self.interrupted = False

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def recv(self, size):
        if not self.interrupted:
            self.interrupted = True
            import errno
            raise socket.error(errno.EINTR, "Interrupted system call")
        return self._sock.recv(size)


def test_an_interrupted_read_is_retried(socketpair):
    source, target = socketpair
    target.sendall(b"(ok)\n")
    interrupted = _InterruptedOnce(source)
    assert read_reply(interrupted, 5) == ("(ok)", "")
    assert interrupted.interrupted
