"""Export a trained model to ONNX, and run an exported model with ONNX Runtime.

The ONNX file is self-contained for ``gctxseg predict``: the checkpoint's metadata that prediction needs (mask
value map, training size, input channels, normalisation, intensity mapping, architecture) is stored as JSON under
the ``gctxseg`` key of the model's ``metadata_props``. The batch axis is dynamic; height and width are fixed at
the training size (``base_size``), which is what both inference modes feed the network (``resize`` resizes
each image to it, ``sliding`` cuts windows of it).

Needs the optional ``export`` extra: ``pip install gctxseg[export]`` (onnx, onnxruntime).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..core.files import atomic_write_bytes
from ..core.outputs import check_output_file
from ..runs.checkpoint import check_inference_fields, checkpoint_channels, load_checkpoint, model_from_checkpoint

__all__ = [
    "METADATA_KEY",
    "ExportResult",
    "OnnxModel",
    "export_module",
    "export_onnx",
    "onnx_session",
]

METADATA_KEY = "gctxseg"  # metadata_props key holding the prediction metadata as JSON
DEFAULT_OPSET = 17  # supported by every onnxruntime >= 1.14
# ONNX's Resize matches PyTorch's interpolation from opset 11 on (torch warns below it, and results differ by 1e-3);
# every gctxseg decoder upsamples, and below 10 the exporter refuses the networks outright
MIN_OPSET = 11


def supported_opsets() -> range:
    """The opsets ``export`` writes: MIN_OPSET up to the highest torch's TorchScript exporter writes."""
    from torch.onnx import _constants  # private, so read defensively: the names differ between torch versions

    top = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", getattr(_constants, "ONNX_MAX_OPSET", None))
    return range(MIN_OPSET, (top if isinstance(top, int) and top >= DEFAULT_OPSET else DEFAULT_OPSET) + 1)


def check_opset(opset: int) -> int:
    """``opset`` when torch exports gctxseg's networks at it.

    Raises:
        ValueError: one line naming ``--opset`` and the range.
    """
    opsets = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in opsets:
        raise ValueError(f"--opset {opset}: must be {opsets.start}..{opsets.stop - 1} (from {MIN_OPSET} ONNX's Resize "
                         f"matches PyTorch's upsampling; {opsets.stop - 1} is the highest this torch writes); leave "
                         f"it out for {DEFAULT_OPSET}, which every onnxruntime >= 1.14 runs")
    return opset


@dataclass
class ExportResult:
    """What an export wrote and how closely ONNX Runtime reproduces PyTorch."""

    path: Path
    max_abs_diff: float  # largest |logit| difference, ONNX Runtime vs PyTorch, on a random batch of 2


def is_exported_model(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX model that ``gctxseg export`` wrote (it holds the :data:`METADATA_KEY` entry)."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all (a checkpoint, a document) or onnx missing: not ours to replace
        return False
    return any(entry.key == METADATA_KEY for entry in proto.metadata_props)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"{module} is not installed; install the export extra: pip install 'gctxseg[export]'"
        ) from None


