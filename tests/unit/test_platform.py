"""The in-xend glue, against stand-ins for the xend modules it imports.

Which names exist in a real 3.1 tree is checked by
tests/integration/test_glue_names.py (with XEN31_TREE).
"""

import os
import sys
import types

import pytest

from xend_fastmig import platform, xend_hooks
from xend_fastmig.handover import Environment


class XendError(Exception):
    pass


class XendInvalidDomain(Exception):
    pass


@pytest.fixture
def xend(mocker, tmp_path):
    """Fake ``xen.*`` modules; returns a namespace of the recorders."""
    calls = []
    mods = {}

    def module(name, **attrs):
        mod = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(mod, key, value)
        mods[name] = mod
        return mod

    def fork_helper(cmd, fd, handler, close_to_child):
        calls.append(("forkHelper", cmd, fd, close_to_child))

        class ToChild(object):
            def write(self, text):
                calls.append(("tochild", text))

            def flush(self):
                pass
        handler("suspend", ToChild())

    xc = mocker.Mock()
    # spec: a bare Mock would offer every getter from_xoptions looks for.
    options = mocker.Mock(spec=["get_config_string"])
    options.get_config_string.side_effect = \
        lambda name, default=None: {"xend-fast-migration": "no"}.get(name,
                                                                     default)
    module("xen")
    module("xen.util")
    module("xen.util.auxbin", pathTo=lambda name: "/usr/lib/xen/bin/" + name)
    module("xen.xend")
    module("xen.xend.sxp", to_string=lambda sxpr: "(%s)" % " ".join(sxpr))
    module("xen.xend.XendCheckpoint", forkHelper=fork_helper,
           XC_SAVE="xc_save", xc=xc)
    module("xen.xend.XendError", XendError=XendError,
           XendInvalidDomain=XendInvalidDomain)
    module("xen.xend.XendOptions", instance=lambda: options)
    module("xen.xend.xenstore")
    xshandle = mocker.Mock()
    xshandle.read.side_effect = lambda t, path: {"/a": "1"}.get(path)
    module("xen.xend.xenstore.xsutil",
           ResumeDomain=lambda domid: calls.append(("ResumeDomain", domid)),
           xshandle=lambda: xshandle)
    module("xen.xend.xenstore.xstransact", xstransact="XSTRANSACT")
    module("xen.xend.xenstore.xswatch", xswatch="XSWATCH")
    mods["xen"].util = mods["xen.util"]
    mods["xen.util"].auxbin = mods["xen.util.auxbin"]
    mods["xen"].xend = mods["xen.xend"]
    mods["xen.xend"].XendOptions = mods["xen.xend.XendOptions"]
    mods["xen.xend"].sxp = mods["xen.xend.sxp"]
    mocker.patch.dict(sys.modules, mods)
    return {"calls": calls, "xc": xc, "options": options,
            "xshandle": xshandle}


class Dom(object):
    def getDomid(self):
        return 12

    def sxpr(self):
        return ["domain", "guest"]


def test_run_xc_save_drives_forkhelper_and_answers_suspend(xend):
    suspended = []
    platform.XendPlatform().run_xc_save(9, Dom(), True, False,
                                        lambda: suspended.append(1))
    name, cmd, fd, close_to_child = xend["calls"][0]
    assert cmd == ["/usr/lib/xen/bin/xc_save", "9", "12", "0", "0", "1"]
    assert close_to_child is False
    assert suspended == [1]
    assert ("tochild", "done\n") in xend["calls"]


def test_hvm_flag_is_passed_to_xc_save(xend):
    platform.XendPlatform().run_xc_save(9, Dom(), False, True, lambda: None)
    assert xend["calls"][0][1][-1] == "4"


def test_config_resume_and_errors_use_xend(xend):
    plat = platform.XendPlatform()
    assert plat.config_string(Dom()) == "(domain guest)"
    plat.domain_resume(12, 0)
    xend["xc"].domain_resume.assert_called_once_with(12, 0)
    plat.resume_store(12)
    assert ("ResumeDomain", 12) in xend["calls"]
    assert isinstance(plat.error("x"), XendError)
    assert isinstance(plat.invalid_domain(3), XendInvalidDomain)


def test_device_model_state_is_copied_and_removed(xend, tmp_path, mocker):
    state = "/tmp/xen.qemu-dm.%d" % 4242
    handle = open(state, "wb")
    handle.write(b"QEMUSTATE" * 100)
    handle.close()
    out = str(tmp_path / "out")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        platform.XendPlatform().write_device_model_state(fd, 4242)
    finally:
        os.close(fd)
    assert open(out, "rb").read() == b"QemuDeviceModelRecord" + \
        b"QEMUSTATE" * 100
    assert not os.path.exists(state)


def test_environment_inside_xend(xend):
    env = platform.xend_environment()
    assert isinstance(env, Environment)
    assert env.store.xstransact == "XSTRANSACT"
    assert env.store.xswatch == "XSWATCH"
    # The drain's confirmations read outside a transaction.
    assert env.store.read("/a") == "1"
    assert env.store.read("/missing") is None
    xend["xshandle"].read.assert_called_with("", "/missing")
    assert env.options.enabled is False


def test_hooks_read_the_switch_and_fail_safe(xend):
    assert xend_hooks.fast_migration_enabled() is False
    xend["options"].get_config_string.side_effect = RuntimeError("broken")
    # Unreadable options are logged and count as "yes" by default, but a
    # failure to even build the options object must mean "stock".
    assert xend_hooks.fast_migration_enabled() is True


def test_hook_off_when_xend_options_cannot_be_had(mocker):
    mocker.patch.object(xend_hooks, "_options",
                        side_effect=ImportError("no xen"))
    assert xend_hooks.fast_migration_enabled() is False


def test_the_migrate_hook_returns_none_for_xmlrpc(mocker):
    """xend returns domain_migrate's value over XML-RPC: it must be None."""
    fork = mocker.patch.object(xend_hooks.migrate, "domain_migrate",
                               return_value=object())
    assert xend_hooks.domain_migrate("xd", 5, "dst", True, 0, 0) is None
    fork.assert_called_once_with("xd", 5, "dst", True, 0, 0)
