"""Which process of a parallel run this is: MPI (``mpirun``/``srun``, through mpi4py) or one process.

``world()`` looks at the launcher's environment first and imports mpi4py only when more than one rank was
started, so a plain run never touches MPI. Frames and ensemble members are dealt out round robin
(``deal``); rank 0 is the one that writes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .errors import InputError

log = logging.getLogger(__name__)

# (size, rank, local rank) variables of the launchers we know: Open MPI, MPICH/Hydra/PMI, SLURM's srun
_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_LOCAL_RANK = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMI_LOCAL_RANK")


@dataclass
class World:
    """rank/size of this process among ``size``; ``comm``: the mpi4py communicator, or None alone."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    comm: object = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def deal(self, n: int) -> list:
        """This rank's share of items 0..n-1 (round robin: ranks stay busy whatever the item costs do
        along a trajectory)."""
        return list(range(self.rank, n, self.size))

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()


def _launched_size() -> int:
    for name in _SIZE:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    if os.environ.get("SLURM_STEP_NUM_TASKS", "").isdigit() and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_STEP_NUM_TASKS"])
    return 1


def world() -> World:
    """This process's place in the run. More than one rank launched but no mpi4py: an InputError (the
    ranks would each compute and write everything)."""
    size = _launched_size()
    if size <= 1:
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        raise InputError(f"started as one of {size} MPI ranks, but mpi4py is not installed "
                         "(pip install mpi4py)") from None
    comm = MPI.COMM_WORLD
    local = next((int(os.environ[v]) for v in _LOCAL_RANK if os.environ.get(v, "").isdigit()), None)
    if local is None:
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    return World(comm.Get_rank(), comm.Get_size(), local, comm)


def set_threads(threads: int | None, world: World) -> int:
    """torch's intra-op threads for this rank: ``threads`` if given, else the cores this process may use
    (its affinity mask: what mpirun/srun bound it to) divided among the ranks sharing them."""
    import torch

    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:   # not Linux
            cores = os.cpu_count() or 1
        if world.size > 1 and cores >= (os.cpu_count() or 1):
            # not bound: the ranks on this node share its cores
            cores = max(1, cores // max(1, _ranks_on_node(world)))
        threads = cores
    torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


def _ranks_on_node(world: World) -> int:
    if world.comm is None:
        return 1
    from mpi4py import MPI
    return world.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
