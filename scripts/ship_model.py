"""Copy a trained model into the package (gmx_dbm/data/models/NAME.safetensors) and write its model card.

Usage: python scripts/ship_model.py NAME RUN_MODEL.safetensors [--quality QUALITY.md] [--select-temperature K]
       [--sampler JSON] [--temperature K] [--run RUN_FOLDER]
RUN_MODEL may be the shipped file itself (to update its card).
The card (NAME.md) states the data, config, training steps, the run's provenance (config hash, wall time and
machine of each stretch of training) and the measured quality/speed given in QUALITY.md (a Markdown
fragment, e.g. the table printed by benchmarks/quality_t453.py). With --run, the run's training log and its
learning curves are copied to docs/training/NAME_train_log.jsonl and NAME_learning_curves.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("name")
    ap.add_argument("model")
    ap.add_argument("--quality", default=None)
    ap.add_argument("--select-temperature", type=float, default=None,
                    help="default Boltzmann selection temperature stored in the card")
    ap.add_argument("--temperature", type=float, default=None,
                    help="temperature of the training data (K): the default thermalisation temperature")
    ap.add_argument("--stereo-from", nargs=2, default=None, metavar=("AA", "TOP"),
                    help="learn the handedness table of tetrahedral centres from these all-atom frames (the "
                         "training data) for a model trained before the trainer recorded it")
    ap.add_argument("--card-from", default=None, metavar="CONFIG",
                    help="compute the bead chemistry and the tacticity pattern of the card from this training "
                         "config's data (topologies, mappings, all-atom frames), as the trainer records them, for "
                         "a model trained before the trainer recorded them")
    ap.add_argument("--sampler-without-md", default=None,
                    help='sampler settings measured best with --md-steps 0, JSON, e.g. \'{"proposals": 16}\'')
    ap.add_argument("--run", default=None, metavar="RUN_FOLDER",
                    help="the training run's output folder: its log and learning curves go to docs/training/")
    ap.add_argument("--sampler", default=None,
                    help='default sampler settings stored in the card, JSON, e.g. \'{"gibbs": 6, "proposals": 16}\'')
    args = ap.parse_args()
    from gmx_dbm.model.checkpoint import load_model, save_model
    gen, meta = load_model(args.model)
    if args.select_temperature is not None:
        meta.setdefault("card", {})["select_temperature"] = args.select_temperature
    if args.sampler:
        meta.setdefault("card", {})["sampler"] = json.loads(args.sampler)
    if args.sampler_without_md:
        meta.setdefault("card", {})["sampler_without_md"] = json.loads(args.sampler_without_md)
    if args.temperature is not None:
        meta.setdefault("card", {})["temperature"] = args.temperature
    if args.stereo_from:
        from gmx_dbm import stereo
        from gmx_dbm.io import read_frames
        from gmx_dbm.topology import read_topology
        flat = read_topology(args.stereo_from[1]).flat()
        meta.setdefault("card", {})["stereo"] = stereo.learn(
            flat, ((f.positions, f.box) for f in read_frames(args.stereo_from[0])))
    if args.card_from:
        meta.setdefault("card", {}).update(card_from_config(args.card_from))
    meta = {k: v for k, v in meta.items() if k not in ("format", "generator")}
    # paths in the stored config are the trainer's machine's; keep file names only
    cfg = meta.get("config", {})
    for ds in cfg.get("data", []) + cfg.get("validation", []):
        for key in ("aa", "cg", "mapping"):
            ds[key] = [Path(p).name for p in ds.get(key, [])]
        ds["topology"] = Path(ds["topology"]).name
    cfg["output"] = Path(cfg.get("output", "")).name
    meta["hashes"] = {Path(k).name: v for k, v in meta.get("hashes", {}).items()}
    meta.get("card", {})["training_files"] = [Path(p).parent.name + "/" + Path(p).name
                                              for p in meta.get("card", {}).get("training_files", [])]
    dest = ROOT / "gmx_dbm" / "data" / "models" / f"{args.name}.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()  # the repository keeps history; no #backup# inside the package
    save_model(dest, gen, meta)
    card = meta.get("card", {})
    lines = [f"# Model card: `{args.name}`", "",
             f"- trained by gmx_dbm's own `gmx_dbm train` with `examples/train/{args.name}.toml`, "
             f"{meta.get('steps')} steps, " + (f"on {meta['history'][-1]['device']}" if meta.get("history")
                                                else "on the CPU (2 cores)") + " (see Provenance)",
             f"- network: {cfg.get('model', {}).get('size')} generator, "
             f"{sum(p.numel() for p in gen.parameters())} parameters; grid {meta['grid']}",
             f"- prior: {cfg.get('prior', {}).get('mode')} (bonded weight {cfg.get('prior', {}).get('bonded_weight')}, "
             f"LJ weight {cfg.get('prior', {}).get('lj_weight')})",
             f"- feature channels: atom types {meta['spec']['atom_types']}, bead types {meta['spec']['bead_types']}, "
             f"aliases {meta['spec']['bead_type_alias']}",
             f"- training data: {', '.join(card.get('training_files', []))} ({card.get('training_frames')} frames)",
             f"- constraints applied after generation by default: {card.get('constraints')}",
             f"- chemically specific: {card.get('specific')}",
             f"- default selection temperature for --orientations > 1: {card.get('select_temperature', 0.0)} K",
             f"- default sampler settings (used when the command line leaves them open): {card.get('sampler', {})}",
             f"- with the thermalisation off (`--md-steps 0`) these replace them: "
             f"{card.get('sampler_without_md') or 'none (the same settings)'}",
             f"- handedness of tetrahedral centres enforced (learnt from the training data): "
             f"{ {t: len(d) for t, d in card.get('stereo', {}).items()} or 'none'} centres per molecule type",
             f"- bead chemistry seen in training (a chemically specific model backmaps every molecule made of "
             f"these beads, at any chain length): {_chemistry_text(card.get('chemistry'))}",
             f"- tacticity learnt from the training data (applied to chains of any length): "
             f"{_tacticity_text(card.get('tacticity'))}",
             f"- temperature of the training data, the default thermalisation temperature (--temperature): "
             f"{card.get('temperature', 'not recorded (300 K is used)')} K",
             "", "The full resolved config is stored in the file's safetensors metadata (`gmx_dbm` entry).", ""]
    lines += provenance_lines(args.name, meta)
    if args.run:
        lines += copy_run_record(args.name, Path(args.run))
    if args.quality:
        lines += ["## Measured quality and speed", "", Path(args.quality).read_text().strip(), ""]
    (dest.with_suffix(".md")).write_text("\n".join(lines))
    print(f"shipped {dest} ({dest.stat().st_size / 1e6:.2f} MB) and {dest.with_suffix('.md')}")
    print(json.dumps(card, indent=1)[:400])


def provenance_lines(name: str, meta: dict) -> list:
    """The card's account of how the weights were made: config hash and each stretch of training."""
    history = meta.get("history") or []
    out = ["## Provenance", ""]
    if not meta.get("config_sha256"):
        return out + ["Trained before runs recorded their config hash and history: this model is not shown to "
                      f"be reproducible from `examples/train/{name}.toml`.", ""]
    out += [f"- config: `examples/train/{name}.toml`, sha256 `{meta['config_sha256']}`"]
    first = history[0]["from_step"] if history else meta.get("steps")
    if first:
        out += [f"- steps 0-{first}: recorded by the run's log only (the trainer did not yet record history)"]
    for h in history:
        out += [f"- steps {h['from_step']}-{h['to_step']}: {h['wall_s'] / 3600:.2f} h on {h['cpu']} "
                f"({h['device']}, {h['processes']} process(es) x {h['threads']} thread(s), torch {h['torch']}), "
                f"config sha256 `{str(h['config_sha256'])[:12]}`"]
    return out + [""]


