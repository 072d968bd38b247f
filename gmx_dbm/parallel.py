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


# glibc malloc: blocks up to 32 MB come from the heap instead of fresh mmaps, and up to 512 MB of freed
# heap stays mapped: the generator's and the thermalisation's temporaries (a few to tens of MB each) are
# then not faulted in and zeroed by the kernel on every allocation (measured on the 5832-atom sPS frame,
# one thread: generation 48.3 -> 42.9 s, 300 thermalisation steps 29.7 -> 28.2 s; peak RSS unchanged)
_MALLOPT = ((-3, 32 << 20), (-1, 512 << 20))     # (M_MMAP_THRESHOLD, bytes), (M_TRIM_THRESHOLD, bytes)


def tune_allocator() -> bool:
    """Set glibc's malloc thresholds for gmx_dbm's large temporaries (the ``gmx_dbm`` command does this
    at start; Python callers may too). Leaves them alone where the user set MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_, and where the C library has no ``mallopt`` (not glibc). True if set."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):   # no C library to look in (Windows), or no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _MALLOPT)


def set_threads(threads: int | None, world: World) -> int:
    """torch's intra-op threads for this rank: ``threads`` if given, else ``rank_cores``."""
    import torch

    torch.set_num_threads(max(1, int(threads if threads else rank_cores(world))))
    return torch.get_num_threads()


def _ranks_on_node(world: World) -> int:
    if world.comm is None:
        return 1
    from mpi4py import MPI
    return world.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()


# ------------------------------------------------------------------------------ items in order over ranks
# rank 0 computes its share of a stream of items and writes every item in order; the other ranks compute
# theirs and send them. Used by ``backmap`` and ``relax`` (each item a frame).
TAG_RESULT, TAG_ERROR, TAG_DONE, TAG_STOP = 11, 12, 13, 14
# results a rank may have in flight to rank 0 before it waits (bounds its memory)
IN_FLIGHT = 2


def on_root(world: World, fn):
    """``fn()`` run on rank 0 alone, its (picklable) result returned on every rank: a decision one rank
    makes for all (a fresh work directory). An error on rank 0 is raised there; the other ranks end with
    ``RankStopped``. Alone: just ``fn()``."""
    from .errors import RankStopped
    if world.comm is None:
        return fn()
    result = err = None
    if world.is_root:
        try:
            result = fn()
        except Exception as exc:
            err = exc
    result, code = world.comm.bcast((result, exit_code(err)) if world.is_root else None, root=0)
    if code:
        if world.is_root:
            raise err
        raise RankStopped(code)
    return result


def exit_code(exc) -> int:
    """The exit code every rank ends with: 0, 2 for a gmx_dbm error, 1 for anything else."""
    from .errors import GmxDbmError
    return 0 if exc is None else 2 if isinstance(exc, GmxDbmError) else 1


def portable(exc: BaseException, rank: int) -> BaseException:
    """``exc`` if it survives pickling with the same message, else a stand-in of the same kind (a
    GmxDbmError stays one: the exit code depends on it)."""
    import pickle

    from .errors import GmxDbmError
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:   # not picklable: the stand-in below carries its message
        pass
    if isinstance(exc, GmxDbmError):
        return GmxDbmError(str(exc))
    return RuntimeError(f"rank {rank}: {type(exc).__name__}: {exc}")


def in_order_root(world: World, items, compute, write, first: int = 0, check=None) -> int:
    """Rank 0's side: ``items`` yields (k, *args) with k = 0, 1, ... (the same stream on every rank);
    item k belongs to rank k % size. Computes its own items (``compute(k, *args)`` -> a dict with "k"),
    receives the others' and calls ``write(result)`` in order from ``first`` on (items before it are
    skipped). ``check(total)`` runs once all are written. Returns the number of items. An error here or
    sent by a rank stops every rank (``in_order_worker`` ends with ``RankStopped``) and is raised; an
    interruption (KeyboardInterrupt) propagates at once."""
    comm = world.comm
    pending, done = {}, set()
    nxt = first

    def receive():
        from mpi4py import MPI
        status = MPI.Status()
        msg = comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
        if status.Get_tag() == TAG_ERROR:
            log.debug("rank %d failed: %s", status.Get_source(), msg)
            raise msg
        if status.Get_tag() == TAG_DONE:
            done.add(status.Get_source())
            return
        pending[msg["k"]] = msg

    def drain(upto: int):
        nonlocal nxt
        while nxt <= upto:
            if nxt in pending:
                write(pending.pop(nxt))
                nxt += 1
            elif nxt % world.size == 0:
                return
            else:
                receive()

    total = first
    try:
        for k, *args in items:
            total = k + 1
            if k < first:
                continue
            if k % world.size == 0:
                drain(k - 1)
                pending[k] = compute(k, *args)
            drain(k)
        drain(total - 1)
        if check is not None:
            check(total)
    except Exception as exc:
        _finish_root(world, exc, done)
        raise
    _finish_root(world, None, done)
    return total


def _finish_root(world: World, failed, done: set) -> None:
    """Stop the ranks after a failure, match every message they sent, tell them the exit code."""
    comm = world.comm
    if comm is None:
        return
    from mpi4py import MPI
    if failed is not None:
        for r in range(1, world.size):
            comm.send(None, dest=r, tag=TAG_STOP)
    while len(done) < world.size - 1:
        status = MPI.Status()
        comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
        if status.Get_tag() == TAG_DONE:
            done.add(status.Get_source())
    comm.bcast(exit_code(failed), root=0)


def in_order_worker(world: World, items, compute, first: int = 0) -> None:
    """The other ranks' side of ``in_order_root``: compute this rank's items from ``first`` on and send
    them to rank 0; an error goes to rank 0 instead. Ends with ``RankStopped`` when the run failed."""
    from .errors import RankStopped
    comm = world.comm
    in_flight, stopped = [], False
    try:
        for k, *args in items:
            if k < first or k % world.size != world.rank:
                continue
            if comm.Iprobe(source=0, tag=TAG_STOP):
                comm.recv(source=0, tag=TAG_STOP)
                stopped = True
                break
            in_flight.append(comm.isend(compute(k, *args), dest=0, tag=TAG_RESULT))
            while len(in_flight) > IN_FLIGHT:
                in_flight.pop(0).wait()
    except Exception as exc:   # rank 0 reports it; this rank ends quietly
        comm.send(portable(exc, world.rank), dest=0, tag=TAG_ERROR)
    for req in in_flight:
        req.wait()
    comm.send(None, dest=0, tag=TAG_DONE)
    code = comm.bcast(None, root=0)
    if code:
        if not stopped:
            comm.recv(source=0, tag=TAG_STOP)
        raise RankStopped(code)


def rank_cores(world: World) -> int:
    """The cores this process may use (its affinity mask: what mpirun/srun bound it to), divided among
    the ranks on its node when they were not bound. Collective when ``world`` has several ranks."""
    on_node = _ranks_on_node(world) if world.size > 1 else 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        cores = os.cpu_count() or 1
    if on_node > 1 and cores >= (os.cpu_count() or 1):   # not bound: the ranks on this node share its cores
        cores //= on_node
    return max(1, cores)
