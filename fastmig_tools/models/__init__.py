"""Behaviour models of a Xen 3.1 dom0 around a migrating guest.

* ``xenbus_backend``: what every dom0 backend actor shares (xenbus
  watches and states, unregister, udev's cleanup, the xenwatch thread);
* ``blkback``: block backend actors (stock 3.1 blkback/blktap + udev,
  shutdown-request speaking, hung) driven by xenstore alone;
* ``netback``: a 3.1 netback actor, reduced to its teardown;
* ``layout``: a running 3.1 PV domain's xenstore layout and its writers;
* ``domain``: a ``XendDomainInfo`` model with the surface the handover
  uses, on that layout.
"""
