"""Sampler and thermalisation settings of a backmap run, resolved once: what the user gave, else the
user's run parameters (``-f AA.mdp``: constraints, ref-t, the non-bonded settings), else the model card's
measured values, else the paper's. ``sources`` says where constraints, temperature and the force field's
non-bonded settings came from."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError
from ..ff.forcefield import NonbondedSettings
from ..model.card import ModelCard
from .run_parameters import RunParameters

# thermalisation steps when the model card leaves them open; measured on the 453 K set: 300 steps of
# 4 fs take angle JSD 0.0088 -> 0.0005, LJ energy -646 -> -8142
MD_STEPS = 300
FALLBACK_TEMPERATURE = 300.0
PAPER = {"gibbs": 4, "orientations": 1, "proposals": 1, "proposal_sweeps": 1, "select_temperature": 0.0,
         "md_steps": MD_STEPS}
CONSTRAINTS = ("none", "h-bonds", "all-bonds")


@dataclass(frozen=True)
class SamplerSettings:
    gibbs: int = 4
    orientations: int = 1
    proposals: int = 1
    proposal_sweeps: int = 1
    select_temperature: float = 0.0
    md_steps: int = MD_STEPS
    temperature: float = FALLBACK_TEMPERATURE
    constraints: str = "none"
    seed: int = 0
    temperature_note: str | None = None   # logged once the first CG frame has been checked
    # the thermalisation's non-bonded treatment (None: its own defaults, ``ff.dynamics``)
    forcefield: NonbondedSettings | None = None
    sources: dict = field(default_factory=dict, compare=False)   # constraints/temperature/forcefield -> where from

    @property
    def prior_lj_cutoff(self) -> float:
        """LJ cut-off (nm) of the energy that chooses among candidates: the run parameters' rvdw."""
        return 1.0 if self.forcefield is None else self.forcefield.cutoff

    @classmethod
    def resolve(cls, card: ModelCard, constraints: str = "auto", temperature: float | None = None,
                seed: int = 0, mdp: RunParameters | None = None, **given) -> "SamplerSettings":
        """``given``: gibbs, orientations, proposals, proposal_sweeps, select_temperature, md_steps
        (None = the card's, else the paper's). ``mdp``: the user's run parameters; explicit
        ``constraints`` (not 'auto') and ``temperature`` win over them."""
        unknown = set(given) - set(PAPER)
        if unknown:
            raise TypeError(f"unknown sampler settings {sorted(unknown)}")
        md = given.get("md_steps") if given.get("md_steps") is not None else card.sampler.get("md_steps", MD_STEPS)
        # without the thermalisation the card's generator-only settings (if it has them) are the defaults
        defaults = {**card.sampler, **card.sampler_without_md} if md == 0 else card.sampler
        chosen = {k: (given.get(k) if given.get(k) is not None else defaults.get(k, PAPER[k])) for k in PAPER}
        sources = {}
        if constraints != "auto":
            sources["constraints"] = _explicit("constraints", mdp)
        elif mdp is not None:
            constraints, sources["constraints"] = mdp.constraints()
        else:
            constraints, sources["constraints"] = card.constraints, "the model card"
        if constraints not in CONSTRAINTS:
            raise InputError(f"constraints must be none, h-bonds or all-bonds, got {constraints!r}")
        md_steps = int(chosen["md_steps"])
        if md_steps < 0:
            raise InputError(f"MD steps must be 0 (off) or positive, got {md_steps}")
        note = None
        if temperature is not None:
            sources["temperature"] = _explicit("ref-t", mdp, "temperature")
        elif mdp is not None:
            temperature, sources["temperature"] = mdp.temperature()
        if temperature is None:
            temperature = card.temperature
            sources["temperature"] = "the model card"
            if md_steps and temperature is not None:
                note = (f"thermalising at {temperature:g} K, the temperature of the model's training data: give "
                        "your CG simulation's temperature with --temperature (or ref-t in -f MDP)")
        if temperature is None:
            temperature = FALLBACK_TEMPERATURE
            sources["temperature"] = "the fallback"
            if md_steps:
                note = (f"thermalising at {temperature:g} K: give the CG simulation's temperature with "
                        "--temperature (or ref-t in -f MDP)")
        forcefield = None
        if mdp is not None:
            forcefield, sources["forcefield"] = mdp.nonbonded(), mdp.name
        if not temperature > 0:
            raise InputError(f"temperature must be positive (kelvin), got {temperature}")
        return cls(gibbs=int(chosen["gibbs"]), orientations=int(chosen["orientations"]),
                   proposals=max(1, int(chosen["proposals"])), proposal_sweeps=max(1, int(chosen["proposal_sweeps"])),
                   select_temperature=float(chosen["select_temperature"]), md_steps=md_steps,
                   temperature=float(temperature), constraints=constraints, seed=int(seed), temperature_note=note,
                   forcefield=forcefield, sources=sources)


def _explicit(key: str, mdp: RunParameters | None, option: str | None = None) -> str:
    """Source text of an explicitly given value, naming the mdp entry it overrides."""
    text = f"set explicitly (--{option or key})"
    over = mdp.entry(key) if mdp is not None else None
    return f"{text}, over {over}" if over else text
