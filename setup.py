"""xend-fastmig: fast, safe live-migration handover for Xen 3.1's xend.

Two packages with different audiences:

* ``xend_fastmig`` runs inside xend, on dom0's Python (2.4 and later,
  Python 3 too).  It reaches xend through the patch series in
  ``patches/`` (``xend-fastmig patches apply``, or quilt, or the RPM spec
  in docs/patches.md), which adds it to Xen's own tree: pip does not put
  it into xend.  pip installs it here only because the tools run it (the
  rehearsal migrates with the real handover code).
* ``fastmig_tools`` is the Python 3 side: the ``xend-fastmig`` command,
  the xenstore stand-ins, the backend models and the rehearsal.  It needs
  Python 3.10 or later (it uses ``X | None`` annotations at run time);
  tested on 3.10 and 3.11.

The version has one source, ``xend_fastmig.__version__`` (it travels with
the patch series into xend); ``xend-fastmig --version`` prints it.
"""
import re

from setuptools import setup, find_packages


def _version():
    # Read, not imported: setup.py must not depend on the package importing.
    with open("xend_fastmig/__init__.py") as handle:
        match = re.search(r'^__version__ = "([^"]+)"$', handle.read(), re.M)
    return match.group(1)


setup(
    name="xend-fastmig",
    version=_version(),
    description="Live migration for Xen 3.1 whose blackout no longer grows with memory",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    author="xend-fastmig developers",
    author_email="dev@xend-fastmig.invalid",
    # No public home yet: the same placeholder domain as the address.
    url="https://xend-fastmig.invalid/",
    license="GPL-2.0-only",
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: Console",
        "Intended Audience :: System Administrators",
        "License :: OSI Approved :: GNU General Public License v2 (GPLv2)",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Topic :: System :: Clustering",
        "Topic :: System :: Systems Administration",
    ],
    packages=find_packages(include=["xend_fastmig", "fastmig_tools", "fastmig_tools.*"]),
    package_data={"fastmig_tools.xenstore": ["*.c"], "fastmig_tools": ["data/*"],
                  "fastmig_tools.xendharness": ["py2/*.py", "py2/lowlevel/*.py"]},
    # The tools' minimum; xend_fastmig's own 2.4+ does not come through pip.
    python_requires=">=3.10",
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-mock>=3",
            # Every xend harness test carries its own deadline.
            "pytest-timeout>=2",
            "hypothesis>=6",
            "vermin>=1.5",
            # A real DEP-3 reader (deb822) for the patch headers' test.
            "python-debian>=0.1.40",
            # So that the rehearsal's --plot is tested, not skipped.
            "matplotlib>=3",
        ],
        "plot": ["matplotlib>=3"],
    },
    entry_points={"console_scripts": ["xend-fastmig = fastmig_tools.cli:main"]},
)
