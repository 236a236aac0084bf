"""The dom0 behaviour models (fastmig_tools.models) on both stores.

Every test runs on the embedded store and on the real xenstored; each actor
gets a connection of its own, as in a dom0.  Times are monotonic; what the
tests compare are orders of events, observed from the outside where it
matters (a watch of the test's own on the store).
"""
from __future__ import annotations

import errno
import itertools
import os
import threading
import time
import uuid as uuidlib
from types import SimpleNamespace

import pytest

from fastmig_tools.models.blkback import (
    ClassicBlkback,
    HungBlkback,
    HungShutdownRequestBlkback,
    InflightRequest,
    ShutdownRequestBlkback,
    advertise_shutdown_request,
    start_backends,
)
from fastmig_tools.models.domain import ModelDomainInfo, VmError
from fastmig_tools.models.layout import vbd_devid, write_domain_layout
from fastmig_tools.models.netback import ClassicNetback
from fastmig_tools.models.xenbus_backend import XenbusBackend, Xenwatch
from fastmig_tools.xenstore.embedded import EmbeddedXenstore
from fastmig_tools.xenstore.xend_api import XendApi

WAIT = 10.0  # deadline of every wait for something that must happen

# Domain ids unique across the session (the real daemon is shared).
_domids = itertools.count(1000 + (os.getpid() % 20000))


class _Env:
    """One store (embedded or real) with connection and cleanup helpers."""

    def __init__(self, kind, connect):
        self.kind = kind
        self._connect = connect
        self._apis = []
        self._actors = []
        self._domains = []
        self.admin = self.api()

    def api(self):
        api = XendApi(self._connect())
        self._apis.append(api)
        return api

    def actor(self, factory, backend, **kwargs):
        actor = factory(self.api(), backend, **kwargs)
        self._actors.append(actor)
        return actor

    def domain(self, vbds=("/dev/vg/disk0",), taps=(), vifs=(), **kwargs):
        domid = next(_domids)
        uuid = str(uuidlib.uuid4())
        self._domains.append((domid, uuid))
        layout = write_domain_layout(self.admin, domid, "guest-%d" % domid,
                                     uuid, vbds, taps, vifs, **kwargs)
        return layout

    def new_domid(self):
        domid = next(_domids)
        return domid

    def forget(self, domid, uuid):
        self._domains.append((domid, uuid))

    def read(self, path, key=None):
        if key is None:
            return self.admin.xstransact.Read(path)
        return self.admin.xstransact.Read(path, key)

    def close(self):
        for actor in self._actors:
            actor.stop()
        xst = self.admin.xstransact
        for domid, uuid in self._domains:
            xst.Remove("/local/domain/%d" % domid)
            xst.Remove("/vm/%s" % uuid)
            for cls in ("vbd", "tap", "vif"):
                xst.Remove("/local/domain/0/backend/%s/%d" % (cls, domid))
                xst.Remove("/local/domain/0/error/backend/%s/%d" % (cls, domid))
        for api in reversed(self._apis):
            api.close()


@pytest.fixture(params=["embedded", "real"])
def env(request):
    if request.param == "embedded":
        connect = EmbeddedXenstore().connect
    else:
        connect = request.getfixturevalue("real_xenstored").open_lowlevel
    e = _Env(request.param, connect)
    try:
        yield e
    finally:
        e.close()


class Observer:
    """The test's own watch on a path: when did a condition first hold?"""

    def __init__(self, env, path, key, predicate):
        self.env = env
        self.path = path
        self.key = key
        self.predicate = predicate
        self.at = None
        self.event = threading.Event()
        self._api = env.api()
        self._watch = self._api.xswatch(path, self._fired)

    def _fired(self, _path):
        if self.at is not None:
            return False
        if self.key is None:
            value = self._api.xstransact.Read(self.path)
        else:
            value = self._api.xstransact.Read(self.path, self.key)
        if self.predicate(value):
            self.at = time.monotonic()
            self.event.set()
            return False
        return True

    def wait(self, timeout=WAIT):
        assert self.event.wait(timeout), "%s never reached" % self.path
        return self.at


def gone(env, path):
    return Observer(env, path, None, lambda v: v is None)


def equals(env, path, key, value):
    return Observer(env, path, key, lambda v: v == value)


