"""Xenstore for the tools and tests, with no hypervisor needed.

* ``real``: Xen 4.17's own C ``xenstored`` run as a child process, with
  ``fakexen.c`` preloaded in place of the hypervisor (``ManagedXenstored``);
  installed by ``scripts/install-xenstored``.
* ``embedded``: a pure-Python in-process store behaving like it, or like
  Xen 3.1's xenstored (``flavour="xen31"``).
* ``semantics``: where the two daemons differ, one object each.
* ``lowlevel``: the ``xen.lowlevel.xs``-like handle interface both provide.
* ``xend_api``: xend's ``xstransact`` / ``xswatch`` over any such handle.
"""
