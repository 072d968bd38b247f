"""`gmx_dbm evaluate`: score backmapped structures against an all-atom reference."""
from __future__ import annotations

HELP = ("score backmapped structures against an all-atom reference: JSD of bond/angle/dihedral "
        "distributions, RDF deviation, clashes, energies; table, JSON and plots")


def add_arguments(parser) -> None:
    parser.add_argument("-r", "--reference", required=True, metavar="REF",
                        help="all-atom reference structure or trajectory (.xtc, .gro, .pdb)")
    parser.add_argument("-f", "--candidate", dest="candidates", action="append", required=True, metavar="CAND",
                        help="structure or trajectory to score (repeatable); frames need not correspond to "
                             "the reference's: all statistics are pooled")
    parser.add_argument("-p", "--top", required=True, help="all-atom GROMACS topology (.top), atoms in the "
                                                            "order of the files")
    parser.add_argument("-s", "--structure", metavar="AA.gro",
                        help="all-atom structure file (names checked against the topology; the grompp "
                             "input for --rerun, default: the reference's first frame)")
    parser.add_argument("-o", "--report-dir", metavar="DIR",
                        help="folder for PNG plots and report.json (created if missing; no plots without it)")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--rerun", action="store_true",
                        help="also compute energies with gmx grompp + mdrun -rerun (needs GROMACS)")
    parser.add_argument("--mdp", metavar="FILE",
                        help="non-bonded settings (default: 1.0 nm cut-offs, potential-shift, reaction field "
                             "eps_rf 2.5, no dispersion correction)")
    parser.add_argument("--no-energies", action="store_true", help="skip the force-field energies")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                        help="preprocessor define for the topology, as grompp -D (repeatable)")
    parser.add_argument("-I", dest="include_dirs", action="append", default=[], metavar="DIR",
                        help="extra #include folder (repeatable)")
    parser.add_argument("--device", default="cpu", metavar="DEV",
                        help="cpu, cuda or cuda:N: where the force-field energies are computed")


def run(args) -> int:
    from ..evaluate import evaluate, format_table

    result = evaluate(args.reference, args.candidates, args.top, structure=args.structure,
                      report_dir=args.report_dir, json_path=args.json, rerun=args.rerun, mdp=args.mdp,
                      defines=args.defines, include_dirs=args.include_dirs, energies=not args.no_energies,
                      device=args.device)
    print(format_table(result))
    return 0
