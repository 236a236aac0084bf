"""One suite, two stores: the embedded store must behave like Xen's C
xenstored reached through Xen's own binding, and xend's API over either
must behave like xend's.  Every test runs on both; a test failing only on
"embedded" is a bug in the embedded store.
"""
from __future__ import annotations

import errno
import logging
import queue
import select
import threading

import pytest

from fastmig_tools.xenstore.xend_api import XendApi
from tests.xenstore_backends import BACKENDS, make_backend, next_event, no_event

WAIT = 5.0


@pytest.fixture(params=BACKENDS)
def xs(request):
    return make_backend(request, request.param)


def errno_of(excinfo) -> int:
    return excinfo.value.args[0]


# ---------------------------------------------------------------------------
# nodes
# ---------------------------------------------------------------------------

def test_missing_node_reads_and_lists_as_none(xs):
    h = xs.handle
    assert h.read("", xs.path("nothing")) is None
    assert h.ls("", xs.path("nothing")) is None
    assert h.read("", xs.path("no", "such", "parent")) is None


def test_write_creates_parents_with_empty_values(xs):
    h = xs.handle
    h.write("", xs.path("a", "b", "c"), b"leaf")
    assert h.read("", xs.path("a", "b", "c")) == b"leaf"
    assert h.read("", xs.path("a", "b")) == b""
    assert h.read("", xs.path("a")) == b""
    assert h.ls("", xs.path("a")) == ["b"]
    assert h.ls("", xs.path("a", "b", "c")) == []


def test_values_are_bytes_and_str_is_accepted(xs):
    h = xs.handle
    h.write("", xs.path("s"), "text")
    h.write("", xs.path("e"), b"")
    h.write("", xs.path("bin"), b"\x00\xff")
    assert h.read("", xs.path("s")) == b"text"
    assert h.read("", xs.path("e")) == b""
    assert h.read("", xs.path("bin")) == b"\x00\xff"


def test_children_keep_creation_order(xs):
    h = xs.handle
    for name in ("zeta", "alpha", "mid"):
        h.write("", xs.path("d", name), b"1")
    h.rm("", xs.path("d", "alpha"))
    h.write("", xs.path("d", "alpha"), b"2")
    assert h.ls("", xs.path("d")) == ["zeta", "mid", "alpha"]


def test_rm_removes_the_subtree(xs):
    h = xs.handle
    h.write("", xs.path("t", "x", "y"), b"1")
    h.write("", xs.path("t", "z"), b"2")
    h.write("", xs.path("keep"), b"3")
    h.rm("", xs.path("t"))
    assert h.read("", xs.path("t")) is None
    assert h.read("", xs.path("t", "x", "y")) is None
    assert h.ls("", xs.path("t", "x")) is None
    assert h.read("", xs.path("keep")) == b"3"
    assert xs.path("t").rsplit("/", 1)[1] not in h.ls("", xs.root)


def test_rm_of_missing_node_is_a_no_op(xs):
    h = xs.handle
    h.write("", xs.path("p"), b"1")
    h.rm("", xs.path("p", "missing"))
    h.rm("", xs.path("missing", "parent", "too"))
    assert h.ls("", xs.path("p")) == []


def test_mkdir_creates_an_empty_node_and_keeps_an_existing_one(xs):
    h = xs.handle
    h.mkdir("", xs.path("m", "n"))
    assert h.read("", xs.path("m", "n")) == b""
    h.write("", xs.path("m", "n"), b"v")
    h.mkdir("", xs.path("m", "n"))
    assert h.read("", xs.path("m", "n")) == b"v"


@pytest.mark.parametrize("bad", ["/trailing/", "/dou//ble", "/sp ace",
                                 "/dot.ted", "/colon:x"])
def test_invalid_names_raise_einval(xs, bad):
    with pytest.raises(RuntimeError) as excinfo:
        xs.handle.read("", xs.root + bad)
    assert errno_of(excinfo) == errno.EINVAL
    with pytest.raises(RuntimeError) as excinfo:
        xs.handle.write("", xs.root + bad, b"x")
    assert errno_of(excinfo) == errno.EINVAL


def test_relative_paths_are_under_dom0s_home(xs):
    h = xs.handle
    name = "fastmig-rel-%s" % xs.root.rsplit("/", 1)[1]
    try:
        h.write("", name + "/k", b"v")
        assert h.read("", "/local/domain/0/%s/k" % name) == b"v"
        assert h.ls("", name) == ["k"]
    finally:
        h.rm("", "/local/domain/0/" + name)


