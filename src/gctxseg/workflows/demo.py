"""``gctxseg demo``: phantom data -> train the default model on a short CPU-friendly schedule -> predict."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..clinical.measurements import MeasurementOptions, read_spacing_file
from ..data.phantom import CLASS_NAMES, synthesize_dataset
from ..reporting.report import summarize_run
from ..training import TrainConfig
from .predict_folder import PredictionSummary, predict_folder
from .train_report import train_and_report

__all__ = ["run_demo", "DEMO_SETTINGS", "DEMO_TRAIN_MINUTES"]

# A short schedule that reaches val mean Dice >= 0.80 on the phantom in a few minutes on 2 CPU cores.
# weight decay, warm-up and augmentation as when this schedule was measured (the planner would pick the
# transformer family's); the foreground share is left to the planner
DEMO_SETTINGS = dict(batch_size=8, lr=0.002, lrf=0.01, weight_decay=1e-4, warmup_epochs=1.0, augment="standard")
# The training time, not an epoch count: the planner fits the epochs (and, where fewer than its 1,250 images would
# fit, a smaller input than the phantom's 224x224) to a measured step time, since fixed epochs take 2-3 times longer
# on a CPU without native bf16 (docs/speed.md); 6 minutes of training leaves the whole demo (phantom, training,
# report, prediction) under 10 minutes on either.
DEMO_TRAIN_MINUTES = 6.0
DEMO_SIZE = (224, 224)  # the input size of a demo given --epochs (the schedule measured before)


def run_demo(
    epochs: int | None = None,
    model: str | None = None,
    data: str | Path = "data",
    results: str | Path = "runs",
    inference: str | Path = "inference",
) -> dict:
    """Run the whole job on the built-in OCT phantom and print where everything is.

    Returns:
        the run summary (best epoch, its validation metrics, run folder).
    """
    start = time.perf_counter()
    data, inference = Path(data), Path(inference)
    if not (data / "train" / "images").is_dir():
        print(f"writing the synthetic OCT phantom to {data}/ ...")
        synthesize_dataset(data, n=400, size=(224, 224), seed=0)
    schedule = {"epochs": epochs, "base_size": DEMO_SIZE} if epochs else {"time_budget": DEMO_TRAIN_MINUTES}
    settings = {**DEMO_SETTINGS, **schedule}
    cfg = TrainConfig(
        data_train=str(data / "train" / "images"),
        data_val=str(data / "val" / "images"),
        results=str(results),
        name="demo",
        **({"model": model} if model else {}),
        **settings,
    )
    run = train_and_report(cfg)

    source = inference / "img"
    source.mkdir(parents=True, exist_ok=True)
    if not any(source.iterdir()):
        for image in sorted((data / "val" / "images").glob("*.jpg"))[:8]:
            shutil.copy(image, source / image.name)
    # the phantom's own pixel size (data/spacing.json, from synth), so the areas come out in mm²
    measure = MeasurementOptions(pixel_spacing=read_spacing_file(data), class_names=CLASS_NAMES[1:])
    prediction = predict_folder(run / "best.pt", source, inference / "out", device=cfg.device, amp=cfg.amp,
                                measure=measure)

    summary = summarize_run(run)
    best = summary.best_val.scores
    print(
        f"\ndemo finished in {time.perf_counter() - start:.0f} s\n"
        f"  model        {summary.model} ({summary.parameters / 1e6:.2f} M parameters)\n"
        f"  run folder   {run}  (log.json, curves.png, best.pt, last.pt, samples/)\n"
        f"  predictions  {inference / 'out'} ({len(prediction.written)} masks + overlays, measurements.csv, "
        "index.html)\n"
        f"  best epoch   {summary.best_epoch + 1}: val mean Dice {best.mean_dice:.4f}, "
        f"mean IoU {best.mean_iou:.4f}, per class Dice "
        + ", ".join(f"{d:.4f}" for d in best.dice)
    )
    print(predicted_areas(prediction))
    return summary


def predicted_areas(prediction: PredictionSummary) -> str:
    """The predicted area of each class per image, in mm² where the pixel spacing is known, as text lines."""
    rows = [r for r in prediction.measurements if r.kind == "image" and r.pixels is not None]
    if not rows:
        return "  areas        none measured"
    g = rows[0].geometry
    unit = "mm²" if g.pixel_mm2 is not None else "pixels (no pixel spacing known)"
    where = f", pixel {g.row_mm * 1000:.1f} x {g.col_mm * 1000:.1f} µm" if g.pixel_mm2 is not None else ""
    lines = [f"  predicted areas in {unit}{where}:"]
    for row in rows:
        amounts = row.areas() if row.geometry.pixel_mm2 is not None else row.pixels
        lines.append(f"    {row.file:<16}" + "  ".join(
            f"{name} {a:.4f}" if isinstance(a, float) else f"{name} {a}"
            for name, a in zip(prediction.class_names, amounts)
        ))  # fmt: skip
    return "\n".join(lines)
