"""Per-frame quality flags (gmx_dbm.quality): clashes whatever the exclusions, deformed rings, energies
against reference statistics, and the backmap step that redraws the beads of deformed rings."""
from __future__ import annotations

import logging
import textwrap

import numpy as np
import pytest

from gmx_dbm import quality as Q
from gmx_dbm.ff.forcefield import ForceField
from gmx_dbm.io import read_frames
from gmx_dbm.topology import read_topology

from test_evaluate import toy  # noqa: F401 (the butane fixture)

# benzene: one bead of 12 atoms; nrexcl 3 excludes every pair of the ring from the non-bonded terms
BENZENE = """
[ defaults ]
1 2 no 1.0 1.0
[ atomtypes ]
CA 12.011 0.0 A 0.355 0.29
HA  1.008 0.0 A 0.242 0.13
[ moleculetype ]
BNZ 3
[ atoms ]
{atoms}
[ bonds ]
{bonds}
[ molecules ]
BNZ 2
"""


@pytest.fixture(scope="module")
def benzene(tmp_path_factory):
    atoms = [f"{k + 1} CA 1 BNZ C{k + 1} 1 0.0" for k in range(6)] + \
            [f"{k + 7} HA 1 BNZ H{k + 1} 1 0.0" for k in range(6)]
    bonds = [f"{k + 1} {(k + 1) % 6 + 1} 1 0.139 1e5" for k in range(6)] + \
            [f"{k + 1} {k + 7} 1 0.108 1e5" for k in range(6)]
    p = tmp_path_factory.mktemp("bnz") / "bnz.top"
    p.write_text(textwrap.dedent(BENZENE).format(atoms="\n".join(atoms), bonds="\n".join(bonds)))
    flat = read_topology(p).flat()
    phi = np.arange(6) * np.pi / 3
    ring = np.stack([np.cos(phi), np.sin(phi), np.zeros(6)], 1)
    one = np.concatenate([0.139 * ring, 0.247 * ring])
    pos = np.concatenate([one + [1.0, 1.0, 1.0], one + [2.2, 2.0, 1.5]])
    return flat, pos, np.diag([3.5, 3.5, 3.5]), p


def test_ideal_rings_are_clean(benzene):
    flat, pos, box, _ = benzene
    checks = Q.StructureChecks(flat)
    assert len(checks.rings) == 2 and all(len(r) == 6 for r in checks.rings)
    assert checks.clashes(pos, box) == 0
    assert len(checks.deformed_rings(pos, box)) == 0


def test_collapsed_ring_is_a_clash_and_a_deformed_ring(benzene):
    """A ring folded onto itself (C4 pulled onto C1, as the generator sometimes leaves one) is excluded
    from the force field's non-bonded terms: the clash count must see it anyway, and the ring check names
    the ring."""
    flat, pos, box, _ = benzene
    bad = pos.copy()
    bad[3] = bad[0] + [0.02, 0.05, 0.0]
    bad[9] = bad[6] + [0.03, 0.05, 0.0]   # its hydrogen onto C1's hydrogen
    checks = Q.StructureChecks(flat)
    assert checks.clashes(bad, box) >= 2
    assert checks.deformed_rings(bad, box).tolist() == [0]
    ff = ForceField(flat)
    rep = Q.frame_report(flat, bad, box, ff, checks)
    assert rep["clashes"] >= 2 and rep["deformed_rings"] == 1
    # the force field excludes these pairs: the thermalisation could not have separated them
    excluded = Q.exclusion_keys(flat)
    redraw = checks.atoms_to_redraw(bad, box, excluded)
    assert set(redraw.tolist()) >= {0, 1, 2, 3, 4, 5} and not set(redraw.tolist()) & set(range(12, 24))
    warn = Q.quality_warnings(rep, None)
    assert any(w.startswith("clashes ") for w in warn) and any(w.startswith("rings ") for w in warn)