def test_permissions_round_trip(xs):
    h = xs.handle
    h.write("", xs.path("perm"), b"1")
    h.set_permissions("", xs.path("perm"),
                      [{"dom": 0}, {"dom": 5, "read": 1}])
    assert h.get_permissions("", xs.path("perm")) == [
        {"dom": 0, "read": 0, "write": 0}, {"dom": 5, "read": 1, "write": 0}]
    h.write("", xs.path("perm", "child"), b"2")
    assert h.get_permissions("", xs.path("perm", "child")) == \
        h.get_permissions("", xs.path("perm"))
    with pytest.raises(RuntimeError) as excinfo:
        h.get_permissions("", xs.path("nope"))
    assert errno_of(excinfo) == errno.ENOENT


def test_a_request_holds_at_most_4096_bytes_of_path_and_value(xs):
    h = xs.handle
    path = xs.path("big")
    room = 4096 - len(path) - 1                     # path, NUL, value
    h.write("", path, b"x" * room)
    assert len(h.read("", path)) == room
    with pytest.raises(RuntimeError) as excinfo:
        h.write("", path, b"y" * (room + 1))
    assert errno_of(excinfo) == errno.E2BIG
    assert h.read("", path) == b"x" * room


def test_write_permission_bits_and_dom0_ownership(xs):
    h = xs.handle
    h.write("", xs.path("own"), b"")
    h.set_permissions("", xs.path("own"), [{"dom": 7, "read": 1, "write": 1}])
    assert h.get_permissions("", xs.path("own")) == [
        {"dom": 0, "read": 0, "write": 0}, {"dom": 7, "read": 1, "write": 2}]


def test_a_transaction_belongs_to_its_connection(xs):
    h, other = xs.handle, xs.connect()
    h.write("", xs.path("conn"), b"1")
    t = h.transaction_start()
    assert other.read(t, xs.path("conn")) is None   # ENOENT reads as None
    with pytest.raises(RuntimeError) as excinfo:
        other.write(t, xs.path("conn"), b"2")
    assert errno_of(excinfo) == errno.ENOENT
    with pytest.raises(RuntimeError) as excinfo:
        other.transaction_end(t, False)
    assert errno_of(excinfo) == errno.ENOENT
    assert h.transaction_end(t, False) is True


def test_errors_are_runtime_errors_with_errno_and_message(xs):
    with pytest.raises(RuntimeError) as excinfo:
        xs.handle.transaction_end("7777", False)
    assert excinfo.value.args[0] == errno.ENOENT
    assert isinstance(excinfo.value.args[1], str)


def test_a_closed_handle_refuses_everything(xs):
    h = xs.connect()
    h.close()
    with pytest.raises(RuntimeError) as excinfo:
        h.read("", xs.root)
    assert errno_of(excinfo) == errno.EINVAL


# ---------------------------------------------------------------------------
# watches
# ---------------------------------------------------------------------------

def test_watch_fires_on_registration_with_the_path_as_given(xs):
    h = xs.handle
    token = object()
    h.watch(xs.path("not", "there"), token)
    assert next_event(h) == (xs.path("not", "there"), token)
    rel = object()
    h.watch("fastmig-relative-watch", rel)
    assert next_event(h) == ("fastmig-relative-watch", rel)
    h.unwatch("fastmig-relative-watch", rel)


def test_watch_fires_for_writes_at_and_below_but_not_beside(xs):
    h, other = xs.handle, xs.connect()
    token = object()
    h.write("", xs.path("w"), b"")
    h.watch(xs.path("w"), token)
    assert next_event(h) == (xs.path("w"), token)
    other.write("", xs.path("w"), b"1")
    other.write("", xs.path("w", "deep", "er"), b"2")
    other.write("", xs.path("sibling"), b"3")
    other.write("", xs.root, b"parent")
    other.write("", xs.path("wx"), b"prefix but not child")
    seen = no_event(h, xs.path("marker"))
    assert seen == [(xs.path("w"), token), (xs.path("w", "deep", "er"), token)]


def test_mkdir_fires_only_when_it_creates(xs):
    h = xs.handle
    token = object()
    h.watch(xs.path("md"), token)
    next_event(h)
    h.mkdir("", xs.path("md"))
    h.mkdir("", xs.path("md"))
    assert no_event(h, xs.path("marker")) == [(xs.path("md"), token)]


