"""Conditional WGAN-GP training with energy priors and recurrent environments (paper II.C-D).

One training step: pick a frame and a random set of beads; run the generator through the beads' atom
sequences without gradients, feeding each generated atom into the environment of the next (recurrent
training, initial-pass or Gibbs-sweep environments); then ``critic_steps`` critic updates (Wasserstein loss
+ gradient penalty, spectrally normalised critic) and one generator update (Wasserstein loss + energy
prior on the collapsed coordinates) on all the collected samples at once.

Under torchrun (``gmx_dbm.train.distributed``) every rank draws the whole batch from the same random
streams and keeps its share of the beads: each rank featurises and generates its beads' atoms, the
generated atoms are summed over the ranks after every recurrent step (so every environment holds all of
them), and per-sample random numbers are drawn for the whole batch and indexed. The union of the ranks'
samples is the single-process batch; the losses are weighted by each rank's share of the samples, so
DistributedDataParallel's gradient average is the gradient of the whole-batch loss. Rank 0 writes the log,
checkpoints and the model.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..devices import cpu_kernels, cpu_name, cpu_vendor, generator_for, resolve_device
from ..errors import ConfigError, ModelFileError, OutputError
from ..mapping.chemistry import bead_signatures
from ..model.card import molecule_signatures
from ..model.checkpoint import (build_networks, file_sha256, load_checkpoint, save_checkpoint, save_model)
from ..model.features import Batch, build_state, featurize
from ..model.networks import NETWORK_SIZES
from ..model.prior import prior_energy
from ..model.sampler import generate_frame
from ..voxel import GridSpec, collapse, density_of, minimum_image
from .config import Config
from .curves import plot_learning_curves
from .data import SystemData, load_structures, load_system_data, vocabulary
from .distributed import DEVICE_KEY, Group

log = logging.getLogger(__name__)


def network_sizes(cfg: Config) -> dict:
    sizes = dict(NETWORK_SIZES[cfg.model.size])
    for k in sizes:
        v = getattr(cfg.model, k)
        if v:
            sizes[k] = v
    return sizes


def _pad_cat(tensors, dim_pad=1, value=0.0):
    m = max(t.shape[dim_pad] for t in tensors)
    out = []
    for t in tensors:
        if t.shape[dim_pad] < m:
            shape = list(t.shape)
            shape[dim_pad] = m - t.shape[dim_pad]
            t = torch.cat([t, torch.full(shape, value, dtype=t.dtype, device=t.device)], dim=dim_pad)
        out.append(t)
    return torch.cat(out)


def cat_batches(batches: list) -> Batch:
    bonded = {k: {f: torch.cat([b.bonded[k][f] for b in batches]) for f in batches[0].bonded[k]}
              for k in batches[0].bonded}
    return Batch(torch.cat([b.atoms for b in batches]), torch.cat([b.beads for b in batches]),
                 torch.cat([b.grid for b in batches]), torch.cat([b.frames for b in batches]),
                 torch.cat([b.atom_type for b in batches]),
                 _pad_cat([b.env_rel for b in batches], value=10.0),
                 _pad_cat([b.env_c6 for b in batches]), _pad_cat([b.env_c12 for b in batches]), bonded)


@dataclass
class Shard:
    """This process's samples of one training batch (batch and true rel on the training device).
    ``rows``: each sample's index in the whole batch (None: all of it, in order); ``total`` /
    ``total_gibbs``: samples / Gibbs-sweep samples of the whole batch."""
    batch: Batch
    real_rel: torch.Tensor
    initial: torch.Tensor          # (S,) bool, on the CPU: counts and indices without a device sync
    rows: torch.Tensor | None
    total: int
    total_gibbs: int


def _no_autocast():
    return contextlib.nullcontext()


def recurrent_samples(gen, data: SystemData, frame: int, beads: torch.Tensor, initial: torch.Tensor,
                      grid: GridSpec, rng: torch.Generator, noise_rng: torch.Generator | None = None,
                      device=None, mine: slice | None = None, group: Group | None = None,
                      autocast=_no_autocast) -> Shard:
    """Walk the beads' sequences, generated atoms feeding later environments.

    The frame's state, the features and the generator run on ``device``; ``rng`` (CPU) draws the
    rotations, ``noise_rng`` (default ``rng``) the generator noise on ``device``. With ``mine`` (a slice
    of ``beads``) this process generates only those beads' atoms, drawing every random number for all
    beads; ``group.sum_`` then gives every process all generated atoms before the next step."""
    noise_rng = rng if noise_rng is None else noise_rng
    device = torch.device("cpu") if device is None else torch.device(device)
    recipe = data.recipe
    ref = data.aa[frame].to(device)
    centres, box = data.cg[frame].to(device), data.box[frame].to(device)
    state = build_state(recipe, grid, centres, box, positions=ref)
    # which beads take part in a step is decided on the host (no device sync per step)
    seq = torch.from_numpy(recipe.bead_seq)
    angles = torch.rand(len(beads), generator=rng) * (2 * math.pi)
    sharded = mine is not None and (mine.start, mine.stop) != (0, len(beads))
    own = torch.zeros(len(beads), dtype=torch.bool)
    own[mine if sharded else slice(None)] = True
    batches, reals, modes, rows = [], [], [], []
    total = total_gibbs = 0
    for k in range(recipe.n_steps):
        sel = seq[beads, k] >= 0
        if not bool(sel.any()):
            break
        b = beads[sel]
        atoms = seq[b, k]
        n = len(atoms)
        noise = torch.randn(n, gen.noise_dim, generator=noise_rng, device=device)
        if sharded:
            keep = own[sel].nonzero().squeeze(1)
            rows.append(keep + total)
            total_gibbs += int((~initial[sel]).sum())
            total += n
            keep_dev = keep.to(device)
            noise = noise[keep_dev]
            atoms_k, b_k, ini_k, ang_k = atoms[keep], b[keep], initial[sel][keep], angles[sel][keep]
        else:
            atoms_k, b_k, ini_k, ang_k = atoms, b, initial[sel], angles[sel]
        atoms_k, b_k = atoms_k.to(device), b_k.to(device)
        batch = featurize(recipe, grid, state, atoms_k, ini_k.to(device), ang_k.to(device))
        with torch.no_grad(), autocast():
            dens = gen(batch.grid, batch.atom_type, noise)
        rel = batch.to_rel(collapse(dens.float(), grid))
        if sharded:
            # each process fills in its atoms, zeros elsewhere: the sum over processes is every atom
            mine_rel, rel = rel, torch.zeros(n, 3, device=device)
            rel[keep_dev] = mine_rel
            group.sum_(rel)
        state.positions[atoms.to(device)] = centres[b.to(device)] + rel
        if len(atoms_k):
            batches.append(batch)
            reals.append(minimum_image(ref[atoms_k] - centres[b_k], box))
            modes.append(ini_k)
    modes = torch.cat(modes)
    if not sharded:
        total, total_gibbs = len(modes), int((~modes).sum())
    return Shard(cat_batches(batches), torch.cat(reals), modes, torch.cat(rows) if sharded else None,
                 total, total_gibbs)


def gradient_penalty(critic, cond, atom_type, real, fake, eps, autocast=_no_autocast):
    """``eps`` (S, 1, 1, 1, 1): where between the real and the fake density each sample is taken."""
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    with autocast():
        score = critic(cond, atom_type, mix).float()
    (grad,) = torch.autograd.grad(score.sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def prior_weight(cfg: Config, step: int) -> float:
    p = cfg.prior
    if p.mode == "none" or step < p.ramp_start:
        return 0.0
    return min(1.0, (step - p.ramp_start + 1) / max(1, p.ramp_steps))


def prior_loss(cfg: Config, batch: Batch, fake_rel, real_rel, ramp: float):
    e = prior_energy(batch, fake_rel)
    bonded = e["bond"] + e["angle"] + e["dihedral"]
    if cfg.prior.mode == "p2":
        with torch.no_grad():
            r = prior_energy(batch, real_rel)
        bonded = (e["bond"] - r["bond"]).abs() + (e["angle"] - r["angle"]).abs() + (e["dihedral"] - r["dihedral"]).abs()
        lj = (e["lj"] - r["lj"]).abs()
    else:
        lj = e["lj"]
    loss = ramp * (cfg.prior.bonded_weight * bonded.mean() + cfg.prior.lj_weight * lj.mean())
    return loss, {k: v.detach().mean() for k, v in e.items()}


def _config_hashes(cfg: Config) -> dict:
    files = {}
    for ds in cfg.data + cfg.validation:
        for f in [ds.topology] + list(ds.mapping):
            files[f] = file_sha256(f)
    return files


def _cpu(obj):
    """Tensors of a checkpoint payload on the CPU, so that it loads on a machine without the device."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


