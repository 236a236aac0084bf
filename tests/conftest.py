"""Shared pytest fixtures.

Real xenstored (see fastmig_tools/xenstore/real.py):

* ``real_xenstored`` (session): one ManagedXenstored for the whole run.
  If it cannot start, every test using it FAILS with the message naming
  what to install (``scripts/install-xenstored``); it never skips.
* ``real_lowlevel``: a fresh ``xen.lowlevel.xs.xs()`` handle per test,
  closed afterwards.
* ``xs_root``: a fresh path ``/test/<uuid>`` per test, removed afterwards;
  tests write only below it so they never see each other's nodes.

When a test that used ``real_xenstored`` fails, the daemon's log (output and
trace tail) is added to the report.
"""
from __future__ import annotations

import uuid

import pytest

from fastmig_tools.xenstore.real import ManagedXenstored, XenstoredUnavailable


# --------------------------------------------------------------------------
# real xenstored
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def real_xenstored():
    """The session's running ManagedXenstored (fails, never skips)."""
    problem = None
    try:
        daemon = ManagedXenstored(name="xenstored-session").start()
    except XenstoredUnavailable as e:
        problem = str(e)
    if problem is not None:  # failed outside the except: no chained traceback
        pytest.fail("real xenstored unavailable: %s" % problem, pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def real_lowlevel(real_xenstored):
    """A new connected xen.lowlevel.xs handle, closed after the test."""
    handle = real_xenstored.open_lowlevel()
    try:
        yield handle
    finally:
        try:
            handle.close()
        except Exception:
            pass  # the test may have killed the daemon or closed it itself


@pytest.fixture
def xs_root(real_xenstored):
    """A unique, empty store path for this test; removed afterwards."""
    root = "/test/%s" % uuid.uuid4().hex
    yield root
    if real_xenstored.running and not real_xenstored.paused:
        handle = real_xenstored.open_lowlevel()
        try:
            handle.rm("", root)
        finally:
            handle.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the daemon's log to the report of a failed test that used it."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "real_xenstored" in getattr(item, "fixturenames", ()):
        daemon = getattr(item, "funcargs", {}).get("real_xenstored")
        if daemon is not None:
            report.sections.append(("xenstored log", daemon.log_text()))


# --------------------------------------------------------------------------
# fixtures added by other parts go below this line, one block per part
# --------------------------------------------------------------------------


# -- xend harness (tests/xend): a Xen tree's real xend on two hosts -------

import os as _os

# The "../shared/xen" beside the checkout; $FASTMIG_XEN_TREES overrides.
XEN_TREES_DIR = _os.path.normpath(_os.path.join(
    _os.path.dirname(_os.path.abspath(__file__)), "..", "..", "shared", "xen"))
XEN_TREES = ("3.1.0", "unstable-2007-06-08")


@pytest.fixture(params=XEN_TREES)
def xen_tree(request):
    """Each Xen tree in XEN_TREES_DIR ($FASTMIG_XEN_TREES overrides the folder);
    a missing tree fails, never skips."""
    base = _os.environ.get("FASTMIG_XEN_TREES", XEN_TREES_DIR)
    path = _os.path.join(base, request.param)
    if not _os.path.isdir(_os.path.join(path, "tools", "python", "xen", "xend")):
        pytest.fail("Xen tree %s missing (set FASTMIG_XEN_TREES)" % path,
                    pytrace=False)
    return path


@pytest.fixture
def xend_pair(xen_tree, request):
    """Factory: ``xend_pair(**TwoHosts options)`` starts two hosts on the
    tree; every pair is stopped after the test.  A missing dependency fails
    the test with what to install (scripts/install-xend-deps)."""
    from fastmig_tools.xendharness.build import HarnessUnavailable
    from fastmig_tools.xendharness.harness import TwoHosts
    pairs = []
    failed_before = request.session.testsfailed

    def start(**options):
        problem = None
        try:
            pair = TwoHosts(xen_tree, **options)
        except HarnessUnavailable as e:
            problem = str(e)
        if problem is not None:
            pytest.fail("xend harness unavailable: %s" % problem, pytrace=False)
        pairs.append(pair)
        return pair.start()

    yield start
    for pair in pairs:
        if request.session.testsfailed > failed_before:
            for h in pair.hosts():
                request.node.add_report_section(
                    "teardown", "xend log of %s" % h.name, h.xend_log()[-20000:])
        pair.stop()

