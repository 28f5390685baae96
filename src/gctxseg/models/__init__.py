"""Segmentation architectures; importing this package registers every one of them."""

from . import gct_unet, gctx_unet, nnunet, unet, unet3_plus, unet_plus_plus  # noqa: F401  (registers)
from .registry import create_model, list_models, model_description, register_model, resolve_model_name

__all__ = ["create_model", "list_models", "model_description", "register_model", "resolve_model_name"]
