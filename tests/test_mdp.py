"""gmx_dbm.io.mdp: the one .mdp parser (normalised keys, line numbers, errors with file and line)."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from gmx_dbm.errors import ConfigError
from gmx_dbm.io.mdp import MdpFile, normalise_key, read_mdp


def write(tmp_path, text, name="run.mdp"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_keys_are_normalised_and_remember_their_line(tmp_path):
    path = write(tmp_path, "; run parameters\n"
                           "Cutoff_Scheme = Verlet\n"
                           "\n"
                           "coulomb_type   = Reaction-Field ; the comment goes\n"
                           "vdw-type = cut-off\n"
                           "epsilon_rf=0\n"
                           "define =\n")
    mdp = read_mdp(path)
    assert isinstance(mdp, MdpFile) and mdp.path == path
    assert mdp.values == {"cutoff-scheme": "Verlet", "coulombtype": "Reaction-Field", "vdwtype": "cut-off",
                          "epsilon-rf": "0", "define": ""}
    assert mdp.lines == {"cutoff-scheme": 2, "coulombtype": 4, "vdwtype": 5, "epsilon-rf": 6, "define": 7}
    # lookups take any spelling of a key
    assert mdp.get("coulomb-type") == mdp.get("COULOMBTYPE") == "Reaction-Field"
    assert mdp.get("epsilon_rf") == "0"
    assert mdp.get("rvdw") is None and mdp.get("rvdw", "1.0") == "1.0"
    assert "cutoff_scheme" in mdp and "rlist" not in mdp


def test_normalise_key_spellings():
    assert normalise_key(" Coulomb_Type ") == "coulombtype"
    assert normalise_key("VDW_TYPE") == "vdwtype"
    assert normalise_key("nstxtcout") == "nstxout-compressed"
    assert normalise_key("tau_t") == "tau-t"


def test_error_points_at_the_line_of_the_key(tmp_path):
    path = write(tmp_path, "rvdw = 1.0\nrcoulomb = abc\n")
    mdp = read_mdp(path)
    err = mdp.error("rcoulomb", "rcoulomb must be a number, got 'abc'")
    assert isinstance(err, ConfigError)
    assert (err.path, err.line) == (str(path), 2)
    assert str(err) == f"{path}:2: rcoulomb must be a number, got 'abc'"
    # a key the file does not set: the file alone
    unset = mdp.error("coulombtype", "PME is not supported")
    assert (unset.path, unset.line) == (str(path), None)
    assert str(unset) == f"{path}: PME is not supported"


def test_line_without_equals_sign_is_an_error_at_that_line(tmp_path):
    path = write(tmp_path, "integrator = md\nnsteps 100\n")
    with pytest.raises(ConfigError) as exc:
        read_mdp(path)
    assert (exc.value.path, exc.value.line) == (str(path), 2)
    assert "not a 'key = value' line" in str(exc.value)


def test_key_set_twice_is_an_error_at_the_second_line(tmp_path):
    path = write(tmp_path, "nsteps = 10\ndt = 0.002\nNSTEPS = 20\n")
    with pytest.raises(ConfigError, match=r"run.mdp:3: nsteps is set twice \(first at line 1\)"):
        read_mdp(path)


def test_old_and_new_name_of_one_parameter_is_an_error_naming_both(tmp_path):
    path = write(tmp_path, "continuation = no\nnsteps = 10\nunconstrained_start = yes\n")
    with pytest.raises(ConfigError, match=r"run.mdp:3: unconstrained-start is set here and continuation at "
                                          r"line 1: unconstrained-start is the old name of continuation"):
        read_mdp(path)
    path = write(tmp_path, "nstxout-compressed = 10\nnstxtcout = 5\n")
    with pytest.raises(ConfigError, match=r"run.mdp:2: nstxtcout is set here and nstxout-compressed at line 1"):
        read_mdp(path)


def test_obsolete_entries_are_kept_and_named_in_one_warning(tmp_path, caplog):
    path = write(tmp_path, "title = PS\ncpp = /usr/bin/cpp\nrvdw = 1.0\nns_type = grid\n")
    with caplog.at_level(logging.WARNING, logger="gmx_dbm"):
        mdp = read_mdp(path)
    assert mdp.get("rvdw") == "1.0" and mdp.get("ns-type") == "grid"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [(f"{path}: ignoring obsolete entries, as GROMACS 2022 does: title (line 1), cpp (line 2), "
                         "ns-type (line 4)")]


def test_empty_key_is_an_error(tmp_path):
    path = write(tmp_path, "= 3\n")
    with pytest.raises(ConfigError, match=r"run.mdp:1: no parameter name"):
        read_mdp(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        read_mdp(tmp_path / "absent.mdp")
    assert exc.value.path == str(tmp_path / "absent.mdp") and "not found" in str(exc.value)


def test_mdp_reader_does_not_import_torch(tmp_path):
    path = write(tmp_path, "rvdw = 1.0\n")
    code = ("import sys; from gmx_dbm.io.mdp import read_mdp; assert read_mdp(sys.argv[1]).get('rvdw') == '1.0'; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