def test_frame_report_reference_statistics_and_warnings(toy):  # noqa: F811
    flat = toy["flat"]
    frames = list(read_frames(toy["ref"]))
    ff = ForceField(flat)
    rep = Q.frame_report(flat, frames[0].positions, frames[0].box, ff)
    assert rep["clashes"] == 0
    assert rep["energy_per_atom"]["angle"] == pytest.approx(rep["energy"]["angle"] / flat.n_atoms)
    stats = Q.reference_statistics(flat, [f.positions for f in frames], [f.box for f in frames], ff)
    assert stats["n_frames"] == 4 and set(stats["terms"]) >= {"bond", "angle", "lj_sr"}
    assert Q.quality_warnings(rep, stats) == []
    assert Q.quality_warnings(rep, None) == []
    # put two atoms of different molecules on top of each other and stretch a bond
    pos = frames[0].positions.copy()
    pos[5] = pos[0] + [0.05, 0, 0]
    pos[1] += [0.05, 0, 0]
    bad = Q.frame_report(flat, pos, frames[0].box, ff)
    assert bad["clashes"] >= 1
    warn = Q.quality_warnings(bad, stats)
    assert any(w.startswith("bond ") for w in warn) and any(w.startswith("lj_sr ") for w in warn)


def test_frame_quality_logs_and_warns(toy, caplog):  # noqa: F811
    flat = toy["flat"]
    frames = list(read_frames(toy["ref"]))
    stats = Q.reference_statistics(flat, [f.positions for f in frames], [f.box for f in frames])
    qc = Q.FrameQuality(flat, stats)
    caplog.set_level(logging.INFO, logger="gmx_dbm.quality")
    rep = qc(0, frames[0].positions, frames[0].box)
    assert rep["clashes"] == 0 and "angle" in rep["energy"]
    assert "frame 0 quality: 0 clashes" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    pos = frames[1].positions.copy()
    pos[1] += [0.05, 0, 0]
    qc(1, pos, frames[1].box)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("frame 1: bond ") for m in warned)
    # no statistics: the INFO line only
    caplog.clear()
    Q.FrameQuality(flat, None)(2, pos, frames[1].box)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_pool_statistics():
    a = {"n_frames": 2, "unit": "u", "terms": {"angle": {"mean": 1.0, "std": 0.0}}, "clashes": {"mean": 0, "std": 0}}
    b = {"n_frames": 2, "unit": "u", "terms": {"angle": {"mean": 3.0, "std": 0.0}}, "clashes": {"mean": 0, "std": 0}}
    assert Q.pool_statistics([a]) is a and Q.pool_statistics([]) is None
    p = Q.pool_statistics([a, b])
    assert p["terms"]["angle"] == {"mean": 2.0, "std": 1.0} and p["n_frames"] == 4


def test_small_terms_are_not_flagged_for_hundredths_of_a_kilojoule():
    """The sps card's reaction-field Coulomb (-0.019 +- 0.005 kJ/mol/atom at 568 K) against a good
    backmapped frame of the example (-0.091; its source structure has -0.103): no warning; a term off by
    several tenths of a kJ/mol per atom still is one."""
    stats = {"terms": {"coulomb_sr": {"mean": -0.019, "std": 0.0049}}}
    assert Q.quality_warnings({"energy_per_atom": {"coulomb_sr": -0.091}}, stats) == []
    warn = Q.quality_warnings({"energy_per_atom": {"coulomb_sr": -0.3}}, stats)
    assert len(warn) == 1 and warn[0].startswith("coulomb_sr ")


def test_evaluate_reports_clashes_and_deformed_rings(benzene, tmp_path):
    """`gmx_dbm evaluate` counts the folded ring of a candidate (clashes and deformed rings per frame),
    which the non-bonded exclusions hide from the energies."""
    from gmx_dbm.evaluate import evaluate, format_table
    from gmx_dbm.io import AtomInfo, Frame, write_frames
    flat, pos, box, top = benzene
    bad = pos.copy()
    bad[3] = bad[0] + [0.02, 0.05, 0.0]
    atoms = AtomInfo.from_topology(flat)
    write_frames(tmp_path / "ref.gro", atoms, [Frame(pos, box), Frame(pos + 0.001, box)])
    write_frames(tmp_path / "bad.gro", atoms, [Frame(bad, box), Frame(pos, box)])
    res = evaluate(tmp_path / "ref.gro", [tmp_path / "bad.gro"], top, energies=False)
    assert res["reference"]["clashes_per_frame"] == 0 and res["reference"]["deformed_rings_per_frame"] == 0
    cand = res["candidates"]["bad"]
    assert cand["deformed_rings_per_frame"] == 0.5 and cand["clashes_per_frame"] >= 0.5
    assert "rings/fr" in format_table(res)

