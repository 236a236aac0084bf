"""The harness's xc_save / xc_restore: helper_client.c handing its runs to
helpers.py's server, on real processes, sockets and files."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastmig_tools.xendharness import helpers
from fastmig_tools.xendharness.build import _build_helper_client

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def host(tmp_path):
    """A helper server for one host's hv directory, and the built client."""
    hv = tmp_path / "hv"
    hv.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _build_helper_client(bin_dir)
    env = dict(os.environ, HARNESS_HV_DIR=str(hv), PYTHONPATH=str(REPO))
    server = subprocess.Popen(
        [sys.executable, "-m", "fastmig_tools.xendharness.helpers",
         "--serve", str(hv / helpers.SOCKET_NAME)],
        env=env, stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().startswith("ready")
    yield hv, bin_dir, env
    server.kill()
    server.wait()


def image(state: dict) -> bytes:
    payload = json.dumps(state).encode()
    return (helpers.MAGIC + helpers._RECORD.pack(helpers.PAGES, 3) + b"\0\0\0"
            + helpers._RECORD.pack(helpers.STATE, len(payload)) + payload
            + helpers._RECORD.pack(helpers.END, 0))


def restore(bin_dir, env, fd):
    return subprocess.Popen(
        [str(bin_dir / "xc_restore"), str(fd), "7", "1", "2", "0", "0", "0"],
        env=env, pass_fds=[fd], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def events(hv):
    lines = (hv / "helpers.log").read_text().splitlines()
    return [json.loads(line)["what"] for line in lines]


def test_the_client_exits_with_the_runs_status_and_output(host):
    hv, bin_dir, env = host
    ours, theirs = socket.socketpair()
    ours.sendall(image({"mem_kb": 1024}) + b"after")
    proc = restore(bin_dir, env, theirs.fileno())
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.splitlines() == ["store-mfn 1007", "console-mfn 2007"]
    assert json.loads((hv / "mem" / "7").read_text()) == {"mem_kb": 1024}
    assert events(hv) == ["start", "done"]
    # The image was read exactly: the byte after it is still there.
    theirs.setblocking(False)
    assert theirs.recv(16) == b"after"


def test_a_failing_run_fails_the_client(host):
    hv, bin_dir, env = host
    ours, theirs = socket.socketpair()
    ours.sendall(b"not an image at all")
    ours.shutdown(socket.SHUT_WR)
    proc = restore(bin_dir, env, theirs.fileno())
    proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert events(hv) == ["start", "bad-image"]


def test_a_killed_client_ends_its_run_as_a_killed_helper_would(host):
    """xend killed mid-image (killpg): the server stops reading, and the
    sender sees the connection end instead of a reader that lives on."""
    hv, bin_dir, env = host
    ours, theirs = socket.socketpair()
    ours.sendall(helpers.MAGIC)              # and nothing more: it waits
    proc = restore(bin_dir, env, theirs.fileno())
    deadline = time.time() + 10
    while "start" not in (events(hv) if (hv / "helpers.log").exists() else []):
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    theirs.close()                           # the dead xend's copy
    ours.settimeout(10)
    assert ours.recv(16) == b""
    deadline = time.time() + 10
    while events(hv)[-1] != "bad-image":
        assert time.time() < deadline
        time.sleep(0.01)


def test_without_its_server_the_client_fails_loudly(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _build_helper_client(bin_dir)
    env = dict(os.environ, HARNESS_HV_DIR=str(tmp_path))
    proc = subprocess.run([str(bin_dir / "xc_save"), "0", "7", "0", "0", "1"],
                          env=env, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert "helpers.sock" in proc.stderr
