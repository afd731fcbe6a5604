"""Plumbing shared by the nodes: the model type, model folder, device management, progress.

No maths here: everything numeric lives in the engine (``relevancy``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..relevancy.loading import LoadedClip, default_model_path, load_clip

PREFIX = "NTLB_"
CATEGORY = "No Token Left Behind"
FOLDER = "relevancy_clip"
BUILTIN = "shapes (built-in)"

RelevancyClip = io.Custom("NTLB_CLIP")

#: Bundled sample images copied into ComfyUI's input folder (asset file → name in input/), so the
#: example workflows' Load Image nodes find them in a user's ComfyUI.
SAMPLE_IMAGES = {"sample_shapes.png": "ntlb_sample_shapes.png"}
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def register_model_folder() -> None:
    """Register ``models/relevancy_clip`` (extra_model_paths.yaml can add more with this key)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    if default not in paths:
        paths = [*paths, default]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(folder_paths.supported_pt_extensions))


def install_sample_images() -> list[Path]:
    """Copy the bundled sample images into ComfyUI's input folder (``ntlb_*`` names) when absent.

    Never overwrites a file already there and never raises: a read-only or missing input folder
    only logs a warning (the pack still loads). Returns the files written.
    """
    written: list[Path] = []
    target_dir = Path(folder_paths.get_input_directory())
    for asset, name in SAMPLE_IMAGES.items():
        dest = target_dir / name
        try:
            if dest.exists():
                continue
            target_dir.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{name}.{os.getpid()}.tmp")
            try:
                shutil.copyfile(ASSETS_DIR / asset, tmp)
                os.replace(tmp, dest)  # atomic: a half-written sample never appears under its name
            finally:
                tmp.unlink(missing_ok=True)
            written.append(dest)
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "No Token Left Behind: could not copy sample image %s to %s (%s); the example "
                "workflows need it in ComfyUI's input folder.", asset, dest, exc)
    return written


def model_choices() -> list[str]:
    """The built-in model first, then every checkpoint in the model folder(s)."""
    return [BUILTIN, *folder_paths.get_filename_list(FOLDER)]


def resolve_model_path(name: str) -> Path:
    """File (or folder) behind a model choice, with an actionable error when it is gone."""
    if name == BUILTIN:
        path = default_model_path()
        if not (path / "open_clip_model.safetensors").is_file():
            raise FileNotFoundError(
                f"the built-in shapes model is missing from the pack ({path}); reinstall or update the "
                "No Token Left Behind pack, or pick a checkpoint from models/relevancy_clip/."
            )
        return path
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise FileNotFoundError(
            f"model {name!r} is not in models/{FOLDER}/ any more; refresh the node list (R) or put "
            "the checkpoint back."
        )
    return Path(path)


@dataclass
class ManagedClip:
    """The value on an NTLB_CLIP socket: a loaded CLIP plus ComfyUI's ModelPatcher for offloading."""

    name: str
    clip: LoadedClip
    patcher: Any

    def ready(self) -> LoadedClip:
        """Load onto the compute device through ComfyUI's model management (outside inference mode,
        so the moved weights can take part in autograd)."""
        with torch.inference_mode(False):
            mm.load_models_gpu([self.patcher])
        return self.clip


_CACHE: OrderedDict[tuple, ManagedClip] = OrderedDict()
_CACHE_SIZE = 2


def dtype_for(choice: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU; fp16 on accelerators for "auto"; else the explicit choice."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if choice == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return table[choice]


def load_managed(name: str, device: str, dtype: str, activation: str) -> ManagedClip:
    """Load (or reuse) a model; weights are created outside inference mode so autograd works."""
    path = resolve_model_path(name)
    load_device = torch.device("cpu") if device == "cpu" else mm.get_torch_device()
    torch_dtype = dtype_for(dtype, load_device)
    quick = {"auto": None, "quick_gelu": True, "gelu": False}[activation]
    stat = path.stat() if path.exists() else None
    key = (str(path), stat and stat.st_mtime_ns, stat and stat.st_size, str(load_device), torch_dtype, quick)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    with torch.inference_mode(False):
        clip = load_clip(path, quick_gelu=quick, device="cpu", dtype=torch_dtype)
    offload = torch.device("cpu")
    patcher = comfy.model_patcher.ModelPatcher(clip.model, load_device=load_device, offload_device=offload,
                                               size=mm.module_size(clip.model))
    managed = ManagedClip(name, clip, patcher)
    _CACHE[key] = managed
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return managed


def progress_callback(total: int) -> Callable[[int, int], None]:
    """A progress function for the engine that also honours the user's cancel."""
    bar = comfy.utils.ProgressBar(total)

    def update(done: int, total_: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total_)

    return update


def image_to_bchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B,H,W,C) → a normal (non-inference) float tensor (B,3,H,W)."""
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image: expected a ComfyUI IMAGE batch shaped (B, H, W, C); got {tuple(image.shape)}.")
    with torch.inference_mode(False):
        return image.detach().clone().float().movedim(-1, 1)[:, :3].contiguous()


def mask_batch(mask: torch.Tensor, what: str = "mask") -> torch.Tensor:
    """ComfyUI MASK as (B,H,W) (accepts (H,W))."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"{what}: expected a MASK shaped (B, H, W) or (H, W); got {tuple(mask.shape)}.")
    return mask


def check_combos(cls: type[io.ComfyNode], **values: Any) -> bool | str:
    """``validate_inputs`` helper: every combo value must be one of the schema's options.

    ComfyUI 0.3.75 checks combo values only for V1 nodes, so stale or hand-edited workflows would
    otherwise reach ``execute`` with values the node does not know.
    """
    options = {i.id: i.options for i in cls.define_schema().inputs if isinstance(i, io.Combo.Input)}
    for name, value in values.items():
        if value is not None and value not in options[name]:
            shown = options[name] if len(options[name]) <= 12 else f"{len(options[name])} choices"
            return (f"{name}: {value!r} is not one of {shown}; pick a listed value (the workflow may come "
                    "from another version of the pack, or the file was removed).")
    return True
