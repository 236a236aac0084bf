import socket
import threading

import pytest

from tests.unit.fakes import FakeDomInfo, FakePlatform, write_pv_domain
from xend_fastmig.handover import AT_TARGET, Environment
from xend_fastmig.migrate import domain_migrate
from xend_fastmig.options import FastMigrationOptions


class Xd(object):
    def __init__(self, dominfo):
        self.dominfo = dominfo

    def domain_lookup_nr(self, domid):
        if self.dominfo is not None and domid == self.dominfo.domid:
            return self.dominfo
        return None


class Listener(object):
    """A relocation listener on loopback that answers as told."""

    def __init__(self, ready=b"(ready receive)\n", verdict=b"(ok)\n"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.ready = ready
        self.verdict = verdict
        self.received = []
        self.thread = threading.Thread(target=self.serve)
        self.thread.start()

    def serve(self):
        conn = self.sock.accept()[0]
        try:
            self.received.append(conn.recv(8))
            conn.sendall(self.ready)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                self.received.append(data)
            if self.verdict:
                conn.sendall(self.verdict)
        except socket.error:
            self.received.append("reset")
        conn.close()

    def close(self):
        self.thread.join(10)
        self.sock.close()


def prepare(store):
    journal = []
    write_pv_domain(store, 7, vbds=())
    dominfo = FakeDomInfo(store, journal=journal)
    env = Environment(store, FakePlatform(journal), FastMigrationOptions(
        drain_timeout=2, verdict_timeout=2))
    return dominfo, env, journal


def test_migrates_through_the_handover(store):
    dominfo, env, journal = prepare(store)
    listener = Listener()
    try:
        report = domain_migrate(Xd(dominfo), 7, "127.0.0.1", True, 0,
                                listener.port, env=env)
    finally:
        listener.close()
    assert listener.received[0] == b"receive\n"
    assert report.outcome == AT_TARGET
    assert journal[:2] == ["testMigrateDevices", "checkLiveMigrateMemory"]


def test_a_refusing_target_gets_nothing_and_the_source_stays(store):
    dominfo, env, journal = prepare(store)
    listener = Listener(ready=b'(err (value "not allowed"))\n')
    try:
        with pytest.raises(RuntimeError) as info:
            domain_migrate(Xd(dominfo), 7, "127.0.0.1", True, 0,
                           listener.port, env=env)
    finally:
        listener.close()
    assert "refused the migration" in str(info.value)
    assert "shutdown:suspend" not in journal
    assert len(listener.received) == 1 or listener.received[1] == "reset"


def test_unknown_domain_and_dom0_are_refused(store):
    dominfo, env, journal = prepare(store)
    with pytest.raises(LookupError):
        domain_migrate(Xd(dominfo), 99, "127.0.0.1", env=env)
    dominfo.domid = 0
    with pytest.raises(RuntimeError):
        domain_migrate(Xd(dominfo), 0, "127.0.0.1", env=env)


def test_connection_refused_is_an_xend_error(store):
    dominfo, env, journal = prepare(store)
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    with pytest.raises(RuntimeError) as info:
        domain_migrate(Xd(dominfo), 7, "127.0.0.1", True, 0, port, env=env)
    assert "can't connect" in str(info.value)
