import socket
import struct
import threading

import pytest

from tests.unit.fakes import FakeDomInfo, FakePlatform, write_pv_domain
from tests.unit.test_handover import Target, drain_after
from xend_fastmig.checkpoint import save
from xend_fastmig.handover import AT_TARGET, Environment
from xend_fastmig.options import FastMigrationOptions


def prepare(store, enabled=True, fail_save=None, hvm=False):
    journal = []
    write_pv_domain(store, 7)
    dominfo = FakeDomInfo(store, journal=journal, hvm=hvm)
    env = Environment(store, FakePlatform(journal, fail_save=fail_save),
                      FastMigrationOptions(enabled=enabled,
                                           drain_timeout=2,
                                           verdict_timeout=2))
    return dominfo, env, journal


def read_stream(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_stream_starts_like_a_31_save(store, tmp_path):
    dominfo, env, journal = prepare(store)
    path = str(tmp_path / "image")
    handle = open(path, "wb")
    try:
        save(handle.fileno(), dominfo, False, False, None, env=env)
    finally:
        handle.close()
    data = open(path, "rb").read()
    config = b"(domain (name guest))"
    assert data.startswith(b"LinuxGuestRecord" + struct.pack("!i",
                                                             len(config))
                           + config + b"IMAGE")


def test_without_a_socket_it_is_stock(store, tmp_path):
    dominfo, env, journal = prepare(store)
    handle = open(str(tmp_path / "image"), "wb")
    try:
        assert save(handle.fileno(), dominfo, False, False, None,
                    env=env) is None
    finally:
        handle.close()
    assert journal[-2:] == ["destroyDomain", "testDeviceComplete"]
    assert journal[:4] == ["migrateDevices:1", "shutdown:suspend",
                           "waitForShutdown", "migrateDevices:2"]
    assert dominfo.getName() == "guest"


def test_a_checkpoint_resumes(store, socketpair):
    source, target = socketpair
    dominfo, env, journal = prepare(store)
    save(source.fileno(), dominfo, True, True, "dst", checkpoint=True,
         sock=source, env=env)
    assert journal[-1] == "resumeDomain"


def test_disabled_fast_migration_is_stock(store, socketpair):
    source, target = socketpair
    dominfo, env, journal = prepare(store, enabled=False)
    save(source.fileno(), dominfo, True, True, "dst", sock=source, env=env)
    assert journal[-2:] == ["destroyDomain", "testDeviceComplete"]


def test_with_the_socket_it_hands_over(store, socketpair):
    source, target = socketpair
    dominfo, env, journal = prepare(store)
    drain_after(store, journal, 0.02)
    got = []
    reader = threading.Thread(target=lambda: got.append(read_stream(target)))
    reader.start()

    def answer():
        reader.join()
        journal.append("target released")
        target.sendall(b"(ok)\n")
    threading.Thread(target=answer).start()
    report = save(source.fileno(), dominfo, True, True, "dst", sock=source,
                  env=env)
    assert report.outcome == AT_TARGET
    assert journal.index("backend drained") < journal.index(
        "target released") < journal.index("destroyDomain")
    assert got[0].endswith(b"IMAGE" * 10)


def test_a_failure_with_the_socket_resets_it_resumes_and_raises(store):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    source = socket.create_connection(listener.getsockname())
    target = listener.accept()[0]
    dominfo, env, journal = prepare(store, fail_save=OSError("xc_save died"))
    try:
        with pytest.raises(OSError):
            save(source.fileno(), dominfo, True, True, "dst", sock=source,
                 env=env)
        assert journal[-1] == "resumeDomain"
        # A 3.1 target must see an error, never a clean end of stream.
        with pytest.raises(socket.error):
            read_stream(target)
    finally:
        target.close()
        listener.close()


def test_a_failure_without_the_socket_is_swallowed_like_310(store,
                                                            tmp_path):
    dominfo, env, journal = prepare(store, fail_save=OSError("disk full"))
    handle = open(str(tmp_path / "image"), "wb")
    try:
        save(handle.fileno(), dominfo, False, False, None, env=env)
    finally:
        handle.close()
    assert journal[-1] == "resumeDomain"


def test_hvm_saves_the_device_model(store, tmp_path, mocker):
    dominfo, env, journal = prepare(store, hvm=True)
    dominfo.image = mocker.Mock()
    handle = open(str(tmp_path / "image"), "wb")
    try:
        save(handle.fileno(), dominfo, False, False, None, env=env)
    finally:
        handle.close()
    dominfo.image.destroy.assert_called_once_with(True)
    assert "device model state" in journal
