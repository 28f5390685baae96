"""The house's import rule: every package of gctxseg sits on a layer, and an import only goes to a lower one.

``LAYERS`` is the rule itself (docs/architecture.md explains each package); ``python -m pytest
tests/test_structure.py -q`` checks the code against it, reading every import (also those inside functions).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import gctxseg

PACKAGE = Path(gctxseg.__file__).parent

# unit (a package of src/gctxseg, or a loose module) -> its layer; a unit may import only units of LOWER layers, so
# units on one layer never import each other. A new package or loose module must be given a layer here.
LAYERS = {
    "__main__": 10,  # python -m gctxseg
    "cli": 9,  # parsing the command line
    "crossval": 8,  # gctxseg cv: folds, the configuration choice, the race, the lr probe
    "workflows": 7,  # train-then-report, predict-then-measure, the demo
    "evaluation": 6,  # scoring a labelled folder: a model's predictions or a folder of masks
    "reporting": 6,  # report.html, the gallery, runs compared
    "training": 5,  # the planner, the training loop, pre-training
    "inference": 5,  # predictor, ensembles, post-processing, export
    "clinical": 5,  # measurements, ETDRS, en-face, agreement, OCT volume read-out, DICOM out
    "visualize": 4,  # colours, overlays, figures (a run's curves from its log.json records)
    "runs": 3,  # checkpoints, run files, log.json records, cv folders, finding weights
    "data": 2,  # datasets, readers, fingerprint, splits, conversion
    "models": 1,  # architectures and their registry
    "losses": 1,
    "metrics": 1,  # all scoring, on arrays: overlap, surface distances, a set's scores, amounts' agreement
    "core": 1,  # atomic files, output folders, limits, device, seeds, precision
    "__init__": 1,  # gctxseg/__init__.py: the version only; it imports nothing, and reading the version is no arrow
}
MAX_DEPTH = 10  # units on the longest chain of imports, __main__ included (the 0.1.0 layout had 16)


def _unit_of(parts: tuple[str, ...]) -> str:
    """The unit of a module path under gctxseg (("data", "io") -> data, ("cli",) -> cli, () -> __init__)."""
    return parts[0] if parts else "__init__"


def _targets(node: ast.ImportFrom | ast.Import, package: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The gctxseg module paths an import statement in ``package`` names (empty: not gctxseg's)."""
    if isinstance(node, ast.Import):
        names = [a.name.split(".") for a in node.names]
        return [tuple(n[1:]) for n in names if n[0] == "gctxseg"]
    if node.level:
        base = package[: len(package) - (node.level - 1)]
    elif node.module and node.module.split(".")[0] == "gctxseg":
        base = ()
    else:
        return []
    module = [m for m in (node.module or "").split(".") if m]
    if not node.level:
        module = module[1:]  # gctxseg.x -> x
    if module:
        return [(*base, *module)]
    return [(*base, alias.name) for alias in node.names]  # from . import a, b: modules or names of the package


def import_sites(root: Path = PACKAGE) -> dict[tuple[str, str], str]:
    """(unit, unit it imports) -> the first import statement that makes the arrow, as ``path:line`` under ``root``
    (every import counts, also those inside functions)."""
    units = {p.stem if p.is_file() else p.name for p in root.iterdir() if p.suffix == ".py" or
             (p / "__init__.py").is_file()}
    sites: dict[tuple[str, str], str] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        package, here = parts[:-1], _unit_of(parts) if parts != ("__init__",) else "__init__"
        sites.setdefault((here, here), "")  # every unit is a node of the graph, importing or not
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, package):
                    unit = target[0] if target and target[0] in units else "__init__"
                    if unit not in (here, "__init__"):
                        sites.setdefault((here, unit), f"{path.relative_to(root.parent)}:{node.lineno}")
    return sites


def graph_of(sites: dict[tuple[str, str], str]) -> dict[str, set[str]]:
    """unit -> the other units it imports."""
    graph: dict[str, set[str]] = {}
    for a, b in sites:
        graph.setdefault(a, set())
        if a != b:
            graph[a].add(b)
    return graph


@cache
def import_graph() -> dict[str, set[str]]:
    """gctxseg's units -> the other units each imports anywhere in its files."""
    return graph_of(import_sites())


def layer_violations(sites: dict[tuple[str, str], str], layers: dict[str, int]) -> list[str]:
    """Every import that does not go down a layer (up, or sideways within one layer), named where it is."""
    out = []
    for (a, b), where in sorted(sites.items()):
        if a == b or a not in layers or b not in layers or layers[a] > layers[b]:
            continue
        way = "sideways (one layer)" if layers[a] == layers[b] else "up"
        out.append(f"{where}: {a} (layer {layers[a]}) imports {b} (layer {layers[b]}), {way}")
    return out


