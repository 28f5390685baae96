"""Segmentation architectures; importing this package registers every one of them."""

from . import unet  # noqa: F401  (registers)
from .registry import create_model, list_models, model_description, register_model, resolve_model_name

__all__ = ["create_model", "list_models", "model_description", "register_model", "resolve_model_name"]