def test_removing_a_node_fires_its_watch_and_its_ancestors(xs):
    h, other = xs.handle, xs.connect()
    other.write("", xs.path("r", "a", "b"), b"1")
    below, at, above, absent = object(), object(), object(), object()
    h.watch(xs.path("r", "a", "b"), below)
    h.watch(xs.path("r", "a"), at)
    h.watch(xs.path("r"), above)
    h.watch(xs.path("r", "a", "b", "never"), absent)
    for _ in range(4):
        next_event(h)
    other.rm("", xs.path("r", "a"))
    seen = no_event(h, xs.path("marker"))
    # Removed descendants (deepest first) fire watches set exactly on them;
    # the removed node fires watches at or above it, once.
    assert seen == [
        (xs.path("r", "a", "b"), below),
        (xs.path("r", "a"), at),
        (xs.path("r", "a"), above),
    ]


def test_removing_an_ancestor_fires_a_watch_below_it(xs):
    h = xs.handle
    h.write("", xs.path("anc", "mid", "leaf"), b"1")
    token = object()
    h.watch(xs.path("anc", "mid", "leaf"), token)
    next_event(h)
    h.rm("", xs.root)
    assert no_event(h, "/fastmig-marker-%s" % xs.root.rsplit("/", 1)[1]) == \
        [(xs.path("anc", "mid", "leaf"), token)]


def test_unwatch_stops_events_and_drops_those_in_transit(xs):
    h = xs.handle
    token = object()
    h.watch(xs.path("u"), token)
    h.write("", xs.path("u"), b"1")           # queued, never read
    h.unwatch(xs.path("u"), token)
    h.write("", xs.path("u"), b"2")
    assert no_event(h, xs.path("marker")) == []
    with pytest.raises(RuntimeError) as excinfo:
        h.unwatch(xs.path("u"), token)
    assert errno_of(excinfo) == errno.ENOENT


def test_the_same_watch_twice_is_eexist(xs):
    h = xs.handle
    token = object()
    h.watch(xs.path("dup"), token)
    with pytest.raises(RuntimeError) as excinfo:
        h.watch(xs.path("dup"), token)
    assert errno_of(excinfo) == errno.EEXIST
    h.watch(xs.path("dup"), object())         # another token is fine


def test_read_watch_blocks_until_an_event(xs):
    h, other = xs.handle, xs.connect()
    token = object()
    h.watch(xs.path("rw"), token)
    assert h.read_watch() == (xs.path("rw"), token)
    got = queue.Queue()
    reader = threading.Thread(target=lambda: got.put(h.read_watch()))
    reader.start()
    try:
        other.write("", xs.path("rw", "x"), b"1")
        assert got.get(timeout=WAIT) == (xs.path("rw", "x"), token)
    finally:
        reader.join(WAIT)
    assert not reader.is_alive()


def test_fileno_is_readable_while_events_are_queued(xs):
    h, other = xs.handle, xs.connect()
    token = object()
    h.watch(xs.path("fd"), token)
    h.read_watch()
    fd = h.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    other.write("", xs.path("fd"), b"1")
    assert select.select([fd], [], [], WAIT)[0] == [fd]
    assert h.read_watch() == (xs.path("fd"), token)
    assert select.select([fd], [], [], 0)[0] == []


def test_one_token_on_two_paths_keeps_its_other_watch(xs):
    h = xs.handle
    token = object()
    h.watch(xs.path("one"), token)
    h.watch(xs.path("two"), token)
    next_event(h), next_event(h)
    h.unwatch(xs.path("one"), token)
    h.write("", xs.path("one"), b"1")
    h.write("", xs.path("two"), b"1")
    assert no_event(h, xs.path("marker")) == [(xs.path("two"), token)]


# ---------------------------------------------------------------------------
# transactions
# ---------------------------------------------------------------------------

def test_transaction_writes_appear_only_at_commit(xs):
    h, other = xs.handle, xs.connect()
    t = h.transaction_start()
    assert isinstance(t, str) and t not in ("", "0")
    h.write(t, xs.path("tx", "k"), b"v")
    assert h.read(t, xs.path("tx", "k")) == b"v"
    assert other.read("", xs.path("tx", "k")) is None
    assert h.read("", xs.path("tx", "k")) is None
    assert h.transaction_end(t, False) is True
    assert other.read("", xs.path("tx", "k")) == b"v"


