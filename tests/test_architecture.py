"""The package's import graph: no cycles, and every import points down the layers

    commands, cli  →  pipelines (backmap, train, relax, evaluate, energy, workflow)
                   →  domain (topology, mapping, ff, model, voxel, stereo, metrics, quality)
                   →  io, geometry, gromacs  →  errors, units, elements

Imports inside functions count too (a lazy import is still a dependency). Read from the source with
``ast``; nothing is imported.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

PKG = Path(__file__).resolve().parents[1] / "gmx_dbm"

LAYERS = {
    "base": 0, "errors": 0, "units": 0, "elements": 0,
    "io": 1, "geometry": 1, "neighbors": 1, "gromacs": 1, "devices": 1, "parallel": 1,
    "topology": 2, "mapping": 2, "ff": 2, "model": 2, "voxel": 2, "stereo": 2, "metrics": 2, "quality": 2,
    "backmap": 3, "train": 3, "relax": 3, "evaluate": 3, "energy": 3, "workflow": 3,
    "commands": 4, "cli": 4, "__main__": 4,
}
# pipelines that must not use each other: workflow is the one place where backmap and relax meet
FORBIDDEN = {("relax", "backmap"), ("backmap", "relax"), ("train", "backmap"), ("train", "evaluate"),
             ("evaluate", "backmap"), ("ff", "io")}


def _modules() -> dict:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set:
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` depends on the submodule when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t.startswith("gmx_dbm") and t != name:
                found.add(t)
    return found


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    g = nx.DiGraph()
    for name, path in modules.items():
        g.add_node(name)
        for target in _imports(name, path, modules):
            g.add_edge(name, target)
    return g


def test_every_module_has_a_layer(graph):
    unknown = sorted({_top(n) for n in graph if n != "gmx_dbm"} - set(LAYERS))
    assert not unknown, f"modules without a layer: {unknown} (add them to LAYERS)"


def test_no_import_cycles(graph):
    # a package's __init__ re-exporting its own submodules is not a dependency between concerns
    g = nx.DiGraph([(a, b) for a, b in graph.edges
                    if not (b.startswith(a + ".") or (a.startswith(b + ".") and b != "gmx_dbm"))])
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down_the_layers(graph):
    bad = []
    for a, b in graph.edges:
        if a == "gmx_dbm" or b == "gmx_dbm":
            continue
        ta, tb = _top(a), _top(b)
        if ta == tb:
            continue
        if LAYERS[tb] > LAYERS[ta] or (ta, tb) in FORBIDDEN:
            bad.append(f"{a} -> {b}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_only_workflow_imports_both_backmap_and_relax(graph):
    both = [n for n in graph if {_top(t) for t in graph.successors(n)} >= {"backmap", "relax"}]
    assert all(_top(n) in ("workflow", "commands") for n in both), both


def test_io_and_topology_do_not_import_torch():
    code = "import sys, gmx_dbm.io, gmx_dbm.topology, gmx_dbm.io.mdp; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