def find_circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports as its units (first unit repeated at the end), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(unit: str, path: list[str]) -> list[str]:
        state[unit] = 1
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], unit, nxt] if nxt in path else [unit, nxt]
            if nxt not in state and (found := visit(nxt, [*path, unit])):
                return found
        state[unit] = 2
        return []

    for unit in sorted(graph):
        if unit not in state and (found := visit(unit, [])):
            return found
    return []


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The units on the longest chain of imports (the graph must have no circle)."""

    @cache
    def from_(unit: str) -> tuple[str, ...]:
        return (unit, *max((from_(nxt) for nxt in sorted(graph.get(unit, ()))), key=len, default=()))

    return list(max((from_(u) for u in sorted(graph)), key=len, default=()))


def test_every_unit_has_a_layer():
    missing = sorted(set(import_graph()) - set(LAYERS))
    assert not missing, f"give these a layer in LAYERS (docs/architecture.md says which): {missing}"


def test_imports_go_only_to_lower_layers():
    wrong = layer_violations(import_sites(), LAYERS)
    assert not wrong, "imports that do not go down a layer:\n" + "\n".join(wrong)


def test_no_circle_and_at_most_ten_levels():
    graph = import_graph()
    circle = find_circle(graph)
    assert not circle, "import circle: " + " -> ".join(circle)
    chain = longest_chain(graph)
    assert len(chain) <= MAX_DEPTH, f"{len(chain)} levels of imports (at most {MAX_DEPTH}): " + " -> ".join(chain)


def test_the_layer_table_itself_has_at_most_ten_levels():
    """Imports only go down a layer, so the table's height bounds every chain of imports."""
    assert max(LAYERS.values()) - min(LAYERS.values()) + 1 <= MAX_DEPTH


def _write_package(root: Path, files: dict[str, str]) -> Path:
    """A package ``root/gctxseg`` of ``files`` (path -> source), each package folder with its __init__.py."""
    package = root / "gctxseg"
    for name, source in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(package).parents:
            (package / folder / "__init__.py").touch()
        path.write_text(source)
    return package


# the 0.1.0 chain of loose modules, 15 floors from cli down (each module imported the next)
OLD_CHAIN = ["cli", "configurations", "lr_probe", "crossval", "workflow", "evaluate", "predict", "gallery",
             "clinical", "agreement", "measurements", "report", "visualize", "checkpoint", "utils"]


def test_the_rule_catches_the_old_fifteen_floor_chain(tmp_path):
    """The checks above, fed the 0.1.0 layout read from files: the chain is too deep and is named whole."""
    files = {f"{a}.py": f"from gctxseg.{b} import something\n" for a, b in zip(OLD_CHAIN, OLD_CHAIN[1:])}
    files["utils.py"] = "import os\n"
    graph = graph_of(import_sites(_write_package(tmp_path, files)))
    assert not find_circle(graph)
    assert longest_chain(graph) == OLD_CHAIN and len(OLD_CHAIN) > MAX_DEPTH
    assert set(graph) - set(LAYERS), "its loose modules have no layer, which test_every_unit_has_a_layer refuses"


def test_the_rule_names_an_upward_a_sideways_import_and_a_circle(tmp_path):
    """predict importing the gallery (the arrow that made the chain), training importing inference (one layer), and
    a circle: each reported with the file and line of the import."""
    package = _write_package(tmp_path, {
        "inference/predictor.py": "import numpy\nfrom gctxseg.reporting.gallery import write_gallery\n",
        "reporting/gallery.py": "from ..visualize import colors\n",
        "visualize/colors.py": "",
        "training/loop.py": "def f():\n    from gctxseg.inference import predictor\n",
        "data/io.py": "from gctxseg.core import files\n",
        "core/files.py": "from gctxseg.data.io import read_image\n",
    })
    sites = import_sites(package)
    assert layer_violations(sites, LAYERS) == [
        f"gctxseg/core/files.py:1: core (layer {LAYERS['core']}) imports data (layer {LAYERS['data']}), up",
        f"gctxseg/inference/predictor.py:2: inference (layer {LAYERS['inference']}) imports reporting "
        f"(layer {LAYERS['reporting']}), up",
        f"gctxseg/training/loop.py:2: training (layer {LAYERS['training']}) imports inference "
        f"(layer {LAYERS['inference']}), sideways (one layer)",
    ]
    assert find_circle(graph_of(sites)) == ["core", "data", "core"]
    assert longest_chain({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == ["a", "b", "c"]


def test_no_module_circle_inside_a_package():
    """Inside a package, too, the files import each other one way."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        package = parts[:-1]
        name = ".".join(parts)
        edges.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, package):
                    for size in range(len(target), 0, -1):  # the longest prefix that is a file
                        if (PACKAGE.joinpath(*target[:size]).with_suffix(".py")).is_file():
                            edges[name].add(".".join(target[:size]))
                            break
    for start in edges:
        todo, seen = list(edges[start]), set()
        while todo:
            nxt = todo.pop()
            assert nxt != start, f"import circle through {start}"
            if nxt not in seen:
                seen.add(nxt)
                todo.extend(edges.get(nxt, ()))


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_training_never_imports_what_reports_on_it():
    """The engine and the predictor stay apart: neither training nor inference reaches the other or anything above
    them (their layer already says so; this names the promise)."""
    graph = import_graph()
    for unit in ("training", "inference"):
        above = {"training", "inference", "evaluation", "reporting", "workflows", "crossval", "cli"}
        assert not _reachable(graph, unit) & above, unit


def test_pyproject_ruff_and_ci_declare_one_python():
    """requires-python is the Python CI checks for and ruff's target: raising one without the others fails here."""
    import re
    import tomllib

    root = PACKAGE.parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    declared = tuple(int(n) for n in re.fullmatch(r">=(\d+)\.(\d+)", project["project"]["requires-python"]).groups())
    checked = re.search(r"sys\.version_info >= \((\d+), (\d+)\)", (root / ".ci" / "run").read_text())
    assert checked and tuple(map(int, checked.groups())) == declared
    assert project["tool"]["ruff"]["target-version"] == "py{}{}".format(*declared)
