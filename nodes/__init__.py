"""ComfyUI nodes of the pack: thin adapters over the ``relevancy`` engine."""

from __future__ import annotations

from .common import install_sample_images, register_model_folder
from .explain import CLIPRelevancy, TokenCoverage
from .loader import LoadRelevancyCLIP
from .masks import HeatmapToMask

NODES = [LoadRelevancyCLIP, CLIPRelevancy, TokenCoverage, HeatmapToMask]

__all__ = ["NODES", "install_sample_images", "register_model_folder"]