def test_abort_discards(xs):
    h = xs.handle
    t = h.transaction_start()
    h.write(t, xs.path("ab"), b"v")
    assert h.transaction_end(t, True) is True
    assert h.read("", xs.path("ab")) is None
    with pytest.raises(RuntimeError) as excinfo:
        h.transaction_end(t, False)
    assert errno_of(excinfo) == errno.ENOENT


def test_conflicting_write_makes_commit_return_false(xs):
    h, other = xs.handle, xs.connect()
    h.write("", xs.path("c", "x"), b"0")
    t = h.transaction_start()
    assert h.read(t, xs.path("c", "x")) == b"0"
    h.write(t, xs.path("c", "y"), b"mine")
    other.write("", xs.path("c", "x"), b"theirs")
    assert h.transaction_end(t, False) is False
    assert h.read("", xs.path("c", "y")) is None
    assert h.read("", xs.path("c", "x")) == b"theirs"


def test_conflicting_remove_and_creation(xs):
    h, other = xs.handle, xs.connect()
    h.write("", xs.path("c", "gone"), b"0")
    t = h.transaction_start()
    h.read(t, xs.path("c", "gone"))
    other.rm("", xs.path("c", "gone"))
    assert h.transaction_end(t, False) is False

    t = h.transaction_start()
    assert h.read(t, xs.path("c", "born")) is None
    other.write("", xs.path("c", "born"), b"1")
    assert h.transaction_end(t, False) is False


def test_two_transactions_adding_children_to_one_parent_conflict(xs):
    h, other = xs.handle, xs.connect()
    h.write("", xs.path("par"), b"")
    t1, t2 = h.transaction_start(), other.transaction_start()
    h.write(t1, xs.path("par", "one"), b"1")
    other.write(t2, xs.path("par", "two"), b"2")
    assert h.transaction_end(t1, False) is True
    assert other.transaction_end(t2, False) is False
    assert h.ls("", xs.path("par")) == ["one"]


def test_unrelated_changes_do_not_conflict(xs):
    h, other = xs.handle, xs.connect()
    h.write("", xs.path("u", "mine"), b"0")
    h.write("", xs.path("u", "theirs"), b"0")
    t = h.transaction_start()
    h.read(t, xs.path("u", "mine"))
    h.write(t, xs.path("u", "mine"), b"1")
    other.write("", xs.path("u", "theirs"), b"1")   # existing node: parent untouched
    assert h.transaction_end(t, False) is True
    assert h.read("", xs.path("u", "mine")) == b"1"


def test_a_transaction_sees_nodes_as_they_are_when_first_touched(xs):
    # xenstored 4.17 has no start-of-transaction snapshot: a node first
    # read after someone else changed it shows the change, and commits.
    h, other = xs.handle, xs.connect()
    h.write("", xs.path("late"), b"old")
    t = h.transaction_start()
    other.write("", xs.path("late"), b"new")
    assert h.read(t, xs.path("late")) == b"new"
    other.write("", xs.path("late2"), b"x")
    assert h.transaction_end(t, False) is True


def test_transaction_events_fire_at_commit_only(xs):
    h, other = xs.handle, xs.connect()
    token = object()
    h.watch(xs.path("te"), token)
    next_event(h)
    t = other.transaction_start()
    other.write(t, xs.path("te", "a"), b"1")
    assert no_event(h, xs.path("marker1")) == []
    assert other.transaction_end(t, False) is True
    assert no_event(h, xs.path("marker2")) == [(xs.path("te", "a"), token)]
    t = other.transaction_start()
    other.write(t, xs.path("te", "b"), b"1")
    other.transaction_end(t, True)
    assert no_event(h, xs.path("marker3")) == []


def test_commit_fires_only_for_nodes_that_existed_before_or_after(xs):
    h, other = xs.handle, xs.connect()
    h.write("", xs.path("f"), b"")
    token = object()
    h.watch(xs.path("f"), token)
    next_event(h)
    t = other.transaction_start()
    other.write(t, xs.path("f", "gone", "deep"), b"1")
    other.write(t, xs.path("f", "stays"), b"1")
    other.read(t, xs.path("f"))
    other.rm(t, xs.path("f", "gone"))
    other.write(t, xs.path("f", "flash"), b"")
    other.rm(t, xs.path("f", "flash"))
    assert other.transaction_end(t, False) is True
    assert no_event(h, xs.path("marker")) == [(xs.path("f", "stays"), token)]
    assert h.ls("", xs.path("f")) == ["stays"]