def requests(*delays):
    return [InflightRequest(sector=8 * i, data=b"x%d" % i, delay=d)
            for i, d in enumerate(delays)]


def blkback_threads():
    return [t for t in threading.enumerate()
            if t.name.startswith("blkback-") and t.is_alive()]


# ---------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------

def test_layout_is_a_running_31_pv_domain(env):
    layout = env.domain(vbds=["/dev/vg/a", {"uname": "file:/img/b"}],
                        taps=["/img/c.img"], vifs=[None, "00:16:3e:01:02:03"])
    d = layout.dompath
    assert env.read(d, "vm") == layout.vmpath
    assert env.read(d, "name") == layout.name
    assert env.read(d, "domid") == str(layout.domid)
    assert [x.devid for x in layout.vbds] == [51712, 51728]
    assert [x.devid for x in layout.taps] == [vbd_devid(2)]
    assert [x.devid for x in layout.vifs] == [0, 1]
    assert sorted(env.admin.xstransact.List(d + "/device/vbd")) == sorted(
        ["51712", "51728", "51744"])
    tap = layout.taps[0]
    # blktap1: blkfront's frontend under device/vbd, backend under tap.
    assert tap.frontend == "%s/device/vbd/51744" % d
    assert tap.backend == "/local/domain/0/backend/tap/%d/51744" % layout.domid
    assert env.read(tap.backend, "params") == "aio:/img/c.img"
    for dev in layout.devices:
        assert env.read(dev.frontend, "backend") == dev.backend
        assert env.read(dev.frontend, "backend-id") == "0"
        assert env.read(dev.frontend, "state") == "4"
        assert env.read(dev.backend, "frontend") == dev.frontend
        assert env.read(dev.backend, "frontend-id") == str(layout.domid)
        assert env.read(dev.backend, "online") == "1"
        assert env.read(dev.backend, "state") == "4"
        assert env.read(dev.backend, "hotplug-status") == "connected"
        assert env.read(dev.vm_device) is not None
    vbd = layout.vbds[1]
    assert env.read(vbd.backend, "dev") == "xvdb"
    assert env.read(vbd.backend, "type") == "file"
    assert env.read(vbd.backend, "params") == "/img/b"
    assert env.read(layout.vifs[1].frontend, "mac") == "00:16:3e:01:02:03"


# ---------------------------------------------------------------------------
# classic blkback
# ---------------------------------------------------------------------------

def test_classic_release_waits_for_last_inflight_request(env):
    layout = env.domain()
    dev = layout.vbds[0]
    completions = []
    actor = env.actor(ClassicBlkback, dev.backend,
                      requests=requests(0.05, 0.3, 0.15),
                      on_complete=lambda r, t: completions.append((r.sector, t)))
    actor.start()
    backend_gone = gone(env, dev.backend)
    t0 = time.monotonic()
    actor.set_suspend_time(t0)
    # What the handover does to a classic backend.
    env.admin.xstransact.Write(dev.backend, "online", "0")
    env.admin.xstransact.Remove(dev.frontend)
    seen = backend_gone.wait()
    assert actor.wait_removed(WAIT)
    last = actor.last_completion()
    assert last is not None and last >= t0 + 0.3
    assert seen >= last, "backend directory went before the last request"
    assert actor.removed_at >= actor.drained_at >= last
    assert [s for s, _ in completions] == [0, 16, 8]
    assert actor.unregister_reason == "frontend gone"
    assert env.read(actor.error_path) is None
    assert env.read(dev.frontend) is None