def copy_run_record(name: str, run: Path) -> list:
    """Copy the run's training log and learning curves into docs/training/; -> card lines."""
    import shutil
    from gmx_dbm.train.curves import plot_learning_curves
    dest = ROOT / "docs" / "training"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "train_log.jsonl", dest / f"{name}_train_log.jsonl")
    png = plot_learning_curves(dest / f"{name}_train_log.jsonl", dest / f"{name}_learning_curves.png")
    return [f"Learning curves: `docs/training/{png.name}` (from `docs/training/{name}_train_log.jsonl`, the "
            "run's own log; validation = one 453 K frame, generator only, 1 Gibbs sweep, no thermalisation).",
            ""] if png else []


def card_from_config(path) -> dict:
    """The card fields 'chemistry' and 'tacticity' from a training config's data sets."""
    from gmx_dbm import stereo
    from gmx_dbm.io import read_frames
    from gmx_dbm.mapping.chemistry import bead_signatures
    from gmx_dbm.train.config import resolve_config
    from gmx_dbm.train.data import load_structures
    from gmx_dbm.mapping import Mapper
    cfg = resolve_config(path)
    chemistry, parts = set(), []
    for ds in cfg.data:
        system, mapping = load_structures(ds)
        chemistry.update(bead_signatures(mapping))
        flat, mflat = system.flat(), mapping.flat()
        mapper = Mapper(system, mapping)
        for aa in ds.aa:   # the CG beads of each frame: the mapping of its all-atom frame
            parts.append(stereo.learn_system_tacticity(
                flat, mflat.atom_bead, mflat.bead_types, mflat.cg_bonds,
                ((f.positions, f.box, mapper.map(f).positions) for f in read_frames(aa))))
    return {"chemistry": sorted(chemistry), "tacticity": stereo.merge_tacticity(parts)}


def _chemistry_text(chemistry) -> str:
    if not chemistry:
        return "not recorded"
    from gmx_dbm.mapping.chemistry import describe_signature
    return "; ".join(describe_signature(s) for s in chemistry)


def _tacticity_text(tacticity) -> str:
    from gmx_dbm.stereo import describe_tacticity
    return describe_tacticity(tacticity) if tacticity else "not recorded"


if __name__ == "__main__":
    main()