def onnx_session(path: str | Path):
    """An ONNX Runtime CPU session for ``path``, logging errors only."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no constant-folding chatter
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(
    weights: str | Path, out: str | Path | None = None, opset: int = DEFAULT_OPSET, *, seed: int = 0,
    force: bool = False,
) -> ExportResult:
    """Export a gctxseg checkpoint to ONNX and check it against PyTorch.

    Args:
        weights: ``best.pt`` / ``last.pt`` of a run folder.
        out: the ONNX file to write (default: the checkpoint's path with the suffix ``.onnx``).
        opset: ONNX opset (default 17).
        seed: seed of the random batch the two runtimes are compared on.
        force: replace an existing ``out`` that is not an ONNX model gctxseg exported (never ``weights`` itself).

    Returns:
        The written path and the max absolute logit difference between ONNX Runtime and PyTorch.

    Raises:
        ValueError: unreadable checkpoint; an opset outside :func:`supported_opsets` or that cannot express the
            network; an ``out`` that is ``weights``, or an existing file that is not an ONNX model gctxseg exported
            (:func:`gctxseg.core.outputs.check_output_file`).
        ImportError: onnx or onnxruntime missing.
    """
    check_opset(opset)
    out = Path(out) if out is not None else Path(weights).with_suffix(".onnx")
    check_output_file(out, "export", inputs=[weights], suffix=".onnx", is_own=is_exported_model, force=force)
    onnx = _require("onnx")
    ckpt = load_checkpoint(weights)
    check_inference_fields(ckpt, weights)
    channels = checkpoint_channels(ckpt)
    model = model_from_checkpoint(ckpt, weights)
    size = tuple(ckpt["base_size"])
    example = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(seed))
    buffer = io.BytesIO()
    try:
        export_module(model, example, buffer, opset)
    except torch.onnx.OnnxExporterError as err:  # an operator this opset lacks
        first = (str(err).splitlines() or [""])[0][:200]
        fix = f"; leave --opset out for {DEFAULT_OPSET}" if opset != DEFAULT_OPSET else ""
        raise ValueError(f"{weights}: torch cannot export {ckpt['model_name']} at ONNX opset {opset} "
                         f"({first}){fix}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(_metadata(ckpt, size, channels))
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, proto.SerializeToString())  # a reader sees the old model or the new, never half
    with torch.no_grad():
        expected = model(example).numpy()
    got = OnnxModel(out).run(example.numpy())
    return ExportResult(out, float(np.abs(got - expected).max()))


def _metadata(ckpt: dict, size: tuple[int, int], channels: int) -> dict:
    """What ``predict`` needs of the checkpoint beside the graph: the classes, input size and normalisation."""
    return {
        "model_name": ckpt["model_name"],
        "model_kwargs": ckpt["model_kwargs"],
        "value_map": ckpt["value_map"],
        "base_size": list(size),
        "channels": channels,
        "normalization": ckpt["normalization"],
        "intensity": ckpt.get("intensity"),
        "epoch": ckpt.get("epoch"),
        "gctxseg": ckpt.get("gctxseg"),
        # the training pictures' intensity range: predict's note on inputs far outside it (predictor.picture_range)
        "fingerprint": {k: (ckpt.get("fingerprint") or {}).get(k) for k in ("percentile_00_5", "percentile_99_5")},
    }


def export_module(
    model: torch.nn.Module, example: torch.Tensor, out: str | Path | BinaryIO, opset: int = DEFAULT_OPSET
) -> None:
    """Write ``model`` (in eval mode) as ONNX with a dynamic batch axis, traced at ``example``'s H x W, to a file
    or a binary stream."""
    if isinstance(out, (str, Path)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # shape checks (padding to a multiple, window sizes) become constants: right, H x W is fixed at base_size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the exporter's note that strided slices (window partitions) are not constant-folded: nothing to act on
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        # the TorchScript exporter is chosen on purpose (dynamo=False below); its deprecation notices are not for users
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        torch.onnx.export(
            model,
            (example,),
            str(out) if isinstance(out, (str, Path)) else out,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, dynamic batch via dynamic_axes
        )


class OnnxModel:
    """An exported model run with ONNX Runtime on the CPU; called like the PyTorch model on a tensor.

    Args:
        path: an ONNX file written by :func:`export_onnx`.

    Raises:
        ValueError: not a readable ONNX file, or one without gctxseg metadata.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: ONNX file not found; write one with: gctxseg export --weights best.pt")
        _require("onnxruntime")
        try:
            self.session = onnx_session(self.path)
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{self.path}: not a readable ONNX model ({type(err).__name__})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ValueError(f"{self.path}: no gctxseg metadata; export it with: gctxseg export --weights best.pt")
        self.metadata = json.loads(props[METADATA_KEY])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images: np.ndarray) -> np.ndarray:
        """Logits ``N x K x H x W`` (float32) of a float32 batch ``N x C x H x W``."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(images.detach().float().cpu().numpy()))
