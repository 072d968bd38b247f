"""The device of a run: names parsed in one place, a missing device refused, and the whole pipeline on CUDA
when the machine has a GPU (tests marked ``gpu`` skip, saying so, without one).

The device-generic code runs on the CPU in every other backmap test; here the same sPS chain-mixture frame
(tests/data/sps_mix, 310 atoms) goes through every step on the GPU, twice (identical output), with the
generator in fp32 and bf16, and its bonds and bead positions are checked against the CG frame."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gmx_dbm.devices import local_device, resolve_device
from gmx_dbm.errors import InputError
from gmx_dbm.geometry import minimum_image
from gmx_dbm.io import read_frame
from gmx_dbm.mapping import map_trajectory, read_mapping
from gmx_dbm.topology import read_topology

ROOT = Path(__file__).resolve().parents[1]
MIX = ROOT / "tests" / "data" / "sps_mix"
MAP = ROOT / "mappings" / "sps.map"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")


def test_cpu_names_resolve_to_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert local_device("cpu", 3) == torch.device("cpu")


@pytest.mark.parametrize("name, message", [("tpu", "unknown device 'tpu'"), ("cuda:x", "unknown device 'cuda:x'"),
                                           ("meta", "not supported")])
def test_unknown_devices_are_refused(name, message):
    with pytest.raises(InputError, match=message) as err:
        resolve_device(name, where="--device")
    assert str(err.value).startswith("--device")


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback():
    with pytest.raises(InputError, match="no CUDA device is available"):
        resolve_device("cuda")


@pytest.fixture(scope="module")
def mix_cg(tmp_path_factory):
    system = read_topology(MIX / "topol.top")
    cg = tmp_path_factory.mktemp("cg") / "cg.gro"
    map_trajectory(MIX / "aa.gro", system, read_mapping([MAP], system), cg)
    return system, cg


def _backmap(cg, out, **kw):
    from gmx_dbm.backmap import backmap
    return backmap(cg, MIX / "topol.top", [MAP], out, model="sps", temperature=453, progress=False,
                   quality=False, **kw)


def _check_structure(system, cg, out):
    flat = system.flat()
    fr, beads = read_frame(out), read_frame(cg)
    idx, par = flat.bonded["bonds"][1]
    d = np.linalg.norm(minimum_image(fr.positions[idx[:, 1]] - fr.positions[idx[:, 0]], fr.box), axis=1)
    assert np.abs(d - par[:, 0]).max() < 2e-3          # constrained bonds (all-bonds, the card's)
    coo = read_mapping([MAP], system).flat().centre.tocoo()   # centre = R_b + sum_a w_a mi(r_a - R_b)
    rel = minimum_image(fr.positions[coo.col] - beads.positions[coo.row], fr.box) * coo.data[:, None]
    off = np.zeros_like(beads.positions)
    np.add.at(off, coo.row, rel)
    off = np.linalg.norm(off, axis=1)
    # the restraints hold the beads within thermal reach of their CG positions (as test_backmap's check)
    assert off.max() < 0.3 and np.median(off) < 0.08


@pytest.mark.gpu
@needs_cuda
def test_whole_pipeline_on_cuda_is_reproducible(mix_cg, tmp_path):
    system, cg = mix_cg
    a, b = tmp_path / "a.gro", tmp_path / "b.gro"
    s = _backmap(cg, a, device="cuda", md_steps=100)
    _backmap(cg, b, device="cuda", md_steps=100)
    assert s["device"].startswith("cuda")
    assert a.read_bytes() == b.read_bytes()
    _check_structure(system, cg, a)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_generator_autocast_on_cuda(mix_cg, tmp_path, precision):
    system, cg = mix_cg
    out = tmp_path / "aa.gro"
    _backmap(cg, out, device="cuda", md_steps=100, precision=precision)
    _check_structure(system, cg, out)


def test_bf16_generator_on_the_cpu_gives_a_valid_frame(mix_cg, tmp_path):
    system, cg = mix_cg
    out = tmp_path / "aa.gro"
    _backmap(cg, out, precision="bf16", md_steps=30, gibbs=1)
    _check_structure(system, cg, out)
