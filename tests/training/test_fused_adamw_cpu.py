"""The engine's AdamW is fused on CPU and makes the same update as the per-parameter loop (to rounding)."""

import torch

from gctxseg.models import create_model
from gctxseg.training.loop import adamw, optimizer_param_groups


def test_cpu_adamw_is_fused_and_matches_the_loop():
    torch.manual_seed(0)
    fused_model = create_model("unet", 1, 2, base_width=4)
    loop_model = create_model("unet", 1, 2, base_width=4)
    loop_model.load_state_dict(fused_model.state_dict())
    fused = adamw(fused_model, 1e-2, 1e-2, torch.device("cpu"))
    loop = torch.optim.AdamW(optimizer_param_groups(loop_model, 1e-2), lr=1e-2, foreach=False)
    assert fused.defaults["fused"]
    x = torch.randn(2, 1, 32, 32)
    for _ in range(3):
        for model, optimizer in ((fused_model, fused), (loop_model, loop)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), loop_model.parameters()):
        assert torch.allclose(a, b, atol=1e-4)  # 1% of one step (lr 1e-2): rounding, grown through Adam's 1/sqrt(v)
    torch.manual_seed(0)
    start = create_model("unet", 1, 2, base_width=4)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(fused_model.parameters(), start.parameters()))
