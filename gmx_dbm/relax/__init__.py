"""Relaxation of all-atom structures in GROMACS: steepest-descent EM, then position-restrained MD.

The only package of gmx_dbm that imports gmxapi (``options.import_gmxapi``). Two engines run the same
steps (``engines``):

* ``gmxapi`` (default): ``gmxapi.commandline_operation`` runs ``gmx grompp``; the run input goes through
  ``gmxapi.read_tpr`` -> ``gmxapi.modify_input`` (nsteps) -> ``gmxapi.mdrun``.
* ``gmx``: ``gmx grompp`` + ``gmx mdrun`` as subprocesses. Used when gmxapi cannot be imported (a logged
  notice says so) or when asked for.

Each run gets a fresh work directory (kept: inputs, generated topology wrapper, mdp files, mdrun logs and
energy files). The user's topology is never modified (``topology``: a wrapper with restraint includes);
the restraint reference (``grompp -r``) is the input structure, for EM and MD alike. Run parameters:
``mdp``; frames and whole files: ``relaxer``; a file's frames dealt out to MPI ranks (``mpirun -n N``):
``ranks``. Backmapping followed by relaxation, and the gmxapi workflow
operations, are in ``gmx_dbm.workflow``.
"""
from .engines import StageFiles, StageResult, child_env, distill, read_stage, run_stage_gmx, run_stage_gmxapi
from .mdp import EM_INTEGRATORS, MD_INTEGRATORS, electrostatics, make_mdp, mdp_defines
from .options import CONSTRAINT_CHOICES, ENGINES, RESTRAIN_CHOICES, RelaxOptions, choose_engine, import_gmxapi
from .ranks import relax_ranks
from .relaxer import FrameResult, Relaxer, fresh_workdir, relax, separate_overlaps
from .topology import POSRES_DEFINE, PreparedTopology, heavy_atoms, posres_filename, prepare_topology

__all__ = ["RelaxOptions", "import_gmxapi", "choose_engine", "RESTRAIN_CHOICES", "CONSTRAINT_CHOICES", "ENGINES",
           "prepare_topology", "PreparedTopology", "posres_filename", "heavy_atoms", "POSRES_DEFINE",
           "make_mdp", "electrostatics", "mdp_defines", "EM_INTEGRATORS", "MD_INTEGRATORS",
           "StageResult", "StageFiles", "read_stage", "run_stage_gmx", "run_stage_gmxapi", "distill",
           "child_env", "Relaxer", "FrameResult", "relax", "relax_ranks", "fresh_workdir", "separate_overlaps"]