class _Autocast:
    """The generator as the sampler calls it, its forward pass under autocast; densities in float32."""

    def __init__(self, net, autocast):
        self.net, self.autocast = net, autocast
        self.noise_dim = net.noise_dim

    def __call__(self, cond, atom_type, noise):
        with self.autocast():
            return self.net(cond, atom_type, noise).float()


# logged values that are mean squares: their root is logged, after the mean over the ranks
_ROOT_LOGGED = ("rec_rms_nm",)


def _same_kernels(a, b) -> bool:
    """Whether two records of ``devices.cpu_kernels`` agree on what both recorded (older records hold the
    ATen instruction set alone, as a string)."""
    a, b = ({"aten": k} if isinstance(k, str) else dict(k) for k in (a, b))
    return all(a[key] == b[key] for key in a.keys() & b.keys())


def _kernels_of(stretch: dict) -> dict:
    """What a history stretch records of its CPU kernels; the vendor from its processor name where the
    record predates the vendor key."""
    k = stretch.get("cpu_kernels") or {}
    k = {"aten": k} if isinstance(k, str) else dict(k)
    vendor = cpu_vendor(stretch.get("cpu", ""))
    if "vendor" not in k and vendor:
        k["vendor"] = vendor
    return k


def kept_name(step: int) -> str:
    """File name of the generator weights kept at ``step`` (``train.keep_steps``)."""
    return f"step_{step:07d}.safetensors"


