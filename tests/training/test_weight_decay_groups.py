"""Weight decay spares norm weights, biases and position tables."""

from __future__ import annotations

import pytest
import torch

from gctxseg.training import optimizer_param_groups

pytestmark = pytest.mark.slow  # every test here reads tiny_run, which trains a model


def test_weight_decay_spares_norm_weights_biases_and_position_tables(tiny_run):
    from gctxseg.models import create_model

    model = create_model("gctx_unet", 1, 3, img_size=32, embed_dim=8, num_heads=[1, 1, 1, 1], window_sizes=[4, 2, 1, 1])
    groups = optimizer_param_groups(model, 0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, param in model.named_parameters():
        exempt = param.ndim <= 1 or name.endswith(".bias") or "relative_position_bias_table" in name
        assert (id(param) not in decayed) == exempt, name
    ckpt = torch.load(tiny_run / "last.pt", weights_only=True)
    planned = ckpt["config"]["weight_decay"]  # the run's (planned) weight decay
    assert planned > 0 and sorted(g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]) == [0.0, planned]
