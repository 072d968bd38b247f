"""Command-line options of the GROMACS relaxation, shared by `gmx_dbm relax` and `gmx_dbm backmap --relax`
(so that neither command module imports the other)."""
from __future__ import annotations


def add_relax_options(p, standalone: bool = False):
    """Options of the relaxation (``standalone``: the relax command, where -f/--mdp is the GROMACS user
    mdp; backmap's -f/--mdp is the run parameters of the backmap itself, so there it is --relax-mdp)."""
    g = p.add_argument_group("relaxation in GROMACS" + ("" if standalone else " (with --relax)"))
    g.add_argument("--steps-em", type=int, default=5000,
                   help="maximum steepest-descent steps (stops earlier at Fmax < --emtol; 0: no EM)")
    g.add_argument("--emtol", type=float, default=500.0, help="EM converged at Fmax below this (kJ/mol/nm)")
    g.add_argument("--md-ps", type=float, default=10.0, help="restrained NVT MD length in ps (0: no MD)")
    g.add_argument("--dt", type=float, default=0.001, help="MD time step in ps")
    if standalone:  # backmap has its own --temperature (the CG system's), used for this MD too
        g.add_argument("--temperature", type=float, default=300.0, help="MD temperature (K), v-rescale thermostat")
    g.add_argument("--restrain", default="heavy", choices=["heavy", "all", "none"],
                   help="atoms restrained to the input positions (heavy: all but hydrogens)")
    g.add_argument("--fc", type=float, default=1000.0, help="restraint force constant (kJ/mol/nm2)")
    if standalone:
        g.add_argument("--md-constraints", default="h-bonds", choices=["none", "h-bonds", "all-bonds"],
                       help="GROMACS constraints during the MD (LINCS; EM runs without)")
        g.add_argument("-f", "--mdp", dest="relax_mdp", default=None, metavar="MDP",
                       help="user .mdp: its entries override the generated run parameters")
    else:   # None: backmap's -f MDP constraints entry, else h-bonds (gmx_dbm.workflow)
        g.add_argument("--md-constraints", default=None, choices=["none", "h-bonds", "all-bonds"],
                       help="GROMACS constraints during the MD (LINCS; EM runs without); default: the "
                            "constraints of -f MDP, else h-bonds")
        g.add_argument("--relax-mdp", dest="relax_mdp", default=None, metavar="MDP",
                       help="user .mdp for the GROMACS runs: its entries override the generated run "
                            "parameters (-f MDP is backmap's own)")
    g.add_argument("--engine", default="gmxapi", choices=["gmxapi", "gmx"],
                   help="gmxapi (falls back to the gmx command line, with a notice, when not importable) or gmx")
    g.add_argument("--workdir", default=None, metavar="DIR",
                   help="work directory (kept; a fresh folder inside DIR if DIR is not empty); default: a "
                        "fresh gmx_dbm_relax_* folder next to the output")
    g.add_argument("--min-distance", type=float, default=0.05,
                   help="push apart atom pairs closer than this (nm) before EM; single-precision GROMACS "
                        "overflows on near-overlaps (0: off)")
    g.add_argument("--maxwarn", type=int, default=0, help="grompp -maxwarn")
    g.add_argument("--md-seed", type=int, default=1, help="gen-seed (velocities) and ld-seed (thermostat noise) of the MD")
    g.add_argument("--md-threads", type=int, default=0, help="mdrun -nt (0: GROMACS decides)")


def options_from_args(args):
    """``RelaxOptions`` from parsed arguments (backmap's --temperature is the CG system's; None: 300 K;
    backmap's --md-constraints may be None: decided by ``workflow.backmap_then_relax``)."""
    from ..relax import RelaxOptions
    return RelaxOptions(steps_em=args.steps_em, emtol=args.emtol, md_ps=args.md_ps, dt=args.dt,
                        temperature=300.0 if args.temperature is None else args.temperature, restrain=args.restrain, fc=args.fc,
                        constraints=args.md_constraints, mdp=args.relax_mdp, engine=args.engine,
                        threads=args.md_threads, seed=args.md_seed, maxwarn=args.maxwarn,
                        min_distance=args.min_distance)
