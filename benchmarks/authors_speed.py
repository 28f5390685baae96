"""gctx_unet against the authors' GCtx-UNet code in one run: the same function (logits to 5e-6), then the speed.

Builds the authors' network from a checkout of their repository (imported from there at run time; their code is
under a non-commercial licence and is not part of gctxseg) and ours at 224x224 from their
``configs/GCViT_xxtiny_224_lite.yaml``, copies every one of their tensors into ours (:func:`authors_to_ours`),
checks that the eval-mode fp32 logits agree to 5e-6 (3-channel input, and 1-channel input where their network
repeats the channel and ours sums the stem's weights), then times, alternating the two models call by call:
training steps (forward, Dice+CE, backward, AdamW) and batch-8 inference, under bf16 autocast where the CPU has
native bf16 (else fp32); ours channels-last with the engine's AdamW groups, theirs with plain AdamW as their
trainer runs it. Where the CPU has bf16, theirs is also timed as published ("theirs fp32": their trainer has no
autocast), so both comparisons come from one run: the product against their code as shipped, and the two
networks under the same precision.
The process keeps freed memory in glibc's heap as ``gctxseg train`` does (``keep_freed_memory``; both models run
under it). Also prints the CPU, the machine's matmul rate and the share of it our training step reaches. Asserts nothing
beyond the 5e-6 check. Example::

    git clone https://github.com/Kalrfou/GCtx-UNet /tmp/GCtx-UNet
    python benchmarks/authors_speed.py --authors /tmp/GCtx-UNet
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import re
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from timing import amp_context

from gctxseg.core.precision import autocast_dtype
from gctxseg.core.runtime import keep_freed_memory
from gctxseg.losses import DiceCELoss
from gctxseg.models import create_model
from gctxseg.models.complexity import count_macs
from gctxseg.models.gctx_unet import UpSize, encoder_state
from gctxseg.models.layers import bicubic_upsample_x2
from gctxseg.training.loop import adamw, optimizer_param_groups

CONFIG = "configs/GCViT_xxtiny_224_lite.yaml"
NETWORK = "networks/GCtx_UNet.py"
SIZE = 224
TOLERANCE = 5e-6
GET_IT = "git clone https://github.com/Kalrfou/GCtx-UNet"


def load_authors(root: Path, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The authors' ``GCViT_Unet`` built from their xxtiny config, and that config's GCVIT values."""
    network, config = root / NETWORK, root / CONFIG
    if not network.is_file() or not config.is_file():
        sys.exit(f"{root}: no {NETWORK} / {CONFIG} there; get the authors' code with `{GET_IT}` and pass its folder")
    text = re.sub(r":\[", ": [", config.read_text())  # their file writes "WINDOW_SIZE:[7, 7, 14, 7]"
    values = yaml.safe_load(text)["MODEL"]
    gcvit = {"MLP_RATIO": 3.0, "IN_CHANS": 3, **values["GCVIT"]}  # their config.py's defaults for the rest
    spec = importlib.util.spec_from_file_location("authors_gctx_unet", network)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drop_path = values["DROP_PATH_RATE"]
    cfg = SimpleNamespace(MODEL=SimpleNamespace(DROP_PATH_RATE=drop_path, GCVIT=SimpleNamespace(**gcvit)))
    return module.GCViT_Unet(cfg, num_classes=num_classes, img_size=SIZE), {**gcvit, "DROP_PATH": drop_path}


def build_ours(config: dict, in_channels: int, num_classes: int) -> torch.nn.Module:
    return create_model(
        "gctx_unet", in_channels, num_classes, img_size=SIZE, embed_dim=config["EMBED_DIM"], depths=config["DEPTHS"],
        num_heads=config["NUM_HEADS"], window_sizes=config["WINDOW_SIZE"], mlp_ratio=config["MLP_RATIO"],
        drop_path_rate=config["DROP_PATH"],
    )


# Their decoder in our names. Decoder stage i (deepest first) is their layers_up.i; its GC ViT blocks and global
# query generator are named like an encoder level's, so they go through the encoder's NVlabs renaming as level i.
_DECODER_RENAMES = (
    (r"^concat_back_dim\.(\d+)\.", r"decoder.stages.\1.skip_proj."),
    (r"^norm_up\.", "decoder.norm."),
    (r"^up\.conv_up\.", "decoder.final_up.0."),
    (r"^up\.conv_up2\.", "decoder.final_up.1."),
    (r"^output\.", "head."),
)
_UPSIZE_RENAMES = (  # their UpSize's MBConv (conv.0 depthwise, conv.2 SE of Linears, conv.3 pointwise)
    (r"\.conv\.0\.", ".conv_block.conv_dw."),
    (r"\.conv\.2\.fc\.0\.", ".conv_block.se.fc1."),
    (r"\.conv\.2\.fc\.2\.", ".conv_block.se.fc2."),
    (r"\.conv\.3\.", ".conv_block.conv_pw."),
)


