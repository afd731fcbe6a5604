"""No Token Left Behind engine: CLIP relevancy maps, token coverage and masks (no ComfyUI imports)."""

from .explain import Explanation, RelevancyMaps, explain, relevancy_maps
from .loading import CheckpointError, LoadedClip, load_clip, load_clip_from_state_dict
from .tokens import TokenizedPrompt, split_phrases, tokenize

__all__ = [
    "CheckpointError",
    "Explanation",
    "LoadedClip",
    "RelevancyMaps",
    "TokenizedPrompt",
    "explain",
    "load_clip",
    "load_clip_from_state_dict",
    "relevancy_maps",
    "split_phrases",
    "tokenize",
]
