"""Sampler and thermalisation settings of a backmap run, resolved once: what the user gave, else the
model card's measured values, else the paper's."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..model.card import ModelCard

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

    @classmethod
    def resolve(cls, card: ModelCard, constraints: str = "auto", temperature: float | None = None,
                seed: int = 0, **given) -> "SamplerSettings":
        """``given``: gibbs, orientations, proposals, proposal_sweeps, select_temperature, md_steps
        (None = the card's, else the paper's)."""
        unknown = set(given) - set(PAPER)
        if unknown:
            raise TypeError(f"unknown sampler settings {sorted(unknown)}")
        chosen = {k: (given.get(k) if given.get(k) is not None else card.sampler.get(k, PAPER[k])) for k in PAPER}
        if constraints == "auto":
            constraints = card.constraints
        if constraints not in CONSTRAINTS:
            raise InputError(f"constraints must be none, h-bonds or all-bonds, got {constraints!r}")
        md_steps = int(chosen["md_steps"])
        if md_steps < 0:
            raise InputError(f"MD steps must be 0 (off) or positive, got {md_steps}")
        note = None
        if temperature is None:
            temperature = card.temperature
            if md_steps and temperature is not None:
                note = (f"thermalising at {temperature:g} K, the temperature of the model's training data: give "
                        "your CG simulation's temperature with --temperature")
        if temperature is None:
            temperature = FALLBACK_TEMPERATURE
            if md_steps:
                note = f"thermalising at {temperature:g} K: give the CG simulation's temperature with --temperature"
        if not temperature > 0:
            raise InputError(f"temperature must be positive (kelvin), got {temperature}")
        return cls(gibbs=int(chosen["gibbs"]), orientations=int(chosen["orientations"]),
                   proposals=max(1, int(chosen["proposals"])), proposal_sweeps=max(1, int(chosen["proposal_sweeps"])),
                   select_temperature=float(chosen["select_temperature"]), md_steps=md_steps,
                   temperature=float(temperature), constraints=constraints, seed=int(seed), temperature_note=note)
