"""What a user meets first: ``--version``, the licence and the package's
metadata, each telling the truth."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import xend_fastmig

REPO = Path(__file__).resolve().parents[1]


def _command(*argv, python=sys.executable, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([python, "-m", "fastmig_tools.cli", *argv],
                          cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=timeout)


def _setup(*flags):
    proc = subprocess.run([sys.executable, "setup.py", *flags],
                          cwd=str(REPO), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


def test_version_is_the_packages_version():
    proc = _command("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "xend-fastmig %s" % xend_fastmig.__version__


def test_setup_py_takes_the_same_version():
    assert _setup("--version")[-1] == xend_fastmig.__version__


def test_license_file_is_the_gpl_2_that_setup_py_declares():
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:6] == ["GNU", "GENERAL", "PUBLIC", "LICENSE",
                                "Version", "2,"]
    assert "XEN NOTICE" not in text          # not Xen's COPYING
    assert _setup("--license")[-1] == "GPL-2.0-only"
    assert ("License :: OSI Approved :: GNU General Public License v2 "
            "(GPLv2)") in _setup("--classifiers")


def test_metadata_names_an_author_and_a_home():
    author, url = _setup("--author", "--url")[-2:]
    assert author and author != "UNKNOWN"
    assert url.startswith("https://")


def test_python_requires_names_the_tools_minimum():
    text = (REPO / "setup.py").read_text()
    minimum = re.search(r'python_requires=">=(3\.\d+)"', text).group(1)
    assert tuple(map(int, minimum.split("."))) <= sys.version_info[:2]
    assert "Programming Language :: Python :: %s" % minimum in text


def _pyenv_python(version):
    root = shutil.which("pyenv") and subprocess.run(
        ["pyenv", "root"], capture_output=True, text=True,
        timeout=30).stdout.strip()
    if not root:
        return None
    for candidate in sorted(Path(root, "versions").glob(version + ".*")):
        python = candidate / "bin" / "python"
        if python.exists():
            return str(python)
    return None


def test_the_declared_minimum_runs_the_command():
    text = (REPO / "setup.py").read_text()
    minimum = re.search(r'python_requires=">=(3\.\d+)"', text).group(1)
    python = _pyenv_python(minimum)
    if python is None:
        pytest.skip("no Python %s here (pyenv)" % minimum)
    proc = _command("rehearse", "--list-faults", python=python)
    assert proc.returncode == 0, proc.stderr
    assert "slow-write" in proc.stdout
