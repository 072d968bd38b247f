"""Model files that never execute code when loaded.

* Shipped/exported models: safetensors (generator weights) with a JSON header entry ``gmx_dbm`` holding
  the resolved config, the feature vocabulary, network hyper-parameters and the model card statistics.
* Training checkpoints (for ``--resume``): ``torch.save`` of plain tensors/numbers/strings, loaded with
  ``torch.load(weights_only=True)``, which refuses pickled code.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..io.safe import atomic_output, discard, temporary_path
from .networks import Critic, Generator
from .recipe import FeatureSpec

FORMAT_VERSION = 1


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(path, generator: Generator, meta: dict) -> None:
    """Write generator weights + metadata as safetensors (atomically, backing up an existing file)."""
    from safetensors.torch import save_file
    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    header = {"gmx_dbm": json.dumps({"format": FORMAT_VERSION, "generator": generator.hparams, **meta})}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def read_model_meta(path) -> dict:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except FileNotFoundError:
        raise ModelFileError("model file not found", path=path)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelFileError(f"not a readable safetensors model file ({exc})", path=path)
    if "gmx_dbm" not in meta:
        raise ModelFileError("safetensors file lacks gmx_dbm metadata (not a gmx_dbm model)", path=path)
    try:
        return json.loads(meta["gmx_dbm"])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"corrupt gmx_dbm metadata ({exc})", path=path)


def load_model(path, device="cpu"):
    """-> (Generator in eval mode, metadata dict). Refuses anything but safetensors."""
    from safetensors.torch import load_file
    path = Path(path)
    meta = read_model_meta(path)
    if meta.get("format") != FORMAT_VERSION:
        raise ModelFileError(f"model format {meta.get('format')} not supported (expected {FORMAT_VERSION})", path=path)
    try:
        gen = Generator(**meta["generator"])
        state = load_file(str(path), device=str(device))
        gen.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ModelFileError(f"weights do not match the stored network description ({exc})", path=path)
    except Exception as exc:
        raise ModelFileError(f"cannot read model weights ({exc})", path=path)
    gen.eval()
    return gen.to(device), meta


def save_checkpoint(path, payload: dict) -> None:
    """Run-internal file, rewritten in place (no #backup#) but never left half-written."""
    tmp = temporary_path(path)
    try:
        torch.save(payload, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def load_checkpoint(path) -> dict:
    """Training checkpoint; ``weights_only=True`` refuses pickled objects that would run code."""
    if not os.path.isfile(path):
        raise ModelFileError("checkpoint not found", path=path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"refused or corrupt checkpoint: {msg}", path=path)


def build_networks(spec: FeatureSpec, resolution: int, sigma_voxels: float, sizes: dict):
    gen = Generator(spec.n_channels, spec.n_atom_types, resolution, sizes["g_width"], sizes["g_blocks"],
                    sizes["noise_dim"], sigma_voxels)
    critic = Critic(spec.n_channels, spec.n_atom_types, resolution, sizes["c_width"], sizes["c_blocks"])
    return gen, critic
