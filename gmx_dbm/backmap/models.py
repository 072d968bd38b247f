"""Which model backmaps a system: shipped models by name, files by path, and whether a model fits."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import ModelFileError
from ..mapping.chemistry import bead_signatures, describe_signature
from ..model.card import ModelCard, molecule_signatures
from ..model.checkpoint import read_model_meta
from ..model.recipe import FeatureSpec

# chemically specific models first: a CG model of another resolution must not fall to the transferable one
SHIPPED_MODELS = ("sps", "sps_monomer", "transfer")


def shipped_model_path(name: str) -> Path:
    return Path(str(resources.files("gmx_dbm") / "data" / "models" / f"{name}.safetensors"))


def model_fits(meta: dict, mapping) -> str | None:
    """None if the model can backmap this system (``mapping``: its ``SystemMapping``), else the reason.
    A chemically specific model needs every bead's chemistry (``gmx_dbm.mapping.chemistry``) to have been
    seen in training; a card from before chemistry was recorded needs the very molecules it saw."""
    system, mflat = mapping.system, mapping.flat()
    spec = FeatureSpec.from_dict(meta["spec"])
    types = sorted({t for name, c in system.molecules if c for t in system.moleculetypes[name].atom_attr("type")})
    missing = [t for t in types if t not in spec.atom_types]
    if missing:
        return f"atom types {', '.join(missing)} unknown to it (knows {', '.join(spec.atom_types)})"
    beads = sorted({str(b) for b in mflat.bead_types})
    missing = [b for b in beads if spec.bead_type_alias.get(b, b) not in spec.bead_types]
    if missing:
        return f"bead types {', '.join(missing)} unknown to it (knows {', '.join(spec.bead_types)})"
    card = ModelCard.from_meta(meta)
    if card.specific and card.chemistry:
        seen = set(card.chemistry)
        unseen = [(sig, where) for sig, where in bead_signatures(mapping).items() if sig not in seen]
        if unseen:
            sig, where = unseen[0]
            mol, index, name = where[0]
            more = f" (and {len(unseen) - 1} other bead kind(s))" if len(unseen) > 1 else ""
            return (f"it is chemically specific and never saw bead {index + 1} ({name}) of moleculetype {mol}: "
                    f"{describe_signature(sig)}{more}; it knows {len(seen)} bead kind(s): "
                    + "; ".join(describe_signature(s) for s in sorted(seen)))
    elif card.specific and card.molecules and not set(molecule_signatures(system)) <= set(card.molecules):
        return "it is chemically specific and was trained on other molecules"
    return None


def resolve_model(model, mapping) -> Path:
    """A path, a shipped model name, or None (the first shipped model that fits the ``SystemMapping``)."""
    if model is not None and (Path(model).suffix or Path(model).exists()):
        return Path(model)
    names = [model] if model else list(SHIPPED_MODELS)
    if model and model not in SHIPPED_MODELS:
        raise ModelFileError(f"unknown model {model!r}: give a .safetensors path or one of "
                             f"{', '.join(SHIPPED_MODELS)}")
    reasons = []
    for name in names:
        path = shipped_model_path(name)
        if not path.is_file():
            reasons.append(f"{name}: not installed")
            continue
        why = model_fits(read_model_meta(path), mapping)
        if why is None:
            return path
        reasons.append(f"{name}: {why}")
    raise ModelFileError("no shipped model fits this topology/mapping (" + "; ".join(reasons) +
                         "); train one with `gmx_dbm train` and pass --model PATH")
