"""The model card: what a trained model knows about its data and how it is best sampled.

Stored as the ``card`` entry of a model file's metadata (``checkpoint.read_model_meta``) by the trainer;
read once into a ``ModelCard`` so that nothing else looks keys up in the raw dictionary.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field

SAMPLER_KEYS = ("gibbs", "orientations", "proposals", "proposal_sweeps", "select_temperature", "md_steps")


def molecule_signatures(system) -> list:
    """Atom types + bonds of each used moleculetype: what a chemically specific model was trained on
    (stored in the card as ``molecules``)."""
    out = []
    for name, count in system.molecules:
        if count:
            mt = system.moleculetypes[name]
            out.append("|".join(mt.atom_attr("type")) + "#" + ",".join(f"{i}-{j}" for i, j in sorted(mt.graph.edges)))
    return sorted(set(out))


def _structure(value):
    """Card values written as JSON or Python literals (older files) -> Python objects."""
    if not isinstance(value, str):
        return value
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(value)
        except (ValueError, SyntaxError):
            continue
    return value


@dataclass(frozen=True)
class ModelCard:
    """specific: trained for the molecules in ``molecules`` only (signatures: atom types + bonds);
    constraints: how bonds were treated in the training data ('none', 'h-bonds', 'all-bonds');
    temperature: the training data's (K); sampler: measured sampler settings {name: value};
    sampler_without_md: the settings measured best with the thermalisation off (``md_steps`` 0), which
    replace ``sampler``'s when a run turns it off;
    stereo: handedness table {moleculetype: {local centre index: +1/-1}}; tacticity: the relative
    handedness of consecutive centres per pair kind (``gmx_dbm.stereo.merge_tacticity``), which applies to
    any chain length; chemistry: the bead signatures seen in training (``gmx_dbm.mapping.chemistry``),
    which a chemically specific model needs of every bead; reference_stats: energy per term per atom and
    clashes of the training frames (``gmx_dbm.quality.reference_statistics``)."""
    specific: bool = False
    molecules: tuple = ()
    chemistry: tuple = ()
    tacticity: dict = field(default_factory=dict)
    constraints: str = "none"
    temperature: float | None = None
    sampler: dict = field(default_factory=dict)
    sampler_without_md: dict = field(default_factory=dict)
    stereo: dict = field(default_factory=dict)
    reference_stats: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta: dict) -> "ModelCard":
        raw = {k: _structure(v) for k, v in (meta.get("card") or {}).items()}
        sampler = dict(raw.pop("sampler", None) or {})
        if "select_temperature" in raw:   # stored beside the sampler settings by earlier trainers
            sampler.setdefault("select_temperature", raw.pop("select_temperature"))
        temperature = raw.pop("temperature", None)
        without_md = dict(raw.pop("sampler_without_md", None) or {})
        return cls(specific=bool(raw.pop("specific", False)),
                   molecules=tuple(raw.pop("molecules", None) or ()),
                   chemistry=tuple(raw.pop("chemistry", None) or ()),
                   tacticity=dict(raw.pop("tacticity", None) or {}),
                   constraints=str(raw.pop("constraints", "none") or "none"),
                   temperature=None if temperature is None else float(temperature),
                   sampler={k: v for k, v in sampler.items() if k in SAMPLER_KEYS},
                   sampler_without_md={k: v for k, v in without_md.items() if k in SAMPLER_KEYS and k != "md_steps"},
                   stereo=dict(raw.pop("stereo", None) or {}),
                   reference_stats=raw.pop("reference_stats", None) or None,
                   extra=raw)
