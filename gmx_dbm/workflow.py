"""Backmapping followed by relaxation in GROMACS: the one module that uses both ``gmx_dbm.backmap`` and
``gmx_dbm.relax``.

* ``backmap_then_relax(...)``: what ``gmx_dbm backmap --relax`` runs: backmap into the work directory,
  then relax every frame at the CG system's temperature and stream the results to the output; under
  ``mpirun`` both steps deal the frames out to the ranks. With the
  user's run parameters (``mdp``, backmap's -f) the GROMACS MD also takes their constraints.
* ``backmap_step(...)``: a gmxapi operation (``gmxapi.function_wrapper``) for workflow scripts: it
  backmaps one CG frame and publishes file paths (start structure, restraint reference, wrapper topology,
  EM and MD mdp files) that feed ``gmxapi.commandline_operation`` (grompp) and ``gmxapi.mdrun`` directly;
  ``output_file(...)`` joins an mdrun output folder and a file name. See examples/gmxapi_workflow.py.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import GromacsError
from .relax import RelaxOptions, fresh_workdir, import_gmxapi, make_mdp, prepare_topology, relax, separate_overlaps

log = logging.getLogger(__name__)


def backmap_then_relax(cg, topology, mapping, output, options: RelaxOptions, workdir=None, defines=None,
                       mdp=None, **backmap_args) -> dict:
    """Backmap ``cg`` into ``workdir/backmapped.gro`` (``mdp`` and ``backmap_args`` go to
    ``gmx_dbm.backmap.backmap``), then relax each frame into ``output``; the MD runs at the temperature the
    frames were thermalised at (the CG system's). ``options.constraints`` None: the MD constrains what
    ``mdp`` constrains, else h-bonds. Returns the relaxation summary with the backmap summary under
    'backmap'."""
    from .backmap import RunParameters, backmap
    from .io.safe import check_writable
    from .parallel import on_root, world
    params = None if mdp is None else RunParameters.read(mdp)
    if options.constraints is None:
        options.constraints, source = params.constraints() if params is not None else ("h-bonds", "the default")
        log.info("relaxation MD constraints %s (%s)", options.constraints, source)

    def prepare():
        options.check()
        check_writable(output)
        return str(fresh_workdir(workdir, output))

    # under MPI one work directory for every rank: backmap writes into it on rank 0, and relax reads it
    # on every rank (both deal the frames out to the ranks)
    wd = Path(on_root(world(), prepare))
    backmapped = wd / "backmapped.gro"
    summary = backmap(cg, topology, mapping, backmapped, defines=defines, mdp=params, **backmap_args)
    options.temperature = summary["temperature"]
    out = relax(backmapped, topology, output, options, workdir=wd / "relax", defines=defines)
    out["backmap"] = summary
    return out


# ----------------------------------------------------------------------------------------------------
# gmxapi operations

def _backmap_files(cg: str, topology: str, mapping: str, model: str, workdir: str, frame: int, seed: int,
                   gibbs: int, restrain: str, fc: float, temperature: float, md_ps: float,
                   steps_em: int, mdp: str, output):
    """The body of ``backmap_step``: backmap frame ``frame`` of ``cg`` and write the GROMACS inputs."""
    from .backmap import RunParameters, backmap
    from .io import AtomInfo, Frame, open_writer, read_frame
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    conf = wd / "backmapped.gro"
    maps = [m for m in mapping.split(os.pathsep) if m]
    params = RunParameters.read(mdp) if mdp else None
    backmap(cg, topology, maps, conf, model=model or None, gibbs=gibbs, seed=seed, progress=False,
            frames={frame}, mdp=params)
    options = RelaxOptions(steps_em=steps_em, md_ps=md_ps, temperature=temperature, restrain=restrain, fc=fc,
                           constraints=params.constraints()[0] if params is not None else "h-bonds")
    prepared = prepare_topology(topology, wd, restrain, fc)
    fr = read_frame(conf, n_atoms=prepared.flat.n_atoms)
    start, n_close = separate_overlaps(fr.positions, fr.box, options.min_distance)
    if n_close:
        log.warning("%d atom pairs closer than %g nm pushed apart in start.gro", n_close, options.min_distance)
    with open_writer(wd / "start.gro", AtomInfo.from_topology(prepared.flat)) as w:
        w.write(Frame(start, fr.box))
    paths = {}
    for stage in ("em", "md"):
        text, _ = make_mdp(stage, options, prepared)
        (wd / f"{stage}.mdp").write_text(text)
        paths[stage] = str(wd / f"{stage}.mdp")
    output.conf = str(wd / "start.gro")
    output.reference = str(conf)
    output.topology = str(prepared.top)
    output.em_mdp = paths["em"]
    output.md_mdp = paths["md"]
    output.md_nsteps = int(round(md_ps / options.dt))


_BACKMAP_OP = None


def backmap_step(cg, topology, mapping, model=None, workdir="backmap_step", frame: int = 0, seed: int = 0,
                 gibbs: int = 4, restrain: str = "heavy", fc: float = 1000.0, temperature: float = 300.0,
                 md_ps: float = 10.0, steps_em: int = 5000, mdp=None):
    """A gmxapi operation: backmap one CG frame; outputs ``conf`` (start structure: the backmapped .gro
    with overlapping atoms pushed apart), ``reference`` (the backmapped .gro: restraint reference),
    ``topology`` (wrapper .top with restraints under -DGMX_DBM_POSRES), ``em_mdp``, ``md_mdp`` (their
    include paths and defines are set) and ``md_nsteps``. Feed them to
    ``gmxapi.commandline_operation(gmx, ['grompp'], input_files={'-f': ..., '-c': ..., '-r': ..., '-p': ...})``.
    ``mapping``: a path, or several joined by os.pathsep. ``mdp``: the user's run parameters, as backmap's
    -f (constraints, ref-t, cut-offs of the thermalisation; the MD stage takes their constraints);
    ``temperature`` is the MD's."""
    global _BACKMAP_OP
    gmxapi = import_gmxapi()
    if gmxapi is None:
        raise GromacsError("gmxapi is not importable: backmap_step needs it (install gmxapi, see docs/RELAX.md)")
    if _BACKMAP_OP is None:
        # gmxapi reads the annotations as types; this module's are strings (from __future__ import annotations)
        _backmap_files.__annotations__ = {"cg": str, "topology": str, "mapping": str, "model": str, "workdir": str,
                                          "frame": int, "seed": int, "gibbs": int, "restrain": str, "fc": float,
                                          "temperature": float, "md_ps": float, "steps_em": int, "mdp": str}
        _BACKMAP_OP = gmxapi.function_wrapper(
            output={"conf": str, "reference": str, "topology": str, "em_mdp": str, "md_mdp": str,
                    "md_nsteps": int})(_backmap_files)
    if not isinstance(mapping, str):
        mapping = os.pathsep.join(str(m) for m in mapping)
    return _BACKMAP_OP(cg=str(cg), topology=str(Path(topology).resolve()), mapping=mapping,
                       model=str(model or ""), workdir=str(Path(workdir).resolve()), frame=int(frame),
                       seed=int(seed), gibbs=int(gibbs), restrain=restrain, fc=float(fc),
                       temperature=float(temperature), md_ps=float(md_ps), steps_em=int(steps_em),
                       mdp=str(Path(mdp).resolve()) if mdp else "")


def _join_path(directory: str = "", name: str = "", output=None):
    output.path = os.path.join(directory, name)


_JOIN_OP = None


def output_file(directory, name: str = "confout.gro"):
    """A gmxapi operation joining an mdrun output directory (a future) and a file name: its
    ``output.path`` feeds the next grompp's ``-c``."""
    global _JOIN_OP
    gmxapi = import_gmxapi()
    if gmxapi is None:
        raise GromacsError("gmxapi is not importable: output_file needs it (install gmxapi, see docs/RELAX.md)")
    if _JOIN_OP is None:
        _join_path.__annotations__ = {"directory": str, "name": str}
        _JOIN_OP = gmxapi.function_wrapper(output={"path": str})(_join_path)
    return _JOIN_OP(directory=directory, name=name)
