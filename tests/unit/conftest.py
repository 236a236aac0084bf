"""Fixtures for the unit tests of xend_fastmig (Python 2.7 and 3)."""

import logging
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from tests.unit.fakes import FakeXenstore


@pytest.fixture
def store():
    fake = FakeXenstore()
    yield fake
    fake.stop()


@pytest.fixture
def socketpair():
    """A real connected pair: (source side, target side)."""
    source, target = socket.socketpair()
    yield source, target
    source.close()
    target.close()


@pytest.fixture
def xend_log(caplog):
    caplog.set_level(logging.DEBUG, logger="xend")
    return caplog