def test_classic_closed_is_written_before_the_drain(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(ClassicBlkback, dev.backend, requests=requests(0.3))
    actor.start()
    closed = equals(env, dev.backend, "state", "6")
    backend_gone = gone(env, dev.backend)
    t0 = time.monotonic()
    actor.set_suspend_time(t0)
    env.admin.xstransact.Write(dev.backend, "online", "0")
    env.admin.xstransact.Write(dev.frontend, "state", "6")
    closed_at = closed.wait()
    gone_at = backend_gone.wait()
    last = actor.last_completion()
    assert closed_at < last <= gone_at
    assert actor.closed_written_at < actor.drained_at


def test_classic_closed_while_online_only_closes(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(ClassicBlkback, dev.backend).start()
    closed = equals(env, dev.backend, "state", "6")
    env.admin.xstransact.Write(dev.frontend, "state", "6")
    closed.wait()
    # Then the frontend goes: now it unregisters although still online.
    env.admin.xstransact.Remove(dev.frontend)
    assert actor.wait_removed(WAIT)
    assert actor.unregister_reason == "frontend gone"


def test_classic_frontend_closing_drains_then_writes_closing(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(ClassicBlkback, dev.backend, requests=requests(0.2))
    actor.start()
    closing = equals(env, dev.backend, "state", "5")
    actor.set_suspend_time(time.monotonic())
    env.admin.xstransact.Write(dev.frontend, "state", "5")
    closing_at = closing.wait()
    assert closing_at >= actor.last_completion()
    assert not actor.unregistered
    assert env.read(dev.backend) is not None


def test_tap_closing_does_not_drain_but_removal_does(env):
    layout = env.domain(vbds=(), taps=["/img/t.img"])
    dev = layout.taps[0]
    actor = env.actor(ClassicBlkback, dev.backend, requests=requests(0.3))
    actor.start()
    closing = equals(env, dev.backend, "state", "5")
    backend_gone = gone(env, dev.backend)
    actor.set_suspend_time(time.monotonic())
    env.admin.xstransact.Write(dev.frontend, "state", "5")
    closing_at = closing.wait()
    env.admin.xstransact.Write(dev.backend, "online", "0")
    env.admin.xstransact.Remove(dev.frontend)
    gone_at = backend_gone.wait()
    last = actor.last_completion()
    assert closing_at < last <= gone_at


def test_netback_is_a_xenbus_backend_with_nothing_in_flight(env):
    """Netback shares blkback's xenbus plumbing, not its block driver:
    block checks never take it for a disk, Closing only writes state 5,
    and the frontend's Closed while offline ends in udev's cleanup."""
    layout = env.domain(vbds=(), vifs=[None])
    dev = layout.vifs[0]
    actor = env.actor(ClassicNetback, dev.backend).start()
    assert isinstance(actor, XenbusBackend)
    assert not isinstance(actor, ClassicBlkback)
    assert actor.pending() == 0 and actor.requests == []
    assert actor.running and actor._thread.name.startswith("netback-")
    closing = equals(env, dev.backend, "state", "5")
    env.admin.xstransact.Write(dev.frontend, "state", "5")
    closing.wait()
    assert actor.drains == []
    env.admin.xstransact.Write(dev.backend, "online", "0")
    env.admin.xstransact.Write(dev.frontend, "state", "6")
    assert actor.wait_removed(WAIT)
    assert actor.unregister_reason == "frontend closed, offline"
    assert env.read(dev.frontend) is None


def test_toolstack_writing_backend_state_alone_does_nothing(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(ClassicBlkback, dev.backend, requests=requests(0.0))
    actor.start()
    actor.set_suspend_time(time.monotonic())
    assert actor.wait_for(lambda a: a.pending() == 0, WAIT)
    seen = actor.backend_events
    # What stock destroyDevice(force=False) writes.
    env.admin.xstransact.Write(dev.backend, "online", "0")
    env.admin.xstransact.Write(dev.backend, "state", "5")
    assert actor.wait_for(lambda a: a.backend_events >= seen + 2
                          and a.backend_events_handled == a.backend_events,
                          WAIT)
    assert not actor.unregistered
    assert actor.drained_at is None
    assert actor.closing_written_at is None
    assert env.read(dev.backend, "state") == "5"
    assert env.read(dev.backend, "hotplug-status") == "connected"


def test_backend_removed_by_toolstack_still_drains_but_shows_nothing(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(ClassicBlkback, dev.backend, requests=requests(0.2))
    actor.start()
    env.admin.xstransact.Write(actor.error_path, "error", "boom")
    t0 = time.monotonic()
    actor.set_suspend_time(t0)
    # The 2008 patch's forced destroyDevice.
    env.admin.xstransact.Remove(dev.backend)
    env.admin.xstransact.Remove(dev.frontend)
    assert actor.wait_drained(WAIT)
    assert actor.unregister_reason == "backend removed", actor.events
    assert actor.drained_at >= actor.last_completion() >= t0 + 0.2
    assert actor.removed_at is None
    assert actor.wait_for(lambda a: env.read(a.error_path) is None, WAIT)


def test_remove_before_drain_knob_releases_too_early(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(ClassicBlkback, dev.backend, requests=requests(0.3),
                      remove_before_drain=True)
    actor.start()
    backend_gone = gone(env, dev.backend)
    actor.set_suspend_time(time.monotonic())
    env.admin.xstransact.Remove(dev.frontend)
    gone_at = backend_gone.wait()
    assert actor.wait_drained(WAIT)
    assert gone_at < actor.last_completion()


def test_hotplug_delay_postpones_cleanup(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(ClassicBlkback, dev.backend, hotplug_delay=0.2)
    actor.start()
    env.admin.xstransact.Remove(dev.frontend)
    assert actor.wait_removed(WAIT)
    assert actor.removed_at >= actor.drained_at + 0.2


def test_requests_wait_for_the_suspend_time(env):
    layout = env.domain()
    actor = env.actor(ClassicBlkback, layout.vbds[0].backend,
                      requests=requests(0.0))
    actor.start()
    extra = actor.issue(InflightRequest(sector=99, data=b"y", delay=0.05))
    assert not actor.wait_for(lambda a: a.pending() == 0, 0.2)
    t0 = time.monotonic()
    actor.set_suspend_time(t0)
    assert actor.wait_for(lambda a: a.pending() == 0, WAIT)
    assert extra.completed_at >= t0 + 0.05
    assert extra.block == 99


# ---------------------------------------------------------------------------
# shutdown-request, hung
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["force", "normal"])
def test_shutdown_request_answers_after_the_drain(env, kind):
    layout = env.domain()
    dev = layout.vbds[0]
    path = advertise_shutdown_request(env.admin, 0)
    assert env.read(path) == "1"
    actor = env.actor(ShutdownRequestBlkback, dev.backend,
                      requests=requests(0.1, 0.25))
    actor.start()
    done = Observer(env, dev.backend, "shutdown-done", lambda v: v is not None)
    t0 = time.monotonic()
    actor.set_suspend_time(t0)
    if kind == "normal":
        env.admin.xstransact.Write(dev.backend, "online", "0")
    env.admin.xstransact.Write(dev.backend, "shutdown-request", kind)
    done_at = done.wait()
    assert done_at >= actor.last_completion() >= t0 + 0.25
    assert actor.shutdown_requested == kind
    # The toolstack then removes the entries; nothing is left behind.
    env.admin.xstransact.Remove(dev.backend)
    env.admin.xstransact.Remove(dev.frontend)
    assert actor.wait_unregistered(WAIT)


def test_shutdown_request_is_ignored_by_classic(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(ClassicBlkback, dev.backend).start()
    seen = actor.backend_events
    env.admin.xstransact.Write(dev.backend, "shutdown-request", "force")
    assert actor.wait_for(lambda a: a.backend_events > seen
                          and a.backend_events_handled == a.backend_events,
                          WAIT)
    assert env.read(dev.backend, "shutdown-done") is None
    assert actor.drained_at is None


def test_hung_never_drains_until_stopped(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(HungBlkback, dev.backend, requests=requests(0.05))
    actor.start()
    actor.set_suspend_time(time.monotonic())
    env.admin.xstransact.Write(dev.backend, "online", "0")
    env.admin.xstransact.Remove(dev.frontend)
    assert actor.wait_unregistered(WAIT)
    assert actor.wait_for(lambda a: a.pending() == 0, WAIT)
    assert not actor.wait_drained(0.3)
    assert env.read(dev.backend) is not None
    actor.stop()
    assert not actor.running
    assert actor.drained_at is None


def test_hung_shutdown_request_never_answers(env):
    layout = env.domain()
    dev = layout.vbds[0]
    actor = env.actor(HungShutdownRequestBlkback, dev.backend).start()
    env.admin.xstransact.Write(dev.backend, "shutdown-request", "force")
    assert actor.wait_for(lambda a: a.shutdown_requested == "force", WAIT)
    assert not actor.wait_shutdown_done(0.3)
    assert env.read(dev.backend, "shutdown-done") is None


# ---------------------------------------------------------------------------
# stop()
# ---------------------------------------------------------------------------

class _CountingStore:
    """A store handle that remembers every watch an actor registered."""

    def __init__(self, api):
        self.xstransact = api.xstransact
        self.watches = []

        def xswatch(path, fn, *args):
            w = api.xswatch(path, fn, *args)
            self.watches.append(w)
            return w

        self.xswatch = xswatch


def test_stop_leaves_no_thread_and_no_watch(env):
    layout = env.domain(vbds=["/a", "/b"])
    before = blkback_threads()
    stores = [_CountingStore(env.api()) for _ in layout.vbds]
    actors = [ClassicBlkback(s, d.backend, requests=requests(5.0)).start()
              for s, d in zip(stores, layout.vbds)]
    actors.append(HungBlkback(env.api(), layout.vbds[0].backend).start())
    assert len(blkback_threads()) == len(before) + 3
    for actor in actors:
        actor.set_suspend_time(time.monotonic())
    env.admin.xstransact.Remove(layout.vbds[0].frontend)
    assert actors[0].wait_unregistered(WAIT)
    for actor in actors:
        actor.stop()
        actor.stop()  # idempotent
    assert blkback_threads() == before
    for store in stores:
        assert len(store.watches) == 2
        for w in store.watches:
            with pytest.raises(RuntimeError) as info:
                w.unwatch()
            assert info.value.args[0] in (errno.ENOENT, errno.EINVAL)
    # A stopped actor never completes what was pending.
    assert actors[1].pending() == 1


def test_start_backends_helper(env):
    layout = env.domain(vbds=["/a"], taps=["/t"], vifs=[None])
    actors = start_backends(env.api, layout, factory=ClassicBlkback)
    try:
        assert sorted(a.devclass for a in actors) == ["tap", "vbd"]
        assert actors[0].xenwatch is not None
        assert actors[0].xenwatch is actors[1].xenwatch
    finally:
        for actor in actors:
            actor.stop()


# ---------------------------------------------------------------------------
# ModelDomainInfo
# ---------------------------------------------------------------------------

def _dominfo(env, **kwargs):
    domid = env.new_domid()
    kwargs.setdefault("vbds", ["/dev/vg/a"])
    info = ModelDomainInfo(env.api(), domid, "vm-%d" % domid, **kwargs)
    env.forget(domid, info.uuid)
    return info


def test_dominfo_surface(env):
    info = _dominfo(env, notes={"SUSPEND_CANCEL": 1})
    assert info.getDomid() == info.layout.domid
    assert info.dompath == "/local/domain/%d" % info.getDomid()
    assert info.vmpath == "/vm/%s" % info.uuid
    assert info.info["name_label"] == info.getName()
    assert info.info.is_hvm() is False
    assert info.info.get_notes() == {"SUSPEND_CANCEL": 1}
    assert info.image is None
    info.setName("migrating-vm")
    assert info.getName() == "migrating-vm"
    assert env.read(info.vmpath, "name") == "migrating-vm"
    info.migrateDevices(True, "10.0.0.2", 2, "migrating-vm")
    assert info.migrate_calls == [(True, "10.0.0.2", 2, "migrating-vm")]
    assert info.getDeviceController("vbd").deviceIDs() == [51712]


def test_shutdown_suspend_and_wait(env):
    seen = []
    info = _dominfo(env, suspend_delay=0.1, on_suspend=seen.append)
    assert info.state == "running"
    info.shutdown("suspend")
    assert env.read(info.dompath + "/control", "shutdown") == "suspend"
    info.waitForShutdown()
    assert info.state == "suspended"
    assert info.times["suspended"] >= info.times["shutdown_requested"] + 0.1
    assert seen == [info.times["suspended"]]
    with pytest.raises(RuntimeError):
        info.shutdown("suspend")


def test_destroy_domain_takes_its_time_and_clears_domid_first(env):
    info = _dominfo(env, memory_gb=2.0, destroy_seconds_per_gb=0.1,
                    vifs=[None])
    domid = info.getDomid()
    dev = info.layout.vbds[0]
    domid_at_release = []
    original = info._releaseDevices

    def spy(*args):
        domid_at_release.append(info.getDomid())
        return original(*args)

    info._releaseDevices = spy
    info.destroyDomain()
    assert info.times["destroyed"] - info.times["destroy_started"] >= 0.2
    assert info.times["domid_cleared"] - info.times["destroy_started"] >= 0.2
    assert domid_at_release == [None]
    assert info.times["domid_cleared"] <= info.times["devices_released"]
    assert info.getDomid() is None and info.destroyed_domid == domid
    assert info.state == "destroyed"
    assert env.read(info.dompath) is None
    assert env.read(info.vmpath) is None
    # The backends are dom0's: still there (no blkback ran here), and the
    # stock wait lists backend/vbd/None: vacuous.
    assert env.read(dev.backend) is not None
    assert info.getDeviceController("vbd").backendRoot().endswith("/None")
    t = time.monotonic()
    info.testDeviceComplete()
    assert time.monotonic() - t < 0.1


def test_stock_release_and_wait_with_classic_blkback(env):
    info = _dominfo(env, vbds=["/a", "/b"])
    actors = [env.actor(ClassicBlkback, d.backend, requests=requests(0.3))
              for d in info.layout.vbds]
    for actor in actors:
        actor.start()
        actor.set_suspend_time(time.monotonic())
    info._releaseDevices()
    assert env.admin.xstransact.List(info.dompath + "/device/vbd") == []
    info.testDeviceComplete()
    returned = info.times["test_device_complete_returned"]
    assert info.getDeviceController("vbd").deviceIDs() == []
    for actor in actors:
        assert actor.removed_at is not None
        assert returned >= actor.removed_at >= actor.last_completion()


def test_destroy_device(env):
    info = _dominfo(env, vbds=["/a", "/b"], vifs=[None])
    vbd0, vbd1 = info.layout.vbds
    ctl = info.getDeviceController("vbd")
    ctl.destroyDevice(vbd0.devid, False)
    assert env.read(vbd0.backend, "online") == "0"
    assert env.read(vbd0.backend, "state") == "5"
    assert env.read(vbd0.frontend) is not None
    assert env.read(vbd0.vm_device) is None
    ctl.destroyDevice("xvdb", True)
    assert env.read(vbd1.backend) is None
    assert env.read(vbd1.frontend) is None
    assert env.read(vbd1.vm_device) is None
    with pytest.raises(VmError):
        ctl.destroyDevice(vbd1.devid, True)
    vif = info.layout.vifs[0]
    info.getDeviceController("vif").destroyDevice(str(vif.devid), True)
    assert env.read(vif.backend) is None


def test_resume_fast_with_suspend_cancel(env):
    info = _dominfo(env, notes={"SUSPEND_CANCEL": 1})
    info.shutdown("suspend")
    info.waitForShutdown()
    info.resumeDomain()
    assert info.resume_path == "fast"
    assert info.state == "resumed"
    assert not info.called("_createDevices")
    assert info.resume_error is None


def test_resume_recreates_devices_without_suspend_cancel(env):
    info = _dominfo(env, vbds=["/a"], vifs=[None])
    actors = [env.actor(ClassicBlkback, info.layout.vbds[0].backend),
              env.actor(ClassicNetback, info.layout.vifs[0].backend)]
    for actor in actors:
        actor.start()
    info.shutdown("suspend")
    info.waitForShutdown()
    info.resumeDomain()
    assert info.resume_error is None
    assert info.resume_path == "recreate"
    names = [c[1] for c in info.calls]
    expected = ["_releaseDevices", "testDeviceComplete", "testvifsComplete",
                "_resetChannels", "_createChannels", "_introduceDomain",
                "_storeDomDetails", "_createDevices", "xc.domain_resume"]
    assert [n for n in names if n in expected] == expected
    for actor in actors:
        assert actor.removed_at is not None
    assert env.read(info.dompath + "/control", "shutdown") is None
    for dev in info.layout.devices:
        assert env.read(dev.frontend, "state") == "4"
        assert env.read(dev.backend, "state") == "4"
    assert info.state == "resumed"


def test_resume_after_destroy_is_skipped(env):
    info = _dominfo(env)
    info.destroyDomain()
    info.resumeDomain()
    assert info.resume_path == "skipped"
    assert info.state == "destroyed"


def test_the_patched_branches_run_only_when_asked(env, monkeypatch):
    """The series' hunks: force / io_done delegate to the package, the
    stock branches stay stock."""
    from xend_fastmig import drain, release
    calls = []
    monkeypatch.setattr(release, "release_block_devices",
                        lambda d, s=None: calls.append(("release", d)) or [])
    monkeypatch.setattr(drain, "wait_for_drain",
                        lambda d: calls.append(("drain", d)) or [])
    info = _dominfo(env, vbds=())
    assert info._releaseDevices(False, True) == []
    assert info.testDeviceComplete(io_done=True) == []
    info.testDeviceComplete()
    info._releaseDevices()
    assert calls == [("release", info), ("drain", info)]


def test_resume_after_a_release_recreates_even_with_suspend_cancel(env):
    info = _dominfo(env, notes={"SUSPEND_CANCEL": 1}, vbds=())
    info.shutdown("suspend")
    info.waitForShutdown()
    info.resumeDomain(devices_released=True)
    assert info.resume_path == "recreate"
    assert info.resume_error is None
    assert info.state == "resumed"


def test_an_hvm_guest_cannot_be_resumed_uncooperatively(env):
    """3.1's libxc: "Cannot resume uncooperative HVM guests"."""
    info = _dominfo(env, hvm=True, notes={"SUSPEND_CANCEL": 1}, vbds=())
    info.shutdown("suspend")
    info.waitForShutdown()
    info.resumeDomain(devices_released=True)
    assert "uncooperative HVM" in str(info.resume_error)
    assert info.state == "suspended"


def test_create_devices_refuses_while_an_old_backend_stands(env):
    """3.1's createDevice: "Device ... is already connected"."""
    info = _dominfo(env, taps=["/img/t"], vbds=())
    info.shutdown("suspend")
    info.waitForShutdown()
    with pytest.raises(VmError) as excinfo:
        info._createDevices()
    assert "already connected" in str(excinfo.value)


def test_state_query_alone_reports_the_suspension(env):
    seen = []
    info = _dominfo(env, suspend_delay=0.05, on_suspend=seen.append)
    info.shutdown("suspend")
    assert info.state == "running"
    deadline = time.monotonic() + WAIT
    while info.state != "suspended":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert seen == [info.times["suspended"]]
    with pytest.raises(RuntimeError):
        _dominfo(env).waitForShutdown(timeout=0.1)


def test_classic_without_watches_polls(env):
    layout = env.domain()
    dev = layout.vbds[0]
    api = env.api()
    store = SimpleNamespace(xstransact=api.xstransact, xswatch=None)
    actor = ClassicBlkback(store, dev.backend, requests=requests(0.1),
                           poll_interval=0.01).start()
    try:
        actor.set_suspend_time(time.monotonic())
        env.admin.xstransact.Remove(dev.frontend)
        assert actor.wait_removed(WAIT)
        assert actor.removed_at >= actor.last_completion()
    finally:
        actor.stop()


# ---------------------------------------------------------------------------
# one xenwatch thread per dom0
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [True, False])
def test_shared_xenwatch_serialises_teardowns(env, shared):
    layout = env.domain(vbds=["/a", "/b"])
    a, b = layout.vbds
    xenwatch = Xenwatch() if shared else None
    slow = env.actor(ClassicBlkback, a.backend, requests=requests(0.3),
                     xenwatch=xenwatch).start()
    quick = env.actor(ClassicBlkback, b.backend, xenwatch=xenwatch).start()
    b_gone = gone(env, b.backend)
    slow.set_suspend_time(time.monotonic())
    env.admin.xstransact.Remove(a.frontend)
    assert slow.wait_unregistered(WAIT)
    env.admin.xstransact.Remove(b.frontend)
    b_gone_at = b_gone.wait()
    assert slow.wait_removed(WAIT)
    if shared:
        assert b_gone_at >= slow.drained_at >= slow.last_completion()
    else:
        assert b_gone_at < slow.last_completion()


def test_hung_backend_blocks_the_others_on_its_xenwatch(env):
    layout = env.domain(vbds=["/a", "/b"])
    a, b = layout.vbds
    xenwatch = Xenwatch()
    hung = env.actor(HungBlkback, a.backend, xenwatch=xenwatch).start()
    other = env.actor(ClassicBlkback, b.backend, xenwatch=xenwatch).start()
    env.admin.xstransact.Remove(a.frontend)
    assert hung.wait_unregistered(WAIT)
    assert xenwatch.owner is hung
    env.admin.xstransact.Remove(b.frontend)
    assert not other.wait_unregistered(0.3)
    assert env.read(b.backend) is not None
    hung.stop()
    assert other.wait_removed(WAIT)
    assert xenwatch.owner is None
