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
    "evaluation": 6,  # scoring a labelled folder with a model
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
    "__init__": 0,  # gctxseg/__init__.py: the version only; it imports nothing, and reading the version is no arrow
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


@cache
def import_graph() -> dict[str, set[str]]:
    """unit -> the other units it imports anywhere in its files (also inside functions)."""
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or
             (p / "__init__.py").is_file()}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        package, here = parts[:-1], _unit_of(parts) if parts != ("__init__",) else "__init__"
        graph.setdefault(here, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, package):
                    unit = target[0] if target and target[0] in units else "__init__"
                    if unit not in (here, "__init__"):
                        graph[here].add(unit)
    return graph


def chain_length(graph: dict[str, set[str]], unit: str, seen: tuple[str, ...] = ()) -> int:
    """Units on the longest chain of imports from ``unit`` (a circle is reported by its own test)."""
    if unit in seen:
        return 0
    return 1 + max((chain_length(graph, nxt, (*seen, unit)) for nxt in graph.get(unit, ())), default=0)


def test_every_unit_has_a_layer():
    missing = sorted(set(import_graph()) - set(LAYERS))
    assert not missing, f"give these a layer in LAYERS (docs/architecture.md says which): {missing}"


def test_imports_go_only_to_lower_layers():
    graph = import_graph()
    upward = sorted(f"{a} (layer {LAYERS.get(a)}) -> {b} (layer {LAYERS.get(b)})" for a, nexts in graph.items()
                    for b in nexts if LAYERS.get(a, -1) <= LAYERS.get(b, -1))
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(upward)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_circle_and_at_most_ten_levels():
    graph = import_graph()
    circles = sorted(u for u in graph if u in _reachable(graph, u))
    assert not circles, f"import circle through {circles}"
    depth = max(chain_length(graph, u) for u in graph)
    assert depth <= MAX_DEPTH, f"{depth} levels of imports (at most {MAX_DEPTH})"


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


def test_training_never_imports_what_reports_on_it():
    """The engine and the predictor stay apart: neither training nor inference reaches the other or anything above
    them (their layer already says so; this names the promise)."""
    graph = import_graph()
    for unit in ("training", "inference"):
        above = {"training", "inference", "evaluation", "reporting", "workflows", "crossval", "cli"}
        assert not _reachable(graph, unit) & above, unit


def test_training_loop_has_no_architecture_specific_loss():
    """UNet3+'s classification term belongs to the architecture (auxiliary_loss), not to the generic loop."""
    import inspect

    import torch

    from gctxseg.losses import DiceCELoss, training_loss
    from gctxseg.models import create_model
    from gctxseg.training import loop, segmentation

    assert not any("cls_logit" in inspect.getsource(m) for m in (loop, segmentation))
    options = dict(width=0.0625, cgm=True, cgm_dropout_rate=0.0, deep_supervision=False)
    model = create_model("unet3_plus", 1, 3, **options).train()
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[0, 4:9, 4:9] = 1  # image 0 holds foreground, image 1 none
    outputs = model(torch.randn(2, 1, 32, 32))
    plain = DiceCELoss()(outputs, masks)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.last_cls_logit, torch.tensor([[1.0], [0.0]]))
    assert torch.allclose(training_loss(DiceCELoss(), model, outputs, masks), plain + bce)


def test_the_declared_python_has_what_the_code_uses():
    """data/cache.py hashes with hashlib.file_digest (3.11): pyproject, ruff and CI must not claim 3.10."""
    import tomllib

    root = PACKAGE.parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert "file_digest" in (PACKAGE / "data" / "cache.py").read_text()
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311"
    assert "(3, 11)" in (root / ".ci" / "run").read_text() and "Python 3.11+" in (root / "README.md").read_text()
