"""`gmx_dbm energy`: force-field energy terms of a structure or trajectory (GROMACS forms and units)."""
from __future__ import annotations

HELP = "print the force-field energy terms (kJ/mol) of a structure or trajectory"


def add_arguments(parser) -> None:
    parser.add_argument("-c", "--conf", required=True, help="structure or trajectory (.gro, .xtc, .pdb)")
    parser.add_argument("-p", "--top", required=True, help="GROMACS topology (.top)")
    parser.add_argument("-f", "--mdp", help="GROMACS .mdp with the non-bonded settings (default: 1.0 nm "
                                             "cut-offs, potential-shift, reaction field eps_rf 2.5)")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                        help="preprocessor define for the topology, as grompp -D (repeatable)")
    parser.add_argument("-I", dest="include_dirs", action="append", default=[], metavar="DIR",
                        help="extra #include folder (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the energies as JSON")
    parser.add_argument("--float32", action="store_true", help="compute in single precision")
    parser.add_argument("--device", default="cpu", metavar="DEV", help="cpu, cuda or cuda:N")


def run(args) -> int:
    import json

    import torch

    from ..energy import compute_energies
    from ..io import atomic_output, check_writable

    if args.json:
        check_writable(args.json)  # fail before the work, not after printing the energies
    res = compute_energies(args.conf, args.top, mdp=args.mdp, defines=args.defines,
                           include_dirs=args.include_dirs, dtype=torch.float32 if args.float32 else torch.float64,
                           device=args.device)
    terms, frames = res["terms"], res["frames"]
    width = max(len(t) for t in terms) + 2
    if len(frames) == 1:
        for t in terms:
            print(f"{t:<{width}}{frames[0][t]:16.4f}")
        print(f"{'total':<{width}}{sum(frames[0].values()):16.4f}")
    else:
        print("frame " + "".join(f"{t:>14s}" for t in terms))
        for k, f in enumerate(frames):
            print(f"{k:5d} " + "".join(f"{f[t]:14.4f}" for t in terms))
        print(" mean " + "".join(f"{res['mean'][t]:14.4f}" for t in terms))
    if args.json:
        data = dict(res["mean"]) if len(frames) == 1 else {**res["mean"], "frames": frames}
        data["units"] = "kJ/mol"
        with atomic_output(args.json) as tmp:
            with open(tmp, "w") as fh:
                json.dump(data, fh, indent=1)
    return 0
