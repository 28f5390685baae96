"""ImageNet GC ViT-xxtiny into GCtx-UNet: a file, timm's cache ('imagenet'), the mirrored decoder; no network."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

from gctxseg.cli import main
from gctxseg.models.gctx_unet import GCtxUNet
from gctxseg.models.pretrained import load_pretrained
from gctxseg.training.segmentation import _load_encoder_weights


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    """A randomly initialised timm gcvit_xxtiny (ImageNet layout: depths 2-2-6-2, 1000-class head), saved."""
    torch.manual_seed(1)
    state = timm.create_model("gcvit_xxtiny", pretrained=False).state_dict()
    path = tmp_path_factory.mktemp("weights") / "gcvit_xxtiny.pth"
    torch.save(state, path)
    return path, state


def _fresh(seed: int = 0) -> GCtxUNet:
    torch.manual_seed(seed)
    return GCtxUNet(1, 3)


def _check_loaded(model: GCtxUNet, state: dict, report, mirrored: bool) -> None:
    enc, dec, fresh = model.encoder.state_dict(), model.decoder.state_dict(), _fresh().decoder.state_dict()
    # encoder: everything but the head and the blocks GCtx-UNet does not have (stage 2 blocks 2-5, stage 3 block 1)
    unused = [k for k in state if k.startswith("head.") or re.match(r"stages\.(2\.blocks\.[2-5]|3\.blocks\.1)\.", k)]
    assert sorted(report.unused) == sorted(k for k in unused if not k.startswith("head."))
    assert len(report.encoder_loaded) == len(state) - len(unused) and report.encoder_missing == []
    assert torch.equal(enc["stem.conv1.weight"], state["stem.conv1.weight"].sum(1, keepdim=True))  # RGB -> 1 channel
    for key in ("stages.1.blocks.0.attn.qkv.weight", "stages.2.blocks.1.mlp.fc2.bias", "stages.3.norm.weight"):
        assert torch.equal(enc[key], state[key]), key
    # decoder stage 3 - i is the scale of encoder stage i
    qkv = "blocks.0.attn.qkv.weight"
    if mirrored:
        assert len(report.decoder_loaded) == sum(
            1 for k in report.encoder_loaded if re.match(r"stages\.\d+\.(blocks|global_block)\.", k)
        )
        for i in range(4):
            assert torch.equal(dec[f"stages.{3 - i}.{qkv}"], state[f"stages.{i}.{qkv}"]), i
    else:
        assert report.decoder_loaded == [] and torch.equal(dec[f"stages.0.{qkv}"], fresh[f"stages.0.{qkv}"])
    # decoder-only parts keep their initialisation either way
    assert torch.equal(dec["stages.1.skip_proj.weight"], fresh["stages.1.skip_proj.weight"])


@pytest.mark.parametrize("decoder_init", ["none", "mirror"])
def test_timm_checkpoint_file_into_encoder_and_decoder(timm_checkpoint, decoder_init):
    path, state = timm_checkpoint
    model = _fresh()
    report = load_pretrained(model, path, decoder_init)
    _check_loaded(model, state, report, mirrored=decoder_init == "mirror")


def test_imagenet_comes_from_timms_own_cache_without_network(timm_checkpoint, tmp_path, monkeypatch):
    path, state = timm_checkpoint
    url = get_pretrained_cfg("gcvit_xxtiny").url
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.link(path, cache / os.path.basename(url))  # a pre-filled cache, as timm would have left it
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _fresh()
    report = load_pretrained(model, "imagenet", "mirror")
    _check_loaded(model, state, report, mirrored=True)


def test_offline_without_a_cache_is_one_line_saying_how_to_pass_a_file(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path)}
    code = ("from gctxseg.models.gctx_unet import GCtxUNet\nfrom gctxseg.models.pretrained import load_pretrained\n"
            "try:\n    load_pretrained(GCtxUNet(1, 3), 'imagenet')\nexcept ValueError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert out.count("\n") == 1 and out.startswith("--encoder-weights imagenet: HF_HUB_OFFLINE is set"), out
    assert "--encoder-weights gcvit_xxtiny.pth" in out
    assert not any((tmp_path / "torch").rglob("*.pth"))  # nothing fetched


def test_model_is_bit_identical_without_weights(timm_checkpoint, capsys):
    a, b = _fresh(), _fresh()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    _load_encoder_weights(b, str(timm_checkpoint[0]), True, "mirror")  # the training hook, for contrast
    assert "encoder tensors loaded" in capsys.readouterr().out
    assert not torch.equal(a.encoder.stem.conv1.weight, b.encoder.stem.conv1.weight)


def test_decoder_init_without_encoder_weights_and_wrong_models_are_one_line(tmp_path, capsys):
    code = main(["train", "--decoder-init", "mirror", "--data-train", str(tmp_path), "--data-val", str(tmp_path)])
    assert code == 2 and "add --encoder-weights imagenet (or PATH)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only gctx_unet has a GC ViT encoder"):
        load_pretrained(torch.nn.Linear(1, 1), "imagenet")
    with pytest.raises(ValueError, match=r"missing.pth: file not found; pass a GC ViT-xxtiny checkpoint"):
        load_pretrained(_fresh(), tmp_path / "missing.pth")


class _CreatesFileWhenUnpickled:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_a_crafted_encoder_weights_file_is_refused_and_runs_nothing(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "gcvit.pth"
    torch.save({"stem.conv1.weight": _CreatesFileWhenUnpickled(marker)}, path)
    with pytest.raises(ValueError, match=r"gcvit.pth: not a plain weights file \(UnpicklingError\)") as err:
        load_pretrained(_fresh(), path)
    assert "\n" not in str(err.value) and not marker.exists()