def test_several_transactions_on_one_handle(xs):
    h = xs.handle
    t1, t2 = h.transaction_start(), h.transaction_start()
    assert t1 != t2
    h.write(t1, xs.path("m1"), b"1")
    h.write(t2, xs.path("m2"), b"2")
    assert h.read(t1, xs.path("m2")) is None
    assert h.transaction_end(t2, False) is True
    assert h.transaction_end(t1, False) is False    # both changed the root
    assert h.read("", xs.path("m2")) == b"2"


def test_transaction_remove_inside_commit(xs):
    h = xs.handle
    h.write("", xs.path("trm", "a", "b"), b"1")
    t = h.transaction_start()
    h.rm(t, xs.path("trm", "a"))
    assert h.read(t, xs.path("trm", "a", "b")) is None
    assert h.read("", xs.path("trm", "a", "b")) == b"1"
    assert h.transaction_end(t, False) is True
    assert h.ls("", xs.path("trm")) == []


# ---------------------------------------------------------------------------
# xend's API over the handle
# ---------------------------------------------------------------------------

@pytest.fixture
def api(xs):
    api = XendApi(xs.connect())
    yield api
    api.close()


def test_xstransact_read_write_remove_list(xs, api):
    T = api.xstransact
    base = xs.path("dev")
    T.Write(base, "state", "4", "online", "1")
    T.Write(base, {"backend": "/b/1"})
    T.Write(base, ["mode", "w"])
    assert T.Read(base, "state") == "4"
    assert T.Read(base, "state", "online") == ["4", "1"]
    assert T.Read(base + "/backend") == "/b/1"
    assert T.Read(base, "missing") is None
    assert T.List(base) == ["state", "online", "backend", "mode"]
    assert T.List(base + "/missing") == []
    T.Remove(base, "missing")
    T.Remove(base, "online", "mode")
    assert T.List(base) == ["state", "backend"]
    T.Remove(base)
    assert T.Read(base) is None
    T.Remove(base)                                   # missing: no-op


def test_xstransact_instance_and_helpers(xs, api):
    T = api.xstransact
    base = xs.path("inst")
    t = T(base + "/")
    assert t.path == base
    t.write("a/x", "1", "a/y", "2")
    t.mkdir("empty")
    assert t.list("a") == ["a/x", "a/y"]
    assert t.list("nothing") == []
    assert t.read("a/x") == "1"
    assert t.commit() is True
    with pytest.raises(RuntimeError):
        t.commit()
    assert t.abort() is True
    assert T.Gather(base, ("a/x", int), ("a/none", int, 7), ("a/y", str)) == \
        [1, 7, "2"]
    assert T.Gather(base, "a/x", int) == 1
    T.Store(base, ("n", 5), ("f", 0.5), ("a/x", None))
    assert T.Read(base, "n") == "5"
    assert T.Read(base, "f") == "0.500000"
    assert T.Read(base, "a/x") is None
    assert T.ListRecursive(base) == [["a", [["y", "2"]]], ["empty", ""],
                                     ["n", "5"], ["f", "0.500000"]]
    with pytest.raises(TypeError):
        T.Write(base, "bad", 5)                      # xend's binding takes str
    assert T.Read(base, "bad") is None


def test_xstransact_errors_carry_errno_and_path(xs, api):
    with pytest.raises(RuntimeError) as excinfo:
        api.xstransact.Read(xs.root, "bad..name")
    assert excinfo.value.args[0] == errno.EINVAL
    assert "while reading %s/bad..name" % xs.root in excinfo.value.args[1]


def test_complete_retries_a_conflicting_transaction(xs, api):
    other = xs.connect()
    node = xs.path("counter")
    other.write("", node, b"0")
    attempts = []

    def increment(t):
        value = int(t.read("counter"))
        if not attempts:
            other.write("", node, b"10")            # a concurrent writer
        attempts.append(value)
        t.write("counter", str(value + 1))
        return value + 1

    assert api.xstransact.complete(xs.root, increment) == 11
    assert attempts == [0, 10]
    assert other.read("", node) == b"11"


def test_concurrent_increments_are_never_lost(xs):
    apis = [XendApi(xs.connect()) for _ in range(2)]
    node = xs.path("shared")
    apis[0].xstransact.Write(xs.root, "shared", "0")
    errors = []

    def increment(t):
        t.write("shared", str(int(t.read("shared")) + 1))

    def worker(api):
        try:
            for _ in range(25):
                api.xstransact.complete(xs.root, increment)
        except Exception as exc:                    # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(apis[i % 2],))
               for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not [t for t in threads if t.is_alive()]
        assert errors == []
        assert xs.handle.read("", node) == b"100"
    finally:
        for api in apis:
            api.close()


