"""Architectures: every model is built by name through the registry (see registry.py)."""

from actionrepro.models.registry import (
    ModelInfo,
    Published,
    VideoModel,
    build_model,
    model_info,
    model_names,
    model_options,
    register,
)

__all__ = [
    "ModelInfo",
    "Published",
    "VideoModel",
    "build_model",
    "model_info",
    "model_names",
    "model_options",
    "register",
]
