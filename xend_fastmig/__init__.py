"""xend-fastmig: the live-migration handover that runs inside xend.

Everything in this package runs inside Xen 3.1's xend, on the dom0's
Python (2.4 on CentOS 5) as well as on Python 3, so it keeps to the
language that 2.4 understands.  The tools, the rehearsal and the tests live
in ``fastmig_tools`` instead.
"""

__version__ = "0.1.0"