def test_complete_gives_up_after_max_attempts(xs):
    api = XendApi(xs.connect(), max_attempts=3)
    other = xs.connect()
    node = xs.path("livelock")
    other.write("", node, b"0")
    calls = []

    def always_conflicting(t):
        t.read()
        calls.append(1)
        other.write("", node, str(len(calls)).encode())
        return True

    try:
        with pytest.raises(RuntimeError) as excinfo:
            api.xstransact.complete(node, always_conflicting)
        assert excinfo.value.args[0] == errno.EAGAIN
        assert len(calls) == 3
    finally:
        api.close()


def _collector():
    calls = queue.Queue()

    def fn(path, *args, **kwargs):
        calls.put((path, args, kwargs, threading.current_thread().name))
        return True
    return calls, fn


def test_xswatch_fires_at_once_and_on_changes_on_one_thread(xs, api):
    calls, fn = _collector()
    path = xs.path("xw")
    before = set(threading.enumerate())
    api.xswatch(path, fn, "extra", key="word")
    assert calls.get(timeout=WAIT) == (path, ("extra",), {"key": "word"},
                                       "Watcher")
    api.xstransact.Write(path, "child", "1")
    assert calls.get(timeout=WAIT)[0] == path + "/child"
    calls2, fn2 = _collector()
    api.xswatch(xs.path("other"), fn2)
    calls2.get(timeout=WAIT)
    started = set(threading.enumerate()) - before
    assert started == {api.watcher_thread}
    assert api.watcher_thread.name == "Watcher"
    assert api.watcher_thread.is_alive()


def test_a_false_result_unregisters_and_late_events_are_tolerated(xs, api,
                                                                  caplog):
    path = xs.path("once")
    calls = []
    first_done = threading.Event()

    def once(p):
        calls.append(p)
        first_done.set()
        return False                                 # unregister at once

    api.xswatch(path, once)
    assert first_done.wait(WAIT)
    # The owner unregisters too: the watcher's own unwatch then meets
    # ENOENT, which it must swallow.
    marker_calls = queue.Queue()

    registered = threading.Event()
    holder = []

    def both(p):
        marker_calls.put(p)
        # The first event can beat xswatch() returning its object.
        assert registered.wait(WAIT)
        holder[0].unwatch()
        return False

    holder.append(api.xswatch(xs.path("both"), both))
    registered.set()
    assert marker_calls.get(timeout=WAIT) == xs.path("both")
    with caplog.at_level(logging.ERROR):
        api.xstransact.Write(path, "x", "1")
        api.xstransact.Write(xs.path("both"), "x", "1")
        fence, fence_fn = _collector()
        api.xswatch(xs.path("fence"), fence_fn)
        fence.get(timeout=WAIT)
    assert calls == [path]
    assert marker_calls.empty()
    assert not [r for r in caplog.records
                if r.name.startswith("fastmig_tools.xenstore")]


def test_callback_exceptions_are_logged_and_the_thread_survives(xs, api,
                                                                caplog):
    def boom(p):
        raise ValueError("callback broke")

    with caplog.at_level(logging.ERROR):
        api.xswatch(xs.path("boom"), boom)
        calls, fn = _collector()
        api.xswatch(xs.path("after"), fn)
        assert calls.get(timeout=WAIT)[0] == xs.path("after")
    assert any("callback broke" in (r.exc_text or "") or
               (r.exc_info and "callback broke" in str(r.exc_info[1]))
               for r in caplog.records)
    assert api.watcher_thread.is_alive()


def test_close_stops_the_watcher_and_leaves_no_thread(xs):
    api = XendApi(xs.connect())
    calls, fn = _collector()
    api.xswatch(xs.path("c"), fn)
    calls.get(timeout=WAIT)
    thread = api.watcher_thread
    api.close()
    assert not thread.is_alive()
    assert thread not in threading.enumerate()
    api.close()                                      # idempotent
    with pytest.raises(RuntimeError):
        api.xswatch(xs.path("c"), fn)
    with pytest.raises(RuntimeError):
        api.xstransact.Read(xs.path("c"))