def authors_to_ours(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The authors' ``GCViT_Unet`` state dict in ``model``'s (our gctx_unet's) names and shapes.

    Encoder (``patch_embed``, ``levels``, ``norm``) and the decoder's GC ViT stages go through
    :func:`~gctxseg.models.gctx_unet.encoder_state` (NVlabs names -> timm's); the UpSize blocks, skip Linears,
    final norm, x4 expansion and head are renamed here. Relative-position index buffers are rebuilt, not copied.
    """
    state = {k.removeprefix("model."): v for k, v in state.items() if not k.endswith("relative_position_index")}
    encoder = {k: v for k, v in state.items() if k.startswith(("patch_embed.", "levels.", "norm."))}
    out = {f"encoder.{k}": v for k, v in encoder_state(model, encoder, "authors' encoder").items()}
    last = len(model.encoder.stages) - 1  # decoder stage i (deepest first) has encoder level last - i's shapes

    def mirrored(key: str, to: str) -> str:
        return re.sub(r"^(?:layers_up|stages)\.(\d+)\.", lambda m: f"{to}.{last - int(m[1])}.", key)

    blocks = {mirrored(k, "levels"): v for k, v in state.items()
              if k.startswith("layers_up.") and ".upsample." not in k}
    decoder = encoder_state(model, blocks, "their decoder")
    out.update({f"decoder.{mirrored(k, 'stages')}": v for k, v in decoder.items()})
    rest = {k: v for k, v in state.items() if k not in encoder and not k.startswith("layers_up.")}
    rest.update({re.sub(r"^layers_up\.", "decoder.stages.", k): v for k, v in state.items() if ".upsample." in k})
    for key, value in rest.items():
        for pattern, repl in _DECODER_RENAMES + _UPSIZE_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value[:, :, None, None] if ".se.fc" in key and value.ndim == 2 else value
    return out


@torch.no_grad()
def max_logit_diff(theirs: torch.nn.Module, config: dict, in_channels: int, num_classes: int) -> float:
    """Largest |logit difference| (eval, fp32, batch 2) after loading their weights into a fresh gctx_unet."""
    ours = build_ours(config, in_channels, num_classes)
    mapped = authors_to_ours(theirs.state_dict(), ours)
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    if unexpected or missing:
        sys.exit(f"key mapping incomplete: {len(missing)} of ours not set (e.g. {missing[:1]}), "
                 f"{len(unexpected)} of theirs unused (e.g. {unexpected[:1]})")
    ours.eval(), theirs.eval()
    x = torch.randn(2, in_channels, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return (ours(x) - theirs(x)).abs().max().item()


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def train_step(model, optimizer, x, y, ctx) -> Callable[[], None]:
    loss_fn = DiceCELoss()

    def step() -> None:
        with ctx():
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def inference(model, x, ctx) -> Callable[[], None]:
    def infer() -> None:
        with torch.no_grad(), ctx():
            model(x)

    return infer


def alternate(calls: dict[str, Callable[[], None]], rounds: int, repeats: int) -> dict[str, list[float]]:
    """ms per call of each of ``calls``, one entry per round; within a round the calls alternate A B A B ...
    (``repeats`` times each, after one untimed warm-up call each), so both see the same machine load."""
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        spent = dict.fromkeys(calls, 0.0)
        for _ in range(repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                spent[name] += time.perf_counter() - start
        for name in calls:
            times[name].append(1000 * spent[name] / repeats)
    return times


def published_upsize_order(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every UpSize computed in the authors' order (x2 bicubic, then the 1x1 conv): gctx_unet before
    it convolved first (the same function, more work), to measure that change in the same run."""
    def forward(self, x):
        return self.norm2(self.expansion(bicubic_upsample_x2(self.conv_block(self.norm1(x)))))

    for module in model.modules():
        if isinstance(module, UpSize):
            module.forward = types.MethodType(forward, module)
    return model


def speed_rows(models: dict[str, tuple[torch.nn.Module, torch.optim.Optimizer, bool, Callable]], args):
    """{what: {name: [ms per call, one per round]}} for training and batch-8 inference; ``models`` maps a name to
    (model, optimizer, channels-last input, autocast context factory)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.train_batch, args.in_channels, SIZE, SIZE, generator=gen)
    y = torch.randint(0, args.num_classes, (args.train_batch, SIZE, SIZE), generator=gen)
    x8 = torch.randn(8, args.in_channels, SIZE, SIZE, generator=gen)

    def layout(t, channels_last):
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    for model, *_ in models.values():
        model.train()
    calls = {name: train_step(m, opt, layout(x, cl), y, ctx) for name, (m, opt, cl, ctx) in models.items()}
    rows = {f"train b{args.train_batch}": alternate(calls, args.rounds, args.repeats)}
    for model, *_ in models.values():
        model.eval()
    calls = {name: inference(m, layout(x8, cl), ctx) for name, (m, _, cl, ctx) in models.items()}
    rows["infer b8"] = alternate(calls, args.rounds, args.repeats)
    return rows


def print_table(rows: dict[str, dict[str, list[float]]]) -> None:
    names = list(next(iter(rows.values())))
    theirs = [n for n in names if n.startswith("theirs")]
    mine = [n for n in names if n not in theirs]
    pairs = [(a, b) for a in theirs for b in mine] + ([(mine[0], mine[1])] if len(mine) > 1 else [])
    print("\n| | " + " | ".join(f"{n} ms" for n in names) + " | "
          + " | ".join(f"{b} vs {a}: speed-up (per round)" for a, b in pairs) + " |")
    print("|---|" + "---:|" * len(names) + "---|" * len(pairs))
    for what, times in rows.items():
        ms = [f"{statistics.median(times[n]):.0f}" for n in names]
        ratios = []
        for a, b in pairs:
            per_round = [ta / tb for ta, tb in zip(times[a], times[b])]
            ratios.append(f"{statistics.median(times[a]) / statistics.median(times[b]):.2f}x "
                          f"({' '.join(f'{r:.2f}' for r in per_round)})")
        print(f"| {what} | " + " | ".join(ms) + " | " + " | ".join(ratios) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help=f"a checkout of their code ({GET_IT})")
    parser.add_argument("--in-channels", type=int, default=1, help="timed input channels (theirs repeats 1 to 3)")
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (a ratio per round)")
    parser.add_argument("--repeats", type=int, default=2, help="calls of each model per round")
    parser.add_argument("--before", action="store_true",
                        help="also time gctx_unet as it was before: UpSize in the published order, unfused AdamW")
    parser.add_argument("--amp", default="auto", choices=["auto", "off"], help="auto: bf16 where the CPU has it")
    args = parser.parse_args()
    kept = keep_freed_memory()  # as `gctxseg train` runs (process-wide: both models run under it)
    torch.manual_seed(0)
    theirs, config = load_authors(args.authors, args.num_classes)
    for channels in (3, 1):
        diff = max_logit_diff(theirs, config, channels, args.num_classes)
        verdict = "same function" if diff <= TOLERANCE else "DIFFERENT FUNCTION"
        print(f"{channels}-channel input, eval fp32: max |logit diff| {diff:.1e} (<= {TOLERANCE:g}: {verdict})")
        if diff > TOLERANCE:
            sys.exit(1)
    cpu = torch.device("cpu")
    bf16 = autocast_dtype(args.amp, cpu) == torch.bfloat16
    native = autocast_dtype("auto", cpu) == torch.bfloat16
    ctx, fp32_ctx = amp_context("auto" if bf16 else "off", cpu), amp_context("off", cpu)
    ours = build_ours(config, args.in_channels, args.num_classes).to(memory_format=torch.channels_last)
    models = {}
    if bf16:  # their code as published: their trainer.py has no autocast, it trains in fp32
        optimizer = torch.optim.AdamW(theirs.parameters(), lr=1e-4, weight_decay=1e-4)
        models["theirs fp32"] = (theirs, optimizer, False, fp32_ctx)
    optimizer = torch.optim.AdamW(theirs.parameters(), lr=1e-4, weight_decay=1e-4)  # as their trainer.py
    models["theirs"] = (theirs, optimizer, False, ctx)
    if args.before:  # same weights, published UpSize order, single-tensor AdamW
        before = published_upsize_order(copy.deepcopy(ours))
        models["before"] = (before, torch.optim.AdamW(optimizer_param_groups(before, 1e-4), lr=1e-4), True, ctx)
    models["ours"] = (ours, adamw(ours, 1e-4, 1e-4, cpu), True, ctx)
    fp32, bf16_rate = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    rows = speed_rows(models, args)
    macs = count_macs(ours, args.in_channels, (SIZE, SIZE))
    print(f"\nCPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"native bf16: {'yes' if native else 'no'}, timed in {'bf16 autocast' if bf16 else 'fp32'} "
          f"(--amp {args.amp}); "
          f"freed memory kept in the heap as gctxseg train does: {'yes' if kept else 'no'}")
    print(f"2048^2 matmul: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16_rate:.0f} GFLOP/s")
    print_table(rows)
    train_ms = statistics.median(rows[f"train b{args.train_batch}"]["ours"])
    # a training step does about 3x a forward's multiply-adds (forward, gradients of inputs and of weights)
    achieved = 3 * 2 * macs * args.train_batch / (train_ms / 1000) / 1e9
    peak = bf16_rate if bf16 else fp32
    print(f"\nour training step: {macs / 1e9:.2f} G mult-adds per image forward -> {achieved:.0f} GFLOP/s "
          f"({100 * achieved / peak:.0f}% of the {'bf16' if bf16 else 'fp32'} matmul rate)")


if __name__ == "__main__":
    main()
