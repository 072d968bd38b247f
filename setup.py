"""Build shim: adds the top-level topologies/ and mappings/ folders as packages (see setup.cfg)."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["gmx_dbm", "gmx_dbm.*"]) + ["gmx_dbm.topologies", "gmx_dbm.mappings"])
