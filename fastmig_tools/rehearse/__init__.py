"""The two-host live-migration rehearsal (``xend-fastmig rehearse``).

Public face: ``Scenario`` (every knob), ``run_once`` (one migration under
one policy → ``RunResult``), ``run_matrix`` (runs × sweep × policies).
Modules: ``scenario`` knobs, ``disk`` the shared image and its checker,
``stream`` the 3.1 stream, ``platform`` the core's platform seam,
``workload`` the guest's I/O and the source's xend model, ``target`` the
receiving host, ``policies`` the source under each policy, ``stores`` the
hosts' xenstores, ``runner`` one run, ``sweep`` many, ``progress`` the
progress line, ``report``/``plot`` output, ``cli`` the subcommand.
"""
from fastmig_tools.rehearse.runner import RunResult, run_once
from fastmig_tools.rehearse.scenario import POLICIES, Scenario
from fastmig_tools.rehearse.sweep import run_matrix

__all__ = ["Scenario", "RunResult", "run_once", "run_matrix", "POLICIES"]
