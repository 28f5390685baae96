"""What a cv summary costs per scan: out-of-fold arrays kept on disk, and the surface metrics (HD95, NSD).

Out-of-fold probabilities stand in as a model's would look: the true mask's one-hot, blurred and resized down to
the training size and back up (bilinear), as the predictor does. For each stored form (dtype, resolution) the
script prints bytes per scan and the seconds to write and read one; for the surface metrics the seconds per scan
at the scans' own size and at the training size. Run on Duke DME::

    python benchmarks/cv_summary_cost.py /work/data/duke/images /work/data/duke/masks --size 224 224
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gctxseg.data import read_mask
from gctxseg.metrics import surface_metrics


def _probabilities(mask: np.ndarray, k: int, size: tuple[int, int]) -> torch.Tensor:
    one_hot = F.one_hot(torch.as_tensor(mask, dtype=torch.int64), k).permute(2, 0, 1)[None].float()
    small = F.interpolate(F.avg_pool2d(one_hot, 9, 1, 4), size=size, mode="bilinear", align_corners=False)
    return F.interpolate(small, size=mask.shape, mode="bilinear", align_corners=False)[0], small[0]


def _stored(arrays: dict[str, np.ndarray]) -> tuple[int, float, float]:
    start = time.perf_counter()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    wrote = time.perf_counter() - start
    start = time.perf_counter()
    with np.load(io.BytesIO(buffer.getvalue())) as npz:
        _ = [npz[k] for k in npz.files]
    return buffer.tell(), wrote, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("masks", type=Path)
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), help="the training size (rows, columns)")
    parser.add_argument("--scans", type=int, default=40)
    args = parser.parse_args()
    masks = [read_mask(p) for p in sorted(args.masks.glob("*.png"))[: args.scans]]
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    masks = [np.searchsorted(values, m) for m in masks]
    k = len(values)
    forms = {"uint8 full size": [], "float16 full size": [], "uint8 training size": []}
    seconds = {"surface metrics, full size": 0.0, "surface metrics, training size": 0.0}
    for mask in masks:
        full, small = _probabilities(mask, k, tuple(args.size))
        forms["uint8 full size"].append(_stored({"p": (full * 255).round().to(torch.uint8).numpy()}))
        forms["float16 full size"].append(_stored({"p": full.half().numpy()}))
        forms["uint8 training size"].append(_stored({"p": (small * 255).round().to(torch.uint8).numpy()}))
        pred = full.argmax(0).numpy()
        start = time.perf_counter()
        surface_metrics(pred, mask, k)
        seconds["surface metrics, full size"] += time.perf_counter() - start
        small_mask = F.interpolate(torch.as_tensor(mask)[None, None].float(), size=tuple(args.size),
                                   mode="nearest")[0, 0].long().numpy()
        start = time.perf_counter()
        surface_metrics(small.argmax(0).numpy(), small_mask, k)
        seconds["surface metrics, training size"] += time.perf_counter() - start
    n = len(masks)
    print(f"{n} scans of {masks[0].shape[0]}x{masks[0].shape[1]}, {k} classes; training size {args.size}")
    for form, rows in forms.items():
        size, wrote, read = (np.mean([r[i] for r in rows]) for i in range(3))
        print(f"{form:<22} {size / 1024:8.1f} KiB/scan  write {wrote * 1e3:6.1f} ms  read {read * 1e3:6.1f} ms")
    for what, total in seconds.items():
        print(f"{what:<32} {total / n * 1e3:7.1f} ms/scan")


if __name__ == "__main__":
    main()
