"""xend-fastmig: fast, safe live-migration handover for Xen 3.1's xend.

Two packages with different audiences:

* ``xend_fastmig`` runs inside xend, so it stays Python 2.4 compatible;
* ``fastmig_tools`` is the Python 3 side: the ``xend-fastmig`` command,
  the xenstore stand-ins, the backend models and the rehearsal.
"""
from setuptools import setup, find_packages

setup(
    name="xend-fastmig",
    version="0.1.0",
    description="Live migration for Xen 3.1 whose blackout no longer grows with memory",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="GPL-2.0-only",
    packages=find_packages(include=["xend_fastmig", "fastmig_tools", "fastmig_tools.*"]),
    package_data={"fastmig_tools.xenstore": ["*.c"], "fastmig_tools": ["data/*"],
                  "fastmig_tools.xendharness": ["py2/*.py", "py2/lowlevel/*.py"]},
    python_requires=">=2.4",
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-mock>=3",
            # Every xend harness test carries its own deadline.
            "pytest-timeout>=2",
            "hypothesis>=6",
            "vermin>=1.5",
            # So that the rehearsal's --plot is tested, not skipped.
            "matplotlib>=3",
        ],
        "plot": ["matplotlib>=3"],
    },
    entry_points={"console_scripts": ["xend-fastmig = fastmig_tools.cli:main"]},
)