def _json_record(rec: dict) -> str:
    """One log line in strict JSON: a value undefined at this step (NaN, e.g. the bond JSD when every bond
    is constrained) is written as null."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in rec.items()})


class Trainer:
    """``config_sha256``: the config file's hash, recorded with each stretch of training in the checkpoints
    and the model (``history``): which config version, machine and wall time made which steps."""

    def __init__(self, cfg: Config, group: Group | None = None, config_sha256: str | None = None):
        self.cfg = cfg
        self.config_sha256 = config_sha256
        self.out = Path(cfg.output)
        self.grid = GridSpec(cfg.grid.resolution, cfg.grid.length, cfg.grid.sigma, cfg.grid.cutoff)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if group is None:   # one process (``train`` joins torchrun's process group)
            group = Group(device=resolve_device(cfg.device, where=DEVICE_KEY))
        self.group = group
        self.device = group.device
        if cfg.mixed_precision:
            self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        else:
            self.autocast = _no_autocast
        torch.manual_seed(cfg.seed)
        structures = [load_structures(ds) for ds in cfg.data]
        val_structures = [load_structures(ds) for ds in cfg.validation]
        self.spec = vocabulary(structures, cfg.features)
        self.molecules = sorted({sig for system, _ in structures for sig in molecule_signatures(system)})
        self.chemistry = sorted({sig for _, mapping in structures for sig in bead_signatures(mapping)})
        self.data = [load_system_data(ds, self.spec, st) for ds, st in zip(cfg.data, structures)]
        self.val = [load_system_data(ds, self.spec, st) for ds, st in zip(cfg.validation, val_structures)]
        fewest = min(min(cfg.train.beads_per_batch, d.recipe.n_beads) for d in self.data)
        if fewest < group.size:
            raise ConfigError(f"batches of {fewest} beads cannot be shared by {group.size} training processes: "
                              "every process needs one bead at least", where="config key 'train.beads_per_batch'")
        self.sizes = network_sizes(cfg)
        self.gen, self.critic = build_networks(self.spec, self.grid.resolution,
                                               self.grid.sigma / self.grid.spacing, self.sizes)
        self.gen.to(self.device)
        self.critic.to(self.device)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.train.lr_generator, betas=(0.0, 0.9))
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=cfg.train.lr_critic, betas=(0.0, 0.9))
        # rng (host): which frame, beads and rotations, decided without device syncs; noise_rng: the
        # per-sample noise, drawn on the training device (the same stream as rng on the CPU)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        if self.device.type == "cpu":
            self.noise_rng = self.rng
        else:
            self.noise_rng = generator_for(self.device).manual_seed(cfg.seed)
        self.step = 0
        self.hashes = _config_hashes(cfg)
        self.history = []              # earlier stretches of this run (from the checkpoint)
        self._segment_start, self._segment_wall = 0, 0.0
        # what this process trains on, recorded with each stretch (fixed for the process's life)
        self._machine = {"cpu": cpu_name(), "device": str(self.device), "processes": group.size,
                         "threads": torch.get_num_threads(), "torch": torch.__version__,
                         "cpu_kernels": cpu_kernels()}
        self._val_tools: dict = {}     # validation set -> (force field, checks, reference energies) or None
        if group.active:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            # no buffer broadcast before each forward: the only buffers are the critic's spectral-norm
            # vectors, which every rank updates by the same power iteration on the same weights
            # (check_ranks_agree covers them); the name of the option changed in torch 2.13
            quiet = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
                     else "broadcast_buffers")
            self.gen_ddp = DDP(self.gen, device_ids=ids, **{quiet: False})
            self.critic_ddp = DDP(self.critic, device_ids=ids, **{quiet: False})
        else:
            self.gen_ddp, self.critic_ddp = self.gen, self.critic

    # -- checkpoints ---------------------------------------------------------------------------------
    def checkpoint_payload(self) -> dict:
        payload = {"format": 1, "step": self.step, "config": json.dumps(self.cfg.to_dict()),
                   "hashes": json.dumps(self.hashes), "spec": json.dumps(self.spec.to_dict()),
                   "generator": self.gen.state_dict(), "critic": self.critic.state_dict(),
                   "opt_g": self.opt_g.state_dict(), "opt_c": self.opt_c.state_dict(),
                   "rng": self.rng.get_state(), "torch_rng": torch.get_rng_state(),
                   "history": json.dumps(self.run_history())}
        if self.noise_rng is not self.rng:
            payload["noise_rng"] = self.noise_rng.get_state()
        return _cpu(payload) if self.device.type != "cpu" else payload

    def run_history(self) -> list:
        """The stretches of training that made the current weights, this one last: steps, config hash,
        wall time, machine."""
        here = {"from_step": self._segment_start, "to_step": self.step, "config_sha256": self.config_sha256,
                "wall_s": round(self._segment_wall, 1), **self._machine}
        return self.history + ([here] if self.step > self._segment_start else [])

    def save(self):
        self.out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.out / "last.pt", self.checkpoint_payload())

    def keep(self):
        """The generator weights at this step, for comparing a retrained prefix of the run."""
        save_model(self.out / kept_name(self.step), self.gen,
                   {"name": self.cfg.name, "steps": self.step, "config_sha256": self.config_sha256})

    def resume(self, path=None):
        path = Path(path) if path else self.out / "last.pt"
        ck = load_checkpoint(path)
        try:
            hashes = json.loads(ck["hashes"])
            if hashes != self.hashes:
                changed = sorted(set(hashes.items()) ^ set(self.hashes.items()))
                raise ModelFileError("checkpoint was made for other topology/mapping files "
                                     f"(hash mismatch: {', '.join(sorted({f for f, _ in changed}))})", path=path)
            if json.loads(ck["spec"]) != self.spec.to_dict():
                raise ModelFileError("checkpoint feature channels differ from this config's", path=path)
            self.gen.load_state_dict(ck["generator"])
            self.critic.load_state_dict(ck["critic"])
            self.opt_g.load_state_dict(ck["opt_g"])
            self.opt_c.load_state_dict(ck["opt_c"])
            self.rng.set_state(ck["rng"])
            torch.set_rng_state(ck["torch_rng"])
            if self.noise_rng is not self.rng:
                if "noise_rng" not in ck:
                    raise ModelFileError(f"checkpoint was written by a run on the CPU; this config trains on "
                                         f"{self.device}: resume with device = \"cpu\"", path=path)
                self.noise_rng.set_state(ck["noise_rng"])
            self.step = int(ck["step"])
            self.history = json.loads(ck.get("history", "[]"))
            self._segment_start = self.step
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"checkpoint does not fit this config ({exc})", path=path)
        self.check_ranks_agree()
        log.info("resumed from %s at step %d", path, self.step)
        earlier = {h.get("config_sha256") for h in self.history}
        if self.config_sha256 and earlier and earlier != {self.config_sha256}:
            log.warning("the config file changed since earlier steps of this run (sha256 %s now, %s before): the "
                        "model will not be reproducible from one version of the config",
                        self.config_sha256[:12], ", ".join(sorted(str(h)[:12] for h in earlier)))
        here = self._machine["cpu_kernels"]
        other = [_kernels_of(h) for h in self.history if str(h.get("device", "cpu")).startswith("cpu")
                 and not _same_kernels(_kernels_of(h), here)]
        if self.device.type == "cpu" and other:
            log.warning("earlier steps of this run used other CPU kernels (%s) than this process (%s): the "
                        "resumed run will not repeat an uninterrupted one to the bit (gmx_dbm train pins the "
                        "instruction sets unless ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA or "
                        "MKL_ENABLE_INSTRUCTIONS is set; MKL's kernels differ between CPU vendors)",
                        other[-1], here)

    def check_ranks_agree(self) -> int:
        """Every rank holds the same weights and spectral-norm vectors at the same step (raises if not);
        -> the number of values compared. A no-op alone."""
        tensors = [*self.gen.parameters(), *self.gen.buffers(), *self.critic.parameters(),
                   *self.critic.buffers(), torch.tensor([float(self.step)], device=self.device)]
        n = self.group.check_same(tensors, what="network weights")
        if self.group.active:
            log.info("step %d: the %d training processes agree on all %d network values", self.step,
                     self.group.size, n)
        return n

    # -- one step ------------------------------------------------------------------------------------
    def sample_batch(self) -> Shard:
        cfg = self.cfg.train
        weights = torch.tensor([d.n_frames * d.recipe.n_beads for d in self.data], dtype=torch.float64)
        s = int(torch.multinomial(weights, 1, generator=self.rng))
        data = self.data[s]
        f = int(torch.randint(data.n_frames, (1,), generator=self.rng))
        nb = data.recipe.n_beads
        beads = torch.randperm(nb, generator=self.rng)[:min(cfg.beads_per_batch, nb)]
        initial = torch.rand(len(beads), generator=self.rng) >= cfg.gibbs_fraction
        mine = self.group.shard(len(beads)) if self.group.active else None
        self.gen.eval()
        shard = recurrent_samples(self.gen, data, f, beads, initial, self.grid, self.rng, self.noise_rng,
                                  self.device, mine, self.group, self.autocast)
        self.gen.train()
        return shard

    def train_step(self) -> dict:
        """One critic + generator update. -> the step's record: ``samples`` (of the whole batch), the
        ramp, and 0-d tensors (this rank's share of each whole-batch mean, see ``log_record``)."""
        cfg = self.cfg.train
        shard = self.sample_batch()
        batch, real_rel, initial = shard.batch, shard.real_rel, shard.initial
        cond, at = batch.grid, batch.atom_type
        real = density_of(batch.to_local(real_rel), self.grid)
        S = cond.shape[0]
        n_gibbs = int((~initial).sum())
        # this rank's share of the whole-batch means (1 alone): DDP averages over ranks, so a rank's loss
        # mean over its S samples is weighted by S * ranks / total, and the average is the whole-batch mean
        w_s = S * self.group.size / shard.total
        w_g = n_gibbs * self.group.size / shard.total_gibbs if shard.total_gibbs else 0.0
        rows = None if shard.rows is None else shard.rows.to(self.device)

        def draw(fn, *shape):
            """Random numbers for the whole batch from noise_rng, this rank's rows."""
            x = fn(shard.total, *shape, generator=self.noise_rng, device=self.device)
            return x if rows is None else x[rows]

        def weighted(x, w):
            return x if w == 1.0 else x * w

        # one fake set serves all critic steps (the generator does not change between them); on a CPU
        # the generator forward is the dearest part of a critic step
        noise = draw(torch.randn, self.gen.noise_dim)
        with torch.no_grad(), self.autocast():
            fake = self.gen(cond, at, noise).float()
        for _ in range(cfg.critic_steps):
            with self.autocast():
                w_dist = self.critic_ddp(cond, at, real).float().mean() - self.critic_ddp(cond, at, fake).float().mean()
            gp = gradient_penalty(self.critic_ddp, cond, at, real, fake, draw(torch.rand, 1, 1, 1, 1), self.autocast)
            loss_c = weighted(-w_dist + cfg.lambda_gp * gp, w_s)
            self.opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            self.opt_c.step()
        noise = draw(torch.randn, self.gen.noise_dim)
        # the critic judges without DDP: its gradients here are not used (zeroed before its next update)
        with self.autocast():
            fake = self.gen_ddp(cond, at, noise).float()
            loss_w = -self.critic(cond, at, fake).float().mean()
        fake_rel = batch.to_rel(collapse(fake, self.grid))
        ramp = prior_weight(self.cfg, self.step)
        loss_p, energies = prior_loss(self.cfg, batch, fake_rel, real_rel, ramp)
        # reconstruction warm-up on Gibbs-sweep samples, whose conditional distribution is narrow (all other
        # atoms present): it gets a CPU-sized training budget to the right neighbourhood quickly; the
        # adversarial and prior terms shape the distribution. Off when reconstruction_weight = 0.
        rec_w = self.reconstruction_weight()
        if n_gibbs:
            gibbs = (~initial).nonzero().squeeze(1).to(self.device)
            loss_rec = ((fake_rel - real_rel) ** 2).sum(-1)[gibbs].mean()
        else:
            loss_rec = fake_rel.sum() * 0
        loss_rec = weighted(loss_rec, w_g)
        loss_g = weighted(loss_w + loss_p, w_s) + rec_w * loss_rec
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.step += 1
        dev = (fake_rel.detach() - real_rel).norm(dim=-1).mean()
        return {"step": self.step, "samples": shard.total, "rec_rms_nm": loss_rec.detach(),
                "w_dist": weighted(w_dist.detach(), w_s), "gp": weighted(gp.detach(), w_s),
                "loss_g": loss_g.detach(), "loss_prior": weighted(loss_p.detach(), w_s), "prior_ramp": ramp,
                "mean_dev_nm": weighted(dev, w_s), **{f"e_{k}": weighted(v, w_s) for k, v in energies.items()}}

    def log_record(self, rec: dict) -> dict:
        """A step record with plain numbers: the tensors averaged over the ranks (each holds its mean
        weighted by its share of the samples, so the average is the whole-batch mean), in one transfer
        from the device."""
        keys = [k for k, v in rec.items() if torch.is_tensor(v)]
        if not keys:
            return dict(rec)
        vals = torch.stack([rec[k].detach().to(torch.float64) for k in keys])
        if self.group.active:
            self.group.mean_(vals)
        numbers = dict(zip(keys, vals.tolist()))
        for k in _ROOT_LOGGED:
            if k in numbers:
                numbers[k] = float(torch.tensor(numbers[k], dtype=torch.float32).sqrt())
        return {k: numbers.get(k, v) for k, v in rec.items()}

    def reconstruction_weight(self) -> float:
        t = self.cfg.train
        if t.reconstruction_weight <= 0 or self.step >= t.reconstruction_steps:
            return 0.0
        return t.reconstruction_weight * (1.0 - self.step / max(1, t.reconstruction_steps))

    # -- validation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Generate one validation frame per validation set (1 Gibbs sweep, no thermalisation) and score it
        against the reference frame: JSD per bonded kind, clashes, deformed rings, and the relative error of
        the energies the quality tables report (``val{i}_e_{angle,improper,lj}_rel``)."""
        from ..metrics import bonded_jsd
        from ..quality import TABLE_ENERGIES, frame_report
        out = {}
        self.gen.eval()
        gen = _Autocast(self.gen, self.autocast) if self.cfg.mixed_precision else self.gen
        for i, data in enumerate(self.val):
            rng = generator_for(self.device).manual_seed(1234)
            state = build_state(data.recipe, self.grid, data.cg[0], data.box[0], device=self.device)
            pos = generate_frame(gen, data.recipe, self.grid, state, rng, gibbs=1)
            scores = bonded_jsd(data.recipe.flat, data.aa[:1].double(), pos[None].double(), data.box[:1].double())
            out.update({f"val{i}_{k}": v for k, v in scores.items()})
            tools = self._validation_tools(i, data)
            if tools is None:
                continue
            ff, checks, ref = tools
            rep = frame_report(data.recipe.flat, pos.double().cpu().numpy(), data.box[0].double().numpy(), ff, checks)
            out[f"val{i}_clashes"] = rep["clashes"]
            out[f"val{i}_deformed_rings"] = rep["deformed_rings"]
            for label, terms in TABLE_ENERGIES:
                e, r = (sum(float(x[t]) for t in terms) for x in (rep["energy"], ref))
                out[f"val{i}_e_{label.split()[0].lower()}_rel"] = (e - r) / abs(r) if r else float("nan")
        self.gen.train()
        return out

    def _validation_tools(self, i: int, data: SystemData) -> tuple | None:
        """(force field, structure checks, reference energies) of validation set ``i``, built once; None
        when its box is too thin for the force field's cut-off (then only the JSDs are validated)."""
        tools = self._val_tools
        if i not in tools:
            from ..errors import InputError
            from ..ff.forcefield import ForceField
            from ..quality import StructureChecks
            try:
                ff = ForceField(data.recipe.flat)
                tools[i] = (ff, StructureChecks(data.recipe.flat),
                            ff.energies(data.aa[0].double().numpy(), data.box[0].double().numpy()))
            except InputError as exc:
                log.warning("validation set %d: no energies or clashes validated (%s)", i, exc)
                tools[i] = None
        return tools[i]

    def export(self, path=None) -> Path:
        path = Path(path) if path else self.out / "model.safetensors"
        meta = {"name": self.cfg.name, "spec": self.spec.to_dict(),
                "grid": dict(resolution=self.grid.resolution, length=self.grid.length,
                             sigma=self.grid.sigma, cutoff=self.grid.cutoff),
                "config": self.cfg.to_dict(), "hashes": self.hashes, "steps": self.step,
                "config_sha256": self.config_sha256, "history": self.run_history(),
                "card": self.model_card()}
        save_model(path, self.gen, meta)
        return path

    def model_card(self) -> dict:
        """Statistics backmap uses to flag frames unlike the training data: reference bonded energies
        per atom from the training frames (prior terms, bead-local)."""
        return {"training_frames": int(sum(d.n_frames for d in self.data)),
                "training_files": [f for ds in self.cfg.data for f in ds.aa],
                "prior": self.cfg.prior.mode, "size": self.cfg.model.size,
                "constraints": self.cfg.constraints, "specific": self.cfg.chemically_specific,
                "molecules": self.molecules, "chemistry": self.chemistry,
                "reference_stats": self.reference_stats(), "stereo": self.stereo_table(),
                "tacticity": self.tacticity()}

    def stereo_table(self) -> dict:
        """Handedness of the tetrahedral centres in the training frames (``gmx_dbm.stereo``): backmap
        inverts generated centres that disagree. Computed once."""
        if getattr(self, "_stereo", None) is None:
            from .. import stereo
            self._stereo = stereo.merge(
                stereo.learn(d.recipe.flat, zip(d.aa.double().numpy(), d.box.double().numpy())) for d in self.data)
        return self._stereo

    def tacticity(self) -> dict:
        """Relative handedness of consecutive centres in the training frames (``stereo.learn_tacticity``):
        the pattern backmap applies to chains of any length. Computed once."""
        if getattr(self, "_tacticity", None) is None:
            from .. import stereo
            parts = []
            for d in self.data:
                r = d.recipe
                ab = r.atom_bead
                cg_bonds = sorted({(min(ab[i], ab[j]), max(ab[i], ab[j])) for i, j in r.graph.edges if ab[i] != ab[j]})
                parts.append(stereo.learn_system_tacticity(
                    r.flat, ab, r.bead_types, cg_bonds,
                    zip(d.aa.double().numpy(), d.box.double().numpy(), d.cg.double().numpy())))
            self._tacticity = stereo.merge_tacticity(parts)
        return self._tacticity

    def reference_stats(self) -> dict | None:
        """Energy per term per atom (mean, std) and clashes of the training frames, for backmap's
        per-frame quality flags (``gmx_dbm.quality.reference_statistics``; at most 16 frames per data
        set, pooled over data sets). Computed once."""
        if getattr(self, "_reference_stats", None) is None:
            from ..quality import pool_statistics, reference_statistics
            parts = [reference_statistics(d.recipe.flat, d.aa.double().numpy(), d.box.double().numpy(),
                                          max_frames=16) for d in self.data]
            self._reference_stats = pool_statistics(parts)
        return self._reference_stats

    def run(self, max_steps: int | None = None, progress: bool = True) -> Path:
        """Train to ``train.steps`` (or ``max_steps``). Every rank trains; rank 0 alone writes the log,
        the checkpoints and the model, the others wait for the model at the end. -> the model path."""
        cfg = self.cfg.train
        root = self.group.is_root
        logf = None
        if root:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                logf = open(self.out / "train_log.jsonl", "a")
            except OSError as exc:
                raise OutputError(f"{self.out}: cannot write the training output folder ({exc.strerror}); "
                                  "expected a writable folder (config key 'output')") from None
        total = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
        try:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=self.step, disable=not (progress and root),
                       desc=f"train {self.cfg.name}", unit="step")
        except ImportError:  # pragma: no cover
            bar = None
        t0 = time.perf_counter()
        wall0 = self._segment_wall
        samples = 0
        kept_steps = set(cfg.keep_steps)
        try:
            while self.step < total:
                rec = self.train_step()
                self._segment_wall = wall0 + time.perf_counter() - t0
                samples += rec["samples"]
                if bar is not None:
                    bar.update(1)
                validate = self.step % cfg.validate_every == 0 and self.val
                if self.step % cfg.log_every == 0 or self.step % cfg.validate_every == 0 or self.step == total:
                    # the only transfer of the step's scalars from the device (and a collective under torchrun)
                    rec = self.log_record(rec)
                    rec["samples_per_s"] = samples / (time.perf_counter() - t0)
                    if bar is not None:
                        bar.set_postfix(w=f"{rec['w_dist']:.3f}", dev=f"{rec['mean_dev_nm']:.3f}")
                    if root:
                        if validate:
                            rec.update(self.validate())
                        logf.write(_json_record(rec) + "\n")
                        logf.flush()
                        if validate:
                            plot_learning_curves(self.out / "train_log.jsonl", self.out / "learning_curves.png")
                if root and self.step in kept_steps:
                    self.keep()
                if self.step % cfg.checkpoint_every == 0 or self.step == total:
                    self.check_ranks_agree()
                    if root:
                        self.save()
        finally:
            if logf is not None:
                logf.close()
            if bar is not None:
                bar.close()
        path = self.export() if root else self.out / "model.safetensors"
        self.group.barrier()
        return path


def train(config_path, resume: bool = False, max_steps: int | None = None, progress: bool = True,
          output=None) -> Path:
    """Train from a config file; ``output`` overrides the config's output folder. Returns the model path.
    Started by torchrun as one of several processes, it trains with them (``gmx_dbm.train.distributed``)."""
    from .config import resolve_config
    from .distributed import start
    cfg = resolve_config(config_path)
    if output is not None:
        cfg.output = os.path.abspath(output)
    group = start(cfg.device, config_path)
    try:
        trainer = Trainer(cfg, group, config_sha256=file_sha256(config_path))
        if resume:
            if (trainer.out / "last.pt").exists():
                trainer.resume()
            else:
                log.warning("--resume: no checkpoint in %s, starting from step 0", trainer.out)
        return trainer.run(max_steps=max_steps, progress=progress)
    finally:
        group.close()
