"""gmx_dbm: deepBackmap for GROMACS users.

Importing the package is light: no torch, no ParmEd, no MDAnalysis until a submodule needs them.
"""
__version__ = "0.1.0"
