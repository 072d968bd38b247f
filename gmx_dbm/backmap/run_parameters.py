"""What the user's GROMACS run parameters (``backmap -f AA.mdp``) set for a backmap run.

``RunParameters.read(path)`` parses the file once (``gmx_dbm.io.mdp.read_mdp``) and answers three
questions: which bonds are constrained (``constraints``), at what temperature the frames are thermalised
(``ref-t``), and the non-bonded treatment of the force field that the thermalisation and the prior's
candidate choice run in (rvdw, rcoulomb, coulombtype, epsilon-rf: ``ff.forcefield.settings_from_mdp``).
Constraints and temperature are read only when no explicit option overrides them, so an entry backmap
cannot use (h-angles, coupling groups at different temperatures) is an error only when it would be used.
Each value comes with where it came from ('md.mdp:12').
"""
from __future__ import annotations

from pathlib import Path

from ..ff.forcefield import NonbondedSettings, settings_from_mdp
from ..io.mdp import MdpFile, normalise_key, read_mdp

# GROMACS compares enum values ignoring case, '-' and '_'
GROMACS_CONSTRAINTS = {"none": "none", "hbonds": "h-bonds", "allbonds": "all-bonds",
                       "hangles": "h-angles", "allangles": "all-angles"}


class RunParameters:
    """The entries of one user .mdp that a backmap run uses (see the module doc)."""

    def __init__(self, mdp: MdpFile):
        self.mdp = mdp

    @classmethod
    def read(cls, source) -> RunParameters:
        """From a path, an ``MdpFile`` or a ``RunParameters`` (returned as is)."""
        if isinstance(source, RunParameters):
            return source
        return cls(source if isinstance(source, MdpFile) else read_mdp(source))

    @property
    def name(self) -> str:
        return Path(self.mdp.path).name

    def where(self, key: str) -> str:
        """'md.mdp:12' for the line that sets ``key``, the file name alone when it is not set."""
        line = self.mdp.lines.get(normalise_key(key))
        return self.name if line is None else f"{self.name}:{line}"

    def entry(self, key: str) -> str | None:
        """'md.mdp:12 constraints = h-bonds' (the raw entry, unchecked), or None when not set: for the log
        when an explicit option overrides it."""
        value = self.mdp.get(key)
        return None if value is None else f"{self.where(key)} {key} = {value}"

    def constraints(self) -> tuple:
        """(constraints: 'none', 'h-bonds' or 'all-bonds', where from). No entry: GROMACS' default, none.
        h-angles/all-angles: ConfigError at the line (bond lengths are all backmap can hold)."""
        value = self.mdp.get("constraints", "")
        if not value:
            return "none", f"{self.name} (no constraints entry: GROMACS' default)"
        name = GROMACS_CONSTRAINTS.get(value.lower().replace("-", "").replace("_", ""))
        if name is None:
            raise self.mdp.error("constraints", f"constraints = {value}: not a GROMACS constraints value "
                                                "(none, h-bonds, all-bonds, h-angles, all-angles)")
        if name in ("h-angles", "all-angles"):
            raise self.mdp.error("constraints", f"constraints = {value} is not supported: backmap holds bond "
                                                "lengths only (none, h-bonds or all-bonds); give --constraints "
                                                "to override the file")
        return name, self.where("constraints")

    def temperature(self) -> tuple:
        """(kelvin or None when the file sets no ref-t, where from). Coupling groups at different
        temperatures: ConfigError at the ref-t line (the whole frame is thermalised at one)."""
        text = self.mdp.get("ref-t", "")
        if not text.strip():
            return None, self.name
        values = []
        for word in text.split():
            try:
                values.append(float(word))
            except ValueError:
                raise self.mdp.error("ref-t", f"ref-t must be numbers (K), got '{word}'") from None
        if any(not v > 0 for v in values):
            raise self.mdp.error("ref-t", f"ref-t must be positive (K), got '{text}'")
        if len(set(values)) > 1:
            groups = self.mdp.get("tc-grps", "").split()
            pairs = ", ".join(f"{g} {v:g} K" for g, v in zip(groups, values)) if len(groups) == len(values) \
                else text
            raise self.mdp.error("ref-t", f"ref-t gives the coupling groups different temperatures ({pairs}); "
                                          "backmap thermalises the whole frame at one: give --temperature K")
        return values[0], self.where("ref-t")

    def nonbonded(self) -> NonbondedSettings:
        """The force field's non-bonded settings; PME/Ewald become a reaction field with epsilon-rf
        infinity (the thermalisation needs forces only)."""
        return settings_from_mdp(self.mdp, ewald_as_reaction_field=True)


def describe_nonbonded(s: NonbondedSettings) -> str:
    """One line for the log: 'LJ cut-off 1 nm (potential-shift), reaction field epsilon-rf 2.5 at 1 nm'."""
    if s.coulomb == "none":
        coulomb = "no Coulomb"
    else:
        eps = "infinity" if s.rf_epsilon == 0 else f"{s.rf_epsilon:g}"
        coulomb = f"reaction field epsilon-rf {eps} at {s.rcoulomb:g} nm"
    return f"LJ cut-off {s.cutoff:g} nm ({s.modifier}), {coulomb}"