def test_close_reports_a_blocking_callback_and_can_be_retried(xs):
    api = XendApi(xs.connect())
    entered, release = threading.Event(), threading.Event()

    def blocker(p):
        entered.set()
        release.wait(WAIT)
        return True

    api.xswatch(xs.path("block"), blocker)
    assert entered.wait(WAIT)
    try:
        with pytest.raises(RuntimeError):
            api.close(timeout=0.1)
        with pytest.raises(RuntimeError):
            api.xswatch(xs.path("block2"), blocker)   # closing: no new watch
    finally:
        release.set()
    api.close()
    assert not api.watcher_thread.is_alive()
    with pytest.raises(RuntimeError) as excinfo:
        api.handle.read("", xs.root)
    assert errno_of(excinfo) == errno.EINVAL          # the handle is closed


def test_close_without_a_watch_and_from_a_callback(xs):
    XendApi(xs.connect()).close()
    api = XendApi(xs.connect())
    closed = threading.Event()

    def closer(p):
        api.close()
        closed.set()
        return True

    api.xswatch(xs.path("cb"), closer)
    assert closed.wait(WAIT)
    api.watcher_thread.join(WAIT)
    assert not api.watcher_thread.is_alive()


def test_store_gives_the_cores_handle(xs, api):
    store = api.store()
    assert store.xstransact is api.xstransact
    assert store.xswatch is api.xswatch


# ---------------------------------------------------------------------------
# losing the connection
# ---------------------------------------------------------------------------

@pytest.fixture(params=BACKENDS)
def doomed(request):
    """(connect, lose_every_connection, root) on a store this test owns."""
    if request.param == "embedded":
        from fastmig_tools.xenstore.embedded import EmbeddedXenstore
        store = EmbeddedXenstore()
        yield store.connect, store.reset_connections, "/doomed"
        return
    from fastmig_tools.xenstore.real import ManagedXenstored
    request.getfixturevalue("real_xenstored")   # fails (never skips) if absent
    daemon = ManagedXenstored(name="xenstored-doomed").start()
    try:
        yield daemon.open_lowlevel, daemon.kill, "/doomed"
    finally:
        daemon.stop()


