"""Every xend name the package and the series' hunks rely on exists in
both real trees (and in ``$XEN31_TREE`` when set).

Names are found by parsing the tree's modules, not importing them: they
need a hypervisor to import.  The patched tree is checked too, so the
names the hunks add (the getters, the new arguments) are there after the
series.
"""
from __future__ import annotations

import pathlib

import pytest

from tests.xen_trees import copy_tree, source, tree_ids

NEEDED = {
    "xen/xend/XendCheckpoint.py": ["xc", "save"],
    "xen/xend/XendError.py": ["XendError"],
    "xen/xend/XendOptions.py": ["instance", "get_config_bool",
                                "get_config_string"],
    "xen/xend/xenstore/xsutil.py": ["xshandle"],
    "xen/xend/xenstore/xstransact.py": ["xstransact", "Read", "Write",
                                        "Remove", "List", "commit", "abort",
                                        "read", "write", "remove"],
    "xen/xend/xenstore/xswatch.py": ["xswatch", "unwatch"],
    "xen/xend/XendDomain.py": ["domain_migrate"],
    # The dominfo surface (docs/architecture.md).
    "xen/xend/XendDomainInfo.py": [
        "getDomid", "destroyDomain", "resumeDomain", "_releaseDevices",
        "testDeviceComplete"],
}

# What the series adds and the package calls.
ADDED = {
    "xen/xend/XendOptions.py": [
        "get_xend_fast_migration", "get_xend_fast_migration_early_release",
        "get_xend_fast_migration_drain_timeout",
        "get_xend_fast_migration_verdict_timeout"],
    "xen/xend/XendCheckpoint.py": ["fastmig_handover"],
}


def defined_names(path: pathlib.Path) -> set[str]:
    source = path.read_text(errors="replace")
    # 3.1's modules are Python 2, which ast cannot parse: a line scan for
    # definitions and top-level assignments is enough to find names.
    names = set()
    for line in source.splitlines():
        stripped = line.strip()
        for keyword in ("def ", "class "):
            if stripped.startswith(keyword):
                names.add(stripped[len(keyword):].split("(")[0]
                          .split(":")[0].strip())
        if "=" in stripped and not stripped.startswith(("#", "if ")) \
                and line[:1] not in (" ", "\t"):
            names.add(stripped.split("=")[0].strip())
    return names


@pytest.mark.parametrize("tree_id", tree_ids())
@pytest.mark.parametrize("module", sorted(NEEDED))
def test_names_exist(tree_id, module):
    path = source(tree_id) / "tools/python" / module
    assert path.exists(), path
    missing = [n for n in NEEDED[module] if n not in defined_names(path)]
    assert missing == []


@pytest.mark.parametrize("tree_id", tree_ids())
def test_patched_tree_has_what_the_package_calls(tree_id, tmp_path):
    from fastmig_tools.patchtool import engine
    tree = copy_tree(tree_id, tmp_path / "xen")
    outcome = engine.apply(tree, pathlib.Path(__file__).resolve().parents[2] / "patches",
                           compile_=False)
    assert outcome.status == 0, outcome
    for module, names in sorted(ADDED.items()):
        found = defined_names(tree / "tools/python" / module)
        assert [n for n in names if n not in found] == [], module
    text = (tree / "tools/python/xen/xend/XendDomainInfo.py").read_text()
    for signature in ("def _releaseDevices(self, suspend = False, force = False):",
                      "def testDeviceComplete(self, io_done = False):",
                      "def resumeDomain(self, devices_released = False):"):
        assert signature in text
