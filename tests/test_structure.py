"""The house has no circle: imports flow cli -> workflow -> training/predict/evaluate/export -> checkpoint/models."""

from __future__ import annotations

import ast
from pathlib import Path

import gctxseg

PACKAGE = Path(gctxseg.__file__).parent


def _module_imports() -> dict[str, set[str]]:
    """gctxseg module -> the gctxseg modules it imports anywhere (also inside functions); subpackages count as one."""

    def unit(path: Path) -> str:
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        return parts[0]  # data/io.py -> data, predict.py -> predict

    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        here = unit(path)
        depth = len(path.relative_to(PACKAGE).parts)  # 1 for predict.py, 2 for data/io.py
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                root = node.module.split(".")[0] if node.module else None
                if node.level == depth and root:  # from .x import / from ..x import: a sibling unit
                    target = root
                elif node.level == depth and not root:
                    target = None  # from . import a, b (inside a subpackage): the unit itself
                else:
                    target = here
                graph.setdefault(here, set())
                if target and target != here:
                    graph[here].add(target)
                elif target is None and depth == 1:
                    graph[here].update(alias.name for alias in node.names)
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_imports_flow_one_way():
    graph = _module_imports()
    circles = sorted(m for m in graph if m in _reachable(graph, m) and m != "__init__")
    assert not circles, f"import circle through {circles}"
    assert not _reachable(graph, "training") & {"evaluate", "predict", "export", "workflow", "cli"}
    assert not _reachable(graph, "checkpoint") & {"training", "predict", "evaluate", "export"}
    for user in ("predict", "evaluate", "export"):
        assert "training" not in _reachable(graph, user), user
        assert "checkpoint" in _reachable(graph, user), user


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
