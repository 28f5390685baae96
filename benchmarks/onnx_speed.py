"""ONNX Runtime against PyTorch on the CPU: inference images/s of the same weights, batch 1 and 8.

Each model is exported with ``gctxseg.inference.export.export_module`` (what ``gctxseg export`` writes) and run with the
session options ``gctxseg predict --weights model.onnx`` uses. PyTorch is timed in fp32 (what ONNX Runtime
computes) and under ``--amp auto`` (what ``gctxseg predict`` uses: bf16 on a CPU with native bf16). Prints
figures, the max |logit| difference and the ratios; asserts nothing. Example::

    python benchmarks/onnx_speed.py --models unet gctx_unet --size 224 224
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import amp_context, timed

from gctxseg.inference.export import export_module, onnx_session
from gctxseg.models import create_model


def measure(name: str, size: tuple[int, int], repeats: int, folder: Path) -> list[tuple]:
    """(batch, torch fp32, torch auto, onnxruntime images/s, max |logit diff|) for batch 1 and 8."""
    auto_precision = amp_context("auto", torch.device("cpu"))
    torch.manual_seed(0)
    model = create_model(name, 1, 3).eval()
    path = folder / f"{name}.onnx"
    export_module(model, torch.randn(2, 1, *size), path)
    session = onnx_session(path)
    model = model.to(memory_format=torch.channels_last)
    rows = []
    for batch in (1, 8):
        x = torch.randn(batch, 1, *size)
        x_cl, feed = x.contiguous(memory_format=torch.channels_last), {"image": x.numpy()}

        def torch_run(autocast: bool) -> torch.Tensor:
            with torch.no_grad(), auto_precision() if autocast else contextlib.nullcontext():
                return model(x_cl)  # noqa: B023 - called before the loop moves on

        def ort_run() -> np.ndarray:
            return session.run(None, feed)[0]  # noqa: B023 - called before the loop moves on

        fp32 = batch / timed(lambda: torch_run(False), repeats)
        auto = batch / timed(lambda: torch_run(True), repeats)
        ort = batch / timed(ort_run, repeats)
        diff = float(np.abs(ort_run() - torch_run(False).float().numpy()).max())
        rows.append((batch, fp32, auto, ort, diff))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["unet", "gctx_unet"])
    parser.add_argument("--size", type=int, nargs=2, default=[224, 224])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = tuple(args.size)
    print(f"CPU, {torch.get_num_threads()} torch threads, input 1x{size[0]}x{size[1]}, 3 classes; images/s")
    print(f"{'model':<12}{'batch':>6}{'torch fp32':>12}{'torch auto':>12}{'onnxruntime':>13}{'ort/fp32':>10}"
          f"{'ort/auto':>10}{'max |diff|':>12}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for batch, fp32, auto, ort, diff in measure(name, size, args.repeats, Path(tmp)):
                print(f"{name:<12}{batch:>6}{fp32:>12.1f}{auto:>12.1f}{ort:>13.1f}{ort / fp32:>10.2f}"
                      f"{ort / auto:>10.2f}{diff:>12.1e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
