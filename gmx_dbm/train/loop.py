"""Conditional WGAN-GP training with energy priors and recurrent environments (paper II.C-D).

One training step: pick a frame and a random set of beads; run the generator through the beads' atom
sequences without gradients, feeding each generated atom into the environment of the next (recurrent
training, initial-pass or Gibbs-sweep environments); then ``critic_steps`` critic updates (Wasserstein loss
+ gradient penalty, spectrally normalised critic) and one generator update (Wasserstein loss + energy
prior on the collapsed coordinates) on all the collected samples at once.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from ..errors import ModelFileError, OutputError
from ..mapping.chemistry import bead_signatures
from ..model.card import molecule_signatures
from ..model.checkpoint import (build_networks, file_sha256, load_checkpoint, save_checkpoint, save_model)
from ..model.features import Batch, build_state, featurize
from ..model.networks import NETWORK_SIZES
from ..model.prior import prior_energy
from ..model.sampler import generate_frame
from ..voxel import GridSpec, collapse, density_of, minimum_image
from .config import Config
from .data import SystemData, load_structures, load_system_data, vocabulary

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
            t = torch.cat([t, torch.full(shape, value, dtype=t.dtype)], dim=dim_pad)
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


def recurrent_samples(gen, data: SystemData, frame: int, beads: torch.Tensor, initial: torch.Tensor,
                      grid: GridSpec, rng: torch.Generator):
    """Walk the beads' sequences, generated atoms feeding later environments.
    -> (Batch, true rel (S, 3), initial-pass flag (S,))."""
    recipe = data.recipe
    ref = data.aa[frame]
    centres, box = data.cg[frame], data.box[frame]
    state = build_state(recipe, grid, centres, box, positions=ref)
    seq = torch.from_numpy(recipe.bead_seq)
    angles = torch.rand(len(beads), generator=rng) * (2 * math.pi)
    batches, reals, modes = [], [], []
    for k in range(recipe.n_steps):
        sel = seq[beads, k] >= 0
        if not bool(sel.any()):
            break
        b = beads[sel]
        atoms = seq[b, k]
        batch = featurize(recipe, grid, state, atoms, initial[sel], angles[sel])
        noise = torch.randn(len(atoms), gen.noise_dim, generator=rng)
        with torch.no_grad():
            rel = batch.to_rel(collapse(gen(batch.grid, batch.atom_type, noise), grid))
        state.positions[atoms] = centres[b] + rel
        batches.append(batch)
        reals.append(minimum_image(ref[atoms] - centres[b], box))
        modes.append(initial[sel])
    return cat_batches(batches), torch.cat(reals), torch.cat(modes)


def gradient_penalty(critic, cond, atom_type, real, fake, rng):
    eps = torch.rand(real.shape[0], 1, 1, 1, 1, generator=rng)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    score = critic(cond, atom_type, mix)
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
    return loss, {k: float(v.detach().mean()) for k, v in e.items()}


def _config_hashes(cfg: Config) -> dict:
    files = {}
    for ds in cfg.data + cfg.validation:
        for f in [ds.topology] + list(ds.mapping):
            files[f] = file_sha256(f)
    return files


class Trainer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.grid = GridSpec(cfg.grid.resolution, cfg.grid.length, cfg.grid.sigma, cfg.grid.cutoff)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.device != "cpu":
            # the featuriser and sampler run on the CPU; networks could move, but keep one code path
            log.warning("device %s requested: training runs on the CPU", cfg.device)
        torch.manual_seed(cfg.seed)
        structures = [load_structures(ds) for ds in cfg.data]
        val_structures = [load_structures(ds) for ds in cfg.validation]
        self.spec = vocabulary(structures, cfg.features)
        self.molecules = sorted({sig for system, _ in structures for sig in molecule_signatures(system)})
        self.chemistry = sorted({sig for _, mapping in structures for sig in bead_signatures(mapping)})
        self.data = [load_system_data(ds, self.spec, st) for ds, st in zip(cfg.data, structures)]
        self.val = [load_system_data(ds, self.spec, st) for ds, st in zip(cfg.validation, val_structures)]
        self.sizes = network_sizes(cfg)
        self.gen, self.critic = build_networks(self.spec, self.grid.resolution,
                                               self.grid.sigma / self.grid.spacing, self.sizes)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.train.lr_generator, betas=(0.0, 0.9))
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=cfg.train.lr_critic, betas=(0.0, 0.9))
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.hashes = _config_hashes(cfg)

    # -- checkpoints ---------------------------------------------------------------------------------
    def checkpoint_payload(self) -> dict:
        return {"format": 1, "step": self.step, "config": json.dumps(self.cfg.to_dict()),
                "hashes": json.dumps(self.hashes), "spec": json.dumps(self.spec.to_dict()),
                "generator": self.gen.state_dict(), "critic": self.critic.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_c": self.opt_c.state_dict(),
                "rng": self.rng.get_state(), "torch_rng": torch.get_rng_state()}

    def save(self):
        self.out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.out / "last.pt", self.checkpoint_payload())

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
            self.step = int(ck["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"checkpoint does not fit this config ({exc})", path=path)
        log.info("resumed from %s at step %d", path, self.step)

    # -- one step ------------------------------------------------------------------------------------
    def sample_batch(self):
        cfg = self.cfg.train
        weights = torch.tensor([d.n_frames * d.recipe.n_beads for d in self.data], dtype=torch.float64)
        s = int(torch.multinomial(weights, 1, generator=self.rng))
        data = self.data[s]
        f = int(torch.randint(data.n_frames, (1,), generator=self.rng))
        nb = data.recipe.n_beads
        beads = torch.randperm(nb, generator=self.rng)[:min(cfg.beads_per_batch, nb)]
        initial = torch.rand(len(beads), generator=self.rng) >= cfg.gibbs_fraction
        self.gen.eval()
        batch, real_rel, initial = recurrent_samples(self.gen, data, f, beads, initial, self.grid, self.rng)
        self.gen.train()
        return batch, real_rel, initial

    def train_step(self) -> dict:
        cfg = self.cfg.train
        batch, real_rel, initial = self.sample_batch()
        cond, at = batch.grid, batch.atom_type
        real = density_of(batch.to_local(real_rel), self.grid)
        S = cond.shape[0]
        # one fake set serves all critic steps (the generator does not change between them); on a CPU
        # the generator forward is the dearest part of a critic step
        noise = torch.randn(S, self.gen.noise_dim, generator=self.rng)
        with torch.no_grad():
            fake = self.gen(cond, at, noise)
        for _ in range(cfg.critic_steps):
            w_dist = self.critic(cond, at, real).mean() - self.critic(cond, at, fake).mean()
            gp = gradient_penalty(self.critic, cond, at, real, fake, self.rng)
            loss_c = -w_dist + cfg.lambda_gp * gp
            self.opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            self.opt_c.step()
        noise = torch.randn(S, self.gen.noise_dim, generator=self.rng)
        fake = self.gen(cond, at, noise)
        loss_w = -self.critic(cond, at, fake).mean()
        fake_rel = batch.to_rel(collapse(fake, self.grid))
        ramp = prior_weight(self.cfg, self.step)
        loss_p, energies = prior_loss(self.cfg, batch, fake_rel, real_rel, ramp)
        # reconstruction warm-up on Gibbs-sweep samples, whose conditional distribution is narrow (all other
        # atoms present): it gets a CPU-sized training budget to the right neighbourhood quickly; the
        # adversarial and prior terms shape the distribution. Off when reconstruction_weight = 0.
        rec_w = self.reconstruction_weight()
        gibbs = ~initial
        loss_rec = ((fake_rel - real_rel) ** 2).sum(-1)[gibbs].mean() if bool(gibbs.any()) else fake_rel.sum() * 0
        loss_g = loss_w + loss_p + rec_w * loss_rec
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.step += 1
        dev = float((fake_rel.detach() - real_rel).norm(dim=-1).mean())
        return {"step": self.step, "samples": S, "rec_rms_nm": float(loss_rec.detach().sqrt()), "w_dist": float(w_dist.detach()), "gp": float(gp.detach()),
                "loss_g": float(loss_g.detach()), "loss_prior": float(loss_p.detach()), "prior_ramp": ramp,
                "mean_dev_nm": dev, **{f"e_{k}": v for k, v in energies.items()}}

    def reconstruction_weight(self) -> float:
        t = self.cfg.train
        if t.reconstruction_weight <= 0 or self.step >= t.reconstruction_steps:
            return 0.0
        return t.reconstruction_weight * (1.0 - self.step / max(1, t.reconstruction_steps))

    # -- validation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Generate one validation frame per validation set (1 Gibbs sweep) and score bonds/angles."""
        from ..metrics import bonded_jsd
        out = {}
        self.gen.eval()
        for i, data in enumerate(self.val):
            rng = torch.Generator().manual_seed(1234)
            state = build_state(data.recipe, self.grid, data.cg[0], data.box[0])
            pos = generate_frame(self.gen, data.recipe, self.grid, state, rng, gibbs=1)
            scores = bonded_jsd(data.recipe.flat, data.aa[:1].double(), pos[None].double(), data.box[:1].double())
            out.update({f"val{i}_{k}": v for k, v in scores.items()})
        self.gen.train()
        return out

    def export(self, path=None) -> Path:
        path = Path(path) if path else self.out / "model.safetensors"
        meta = {"name": self.cfg.name, "spec": self.spec.to_dict(),
                "grid": dict(resolution=self.grid.resolution, length=self.grid.length,
                             sigma=self.grid.sigma, cutoff=self.grid.cutoff),
                "config": self.cfg.to_dict(), "hashes": self.hashes, "steps": self.step,
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
        cfg = self.cfg.train
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            logf = open(self.out / "train_log.jsonl", "a")
        except OSError as exc:
            raise OutputError(f"{self.out}: cannot write the training output folder ({exc.strerror}); "
                              "expected a writable folder (config key 'output')") from None
        total = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
        try:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=self.step, disable=not progress, desc=f"train {self.cfg.name}",
                       unit="step")
        except ImportError:  # pragma: no cover
            bar = None
        t0 = time.perf_counter()
        samples = 0
        try:
            while self.step < total:
                rec = self.train_step()
                samples += rec["samples"]
                rec["samples_per_s"] = samples / (time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(w=f"{rec['w_dist']:.3f}", dev=f"{rec['mean_dev_nm']:.3f}")
                if self.step % cfg.validate_every == 0 and self.val:
                    rec.update(self.validate())
                if self.step % cfg.log_every == 0 or self.step % cfg.validate_every == 0 or self.step == total:
                    logf.write(json.dumps(rec) + "\n")
                    logf.flush()
                if self.step % cfg.checkpoint_every == 0 or self.step == total:
                    self.save()
        finally:
            logf.close()
            if bar is not None:
                bar.close()
        return self.export()


def train(config_path, resume: bool = False, max_steps: int | None = None, progress: bool = True,
          output=None) -> Path:
    """Train from a config file; ``output`` overrides the config's output folder. Returns the model path."""
    from .config import resolve_config
    cfg = resolve_config(config_path)
    if output is not None:
        cfg.output = os.path.abspath(output)
    trainer = Trainer(cfg)
    if resume:
        if (trainer.out / "last.pt").exists():
            trainer.resume()
        else:
            log.warning("--resume: no checkpoint in %s, starting from step 0", trainer.out)
    return trainer.run(max_steps=max_steps, progress=progress)