def test_a_lost_connection_fails_requests_and_wakes_read_watch(doomed):
    connect, lose, root = doomed
    h = connect()
    token = object()
    h.watch(root, token)
    h.read_watch()
    got = queue.Queue()

    def reader():
        try:
            got.put(h.read_watch())
        except RuntimeError as exc:
            got.put(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    lose()
    failure = got.get(timeout=WAIT)
    thread.join(WAIT)
    assert isinstance(failure, RuntimeError)
    assert failure.args[0] == errno.EINVAL
    with pytest.raises(RuntimeError) as excinfo:
        h.read("", root)
    assert errno_of(excinfo) == errno.EBADF
    h.close()


def test_xend_api_closes_cleanly_after_losing_the_connection(doomed, caplog):
    connect, lose, root = doomed
    api = XendApi(connect())
    calls, fn = _collector()
    api.xswatch(root, fn)
    calls.get(timeout=WAIT)
    thread = api.watcher_thread
    with caplog.at_level(logging.ERROR):
        lose()
        with pytest.raises(RuntimeError):
            api.xstransact.Read(root)
        api.close()
    assert not thread.is_alive()


# ---------------------------------------------------------------------------
# the embedded store's own faces: fault injection and counters
# ---------------------------------------------------------------------------

def test_embedded_fail_next_maps_errors_like_the_binding():
    from fastmig_tools.xenstore.embedded import EmbeddedXenstore
    store = EmbeddedXenstore()
    h = store.connect()
    h.write("", "/f/x", b"1")
    store.fail_next("read", errno.EIO)
    with pytest.raises(RuntimeError) as excinfo:
        h.read("", "/f/x")
    assert errno_of(excinfo) == errno.EIO
    assert h.read("", "/f/x") == b"1"              # only the next one
    store.fail_next("read", errno.ENOENT, path="/f")
    assert h.read("", "/other") is None            # not under /f: untouched
    assert h.read("", "/f/x") is None              # ENOENT reads as missing
    store.fail_next("commit", errno.EAGAIN, count=2)
    t = h.transaction_start()
    assert h.transaction_end(t, True) is True      # abort is not a commit
    for _ in range(2):
        t = h.transaction_start()
        h.write(t, "/f/y", b"1")
        assert h.transaction_end(t, False) is False
    assert h.read("", "/f/y") is None
    store.fail_next("write", errno.ENOSPC)
    with pytest.raises(RuntimeError):
        h.write("", "/f/z", b"1")
    assert h.read("", "/f/z") is None
    with pytest.raises(ValueError):
        store.fail_next("frobnicate", errno.EIO)


def test_embedded_complete_retries_injected_conflicts():
    from fastmig_tools.xenstore.embedded import EmbeddedXenstore
    store = EmbeddedXenstore()
    api = XendApi(store.connect())
    try:
        store.fail_next("commit", errno.EAGAIN, count=3)
        api.xstransact.Write("/c", "k", "v")
        assert api.xstransact.Read("/c", "k") == "v"
        assert store.op_counts["transaction_end"] == 5
    finally:
        api.close()


def test_embedded_counts_requests_and_fires_special_watches():
    from fastmig_tools.xenstore.embedded import EmbeddedXenstore
    store = EmbeddedXenstore()
    h = store.connect()
    before = store.op_count
    h.write("", "/n", b"1")
    h.read("", "/n")
    h.ls("", "/")
    assert store.op_count - before == 3
    assert store.op_counts["read"] == 1
    token = object()
    h.watch("@releaseDomain", token)
    assert h.read_watch() == ("@releaseDomain", token)
    store.fire_special("@releaseDomain")
    assert h.read_watch() == ("@releaseDomain", token)
    assert store.dump("/n") == {"/n": b"1"}
    assert store.connections == 1
    h.close()
    assert store.connections == 0


# ---------------------------------------------------------------------------
# the embedded store's Xen 3.1 flavour (no real 3.1 daemon here: these pin
# the behaviour read from xen@3.1.0-branched tools/xenstore)
# ---------------------------------------------------------------------------

@pytest.fixture
def xen31():
    from fastmig_tools.xenstore.embedded import EmbeddedXenstore
    store = EmbeddedXenstore(flavour="xen31")
    return store, store.connect(), store.connect()


def test_xen31_transactions_see_the_store_as_it_was_at_their_start(xen31):
    store, h, other = xen31
    h.write("", "/a", b"old")
    t = h.transaction_start()
    other.write("", "/a", b"new")
    assert h.read(t, "/a") == b"old"
    assert h.transaction_end(t, False) is False


def test_xen31_any_change_or_commit_conflicts(xen31):
    store, h, other = xen31
    h.write("", "/mine", b"0")
    t = h.transaction_start()
    h.write(t, "/mine", b"1")
    other.write("", "/unrelated", b"1")
    assert h.transaction_end(t, False) is False
    assert h.read("", "/mine") == b"0"
    t1, t2 = h.transaction_start(), other.transaction_start()
    h.read(t1, "/mine")
    assert h.transaction_end(t1, False) is True     # read-only, but a commit
    assert other.transaction_end(t2, False) is False
    t = h.transaction_start()
    h.write(t, "/mine", b"2")
    assert h.transaction_end(t, False) is True
    assert other.read("", "/mine") == b"2"


def test_xen31_rm_fires_once_up_and_for_every_watch_below(xen31):
    store, h, other = xen31
    other.write("", "/r/a/b", b"1")
    below, at, above, absent = object(), object(), object(), object()
    h.watch("/r/a/b", below)
    h.watch("/r/a", at)
    h.watch("/r", above)
    h.watch("/r/a/b/never", absent)
    for _ in range(4):
        next_event(h)
    other.rm("", "/r/a")
    assert no_event(h, "/marker") == [
        ("/r/a/b", below), ("/r/a", at), ("/r/a", above),
        ("/r/a/b/never", absent)]


def test_xen31_transaction_events_fire_at_commit(xen31):
    store, h, other = xen31
    token = object()
    h.watch("/te", token)
    next_event(h)
    t = other.transaction_start()
    other.write(t, "/te/a/b", b"1")
    other.rm(t, "/te/a")
    assert no_event(h, "/m1") == []
    assert other.transaction_end(t, False) is True
    assert no_event(h, "/m2") == [("/te/a/b", token), ("/te/a", token)]
    assert h.ls("", "/te") == []


def test_xen31_complete_retries_until_quiet(xen31):
    store, h, other = xen31
    api = XendApi(h)
    try:
        other.write("", "/x/n", b"0")
        attempts = []

        def bump(t):
            attempts.append(1)
            if len(attempts) < 3:
                other.write("", "/elsewhere", b"%d" % len(attempts))
            t.write("n", str(int(t.read("n")) + 1))

        api.xstransact.complete("/x", bump)
        assert len(attempts) == 3
        assert other.read("", "/x/n") == b"1"
    finally:
        api.close()
