"""ONNX export: logits match PyTorch, the batch axis is dynamic, and predict on the .onnx writes the .pt's masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from gctxseg.cli import main
from gctxseg.inference.predictor import Predictor
from gctxseg.training import load_checkpoint, train
from gctxseg.workflows.predict_folder import predict_folder

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from gctxseg.inference.export import METADATA_KEY, OnnxModel, export_onnx  # noqa: E402  (after the skips)

pytestmark = pytest.mark.slow  # every test here trains a model


@pytest.fixture(scope="module")
def run(phantom_dir, tmp_path_factory):
    return train(tiny_config(phantom_dir, tmp_path_factory.mktemp("export") / "runs", epochs=1))


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("unet", {"base_width": 4}),
        ("gctx_unet", {"img_size": 32, "embed_dim": 8, "num_heads": [1, 1, 1, 1], "window_sizes": [4, 2, 1, 1]}),
    ],
)
def test_onnx_logits_match_pytorch_at_any_batch(phantom_dir, tmp_path, model, options):
    config = tiny_config(phantom_dir, tmp_path / "runs", epochs=1, model=model, model_options=options)
    weights = train(config) / "last.pt"
    result = export_onnx(weights, tmp_path / "model.onnx")
    assert result.path.is_file() and result.max_abs_diff < 1e-4
    onnx_model, predictor = OnnxModel(result.path), Predictor(weights, "cpu", "off")
    x = torch.randn(5, 1, 32, 32)  # exported with a batch of 2: the batch axis is dynamic
    with torch.no_grad():
        expected = predictor.model(x)
    assert float((onnx_model(x) - expected).abs().max()) < 1e-4
    ckpt = load_checkpoint(weights)
    meta = onnx_model.metadata
    assert meta["value_map"] == ckpt["value_map"] and meta["base_size"] == [32, 32] and meta["channels"] == 1
    assert meta["normalization"] == ckpt["normalization"] and meta["model_name"] == model
    assert meta["fingerprint"]["percentile_99_5"] == ckpt["fingerprint"]["percentile_99_5"]  # predict's range note


def test_gctx_unet_exports_at_a_size_whose_global_queries_need_adaptive_pooling(phantom_dir, tmp_path):
    options = {"img_size": 48, "embed_dim": 8, "num_heads": [1, 1, 1, 1], "window_sizes": [4, 2, 1, 1]}
    config = tiny_config(phantom_dir, tmp_path / "runs", epochs=1, model="gctx_unet", model_options=options,
                         base_size=(48, 80))  # stage maps 12x20, 6x10 ...: pooled to the window, not by 2s
    weights = train(config) / "last.pt"
    result = export_onnx(weights, tmp_path / "model.onnx")  # refused at every size but 224 before
    assert result.max_abs_diff < 1e-4
    x = torch.randn(3, 1, 48, 80)
    with torch.no_grad():
        expected = Predictor(weights, "cpu", "off").model(x)
    assert float((OnnxModel(result.path)(x) - expected).abs().max()) < 1e-4


def test_predict_with_onnx_writes_the_masks_of_the_checkpoint(run, phantom_dir, tmp_path, capsys):
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(run / "best.pt"), "--out", str(onnx_path)]) == 0
    assert "max abs logit difference" in capsys.readouterr().out
    source = tmp_path / "img"
    source.mkdir()
    for path in sorted((phantom_dir / "val" / "images").iterdir())[:3]:
        Image.open(path).save(source / path.name)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8)).save(source / "wide.png")
    for weights, out in ((run / "best.pt", tmp_path / "pt"), (onnx_path, tmp_path / "onnx")):
        assert main(["predict", "--weights", str(weights), "--source", str(source), "--out", str(out),
                     "--device", "cpu", "--amp", "off"]) == 0  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "pt" / "masks").iterdir())
    assert len(names) == 4 and names == sorted(p.name for p in (tmp_path / "onnx" / "masks").iterdir())
    for name in names:
        pt, ox = (np.asarray(Image.open(tmp_path / d / "masks" / name)) for d in ("pt", "onnx"))
        assert np.array_equal(pt, ox), name
    summary = predict_folder(onnx_path, source, tmp_path / "sliding", infer_mode="sliding")
    assert len(summary.written) == 4 and not summary.failed


def test_onnx_without_gctxseg_metadata_is_refused(run, tmp_path):
    import onnx

    path = export_onnx(run / "last.pt", tmp_path / "model.onnx").path
    proto = onnx.load(str(path))
    assert json.loads(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY))["channels"] == 1
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match="no gctxseg metadata"):
        Predictor(path)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        Predictor(tmp_path / "junk.onnx")
