"""Training in several processes started by torchrun (``torchrun --nproc-per-node N -m gmx_dbm train``).

``start`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): with more than one process it picks
this rank's device and joins the process group (gloo on the CPU, NCCL on CUDA); otherwise it initialises
nothing and the ``Group`` it returns is the single process, whose collectives are no-ops. The trainer
shards every batch by ``Group.shard``, shares generated atoms with ``Group.sum_``, averages logged values
with ``Group.mean_`` and checks with ``Group.check_same`` that the ranks' networks have not drifted apart.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed

from ..devices import local_device, resolve_device
from ..errors import ConfigError, GmxDbmError, InputError

log = logging.getLogger(__name__)

DEVICE_KEY = "config key 'device'"


def launched() -> tuple | None:
    """(rank, world size, local rank) when torchrun started this process as one of several, else None."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    raw = [os.environ.get(n, "") for n in names]
    if not raw[1]:
        return None
    try:
        rank, size, local = (int(v) for v in raw)
    except ValueError:
        raise InputError("torchrun environment is incomplete or not numeric: "
                         + ", ".join(f"{n}={v!r}" for n, v in zip(names, raw))) from None
    return (rank, size, local) if size > 1 else None


@dataclass
class Group:
    """This process's place among the training processes (one process: rank 0 of 1)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items (sizes differ by at most one)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the ranks, in place (on the group's device for NCCL)."""
        if self.active:
            torch.distributed.all_reduce(t)
        return t

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            torch.distributed.all_reduce(t)
            t /= self.size
        return t

    def barrier(self) -> None:
        if self.active:
            if self.device.type == "cuda":
                torch.distributed.barrier(device_ids=[self.device.index])
            else:
                torch.distributed.barrier()

    def check_same(self, tensors, what: str = "values") -> int:
        """Raise on every rank if any of ``tensors`` differs bit for bit from rank 0's; -> values compared.

        Ranks apply the same averaged gradients to the same weights, so any difference means a
        non-deterministic kernel or a bug, and the ranks would no longer train one model."""
        vec = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])
        if not self.active:
            return vec.numel()
        ref = vec.clone()
        torch.distributed.broadcast(ref, 0)
        # compare bits, so that NaNs compare equal to themselves
        bad = (vec.view(torch.int32) != ref.view(torch.int32)).sum().reshape(1)
        torch.distributed.all_reduce(bad)
        n_bad = int(bad.item())
        if n_bad:
            raise GmxDbmError(f"the {self.size} training processes disagree on {n_bad} of {vec.numel()} {what}")
        return vec.numel()

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def start(device_name: str, config_path=None) -> Group:
    """The group of this process, its device chosen and its process group joined (see module doc).

    A device this machine lacks is an InputError naming the config key; an explicit ``cuda:N`` for
    several ranks on one machine, or more ranks per machine than GPUs, is a ConfigError (NCCL runs one
    rank per GPU)."""
    env = launched()
    device = resolve_device(device_name, where=DEVICE_KEY)
    if env is None:
        return Group(device=device)
    rank, size, local = env
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count()
        if per_node > 1 and str(device_name).strip() != "cuda":
            raise ConfigError(f"device = {device_name!r} puts all {per_node} ranks of this machine on one GPU; "
                              "use device = \"cuda\" (rank r takes cuda:(LOCAL_RANK % GPUs))", path=config_path)
        if per_node > n_gpus:
            raise ConfigError(f"{per_node} ranks on this machine but {n_gpus} GPU(s); NCCL needs one GPU per "
                              "rank: start at most that many (--nproc-per-node) or use device = \"cpu\"",
                              path=config_path)
        device = local_device(device_name, local)
        torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl", rank=rank, world_size=size, device_id=device)
    else:
        torch.distributed.init_process_group("gloo", rank=rank, world_size=size)
    log.info("training process %d of %d on %s (%s)", rank, size, device, torch.distributed.get_backend())
    return Group(rank, size, local, device)
