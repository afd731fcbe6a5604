"""Image preprocessing for CLIP and heatmap rendering.

Two preprocessing paths:
- :func:`preprocess_pil` uses open_clip's own eval transform (exactly what open_clip does);
- :func:`preprocess_tensor` is the batched, differentiable equivalent for float tensors in 0..1
  (resize the shortest side with antialiased bicubic, centre crop, normalise).

Heatmaps live on the patch grid of the centre crop CLIP saw; :func:`heatmap_to_frame` places them
back onto the full original frame (zeros outside the crop) so masks line up with the input image.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image

from .explain import normalize_minmax, normalize_sum_max
from .loading import LoadedClip

Fit = Literal["crop", "squash"]


def pil_transform(clip: LoadedClip) -> Any:
    """open_clip's evaluation transform for this model's preprocess config."""
    from open_clip.transform import image_transform

    cfg = clip.spec.preprocess_cfg
    return image_transform(
        clip.image_size, is_train=False, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"), resize_mode=cfg.get("resize_mode", "shortest"),
    )


def preprocess_pil(clip: LoadedClip, images: list[Image.Image]) -> torch.Tensor:
    """Preprocess PIL images exactly as open_clip does → (B, 3, S, S)."""
    tf = pil_transform(clip)
    return torch.stack([tf(im.convert("RGB")) for im in images])


def crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, side, side) of the centred square that shortest-side resize + centre crop keeps."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def preprocess_tensor(clip: LoadedClip, images: torch.Tensor, fit: Fit = "crop") -> torch.Tensor:
    """Differentiable preprocessing of (B, 3, H, W) images in 0..1 → (B, 3, S, S) normalised.

    ``fit="crop"`` keeps the centred square (open_clip's default); ``"squash"`` resizes the whole
    frame to a square (nothing is cut off, shapes are stretched).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3, 4):
        raise ValueError(f"expected images shaped (B, 3, H, W); got {tuple(images.shape)}.")
    x = images[:, :3] if images.shape[1] != 1 else images.expand(-1, 3, -1, -1)
    if fit == "crop":
        top, left, h, w = crop_box(x.shape[-2], x.shape[-1])
        x = x[:, :, top:top + h, left:left + w]
    size = clip.image_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    cfg = clip.spec.preprocess_cfg
    mean = torch.tensor(cfg["mean"], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (P, h, w) maps to ``size`` = (H, W)."""
    return F.interpolate(maps[:, None].float(), size=size, mode=mode, align_corners=False)[:, 0]


def heatmap_to_frame(maps: torch.Tensor, height: int, width: int, fit: Fit = "crop") -> torch.Tensor:
    """Place (P, gh, gw) maps onto a (P, height, width) frame (zero outside the crop for "crop")."""
    if fit == "squash":
        return upsample(maps, (height, width))
    top, left, h, w = crop_box(height, width)
    out = maps.new_zeros(maps.shape[0], height, width, dtype=torch.float32)
    out[:, top:top + h, left:left + w] = upsample(maps, (h, w))
    return out


def display_heatmaps(maps: torch.Tensor, height: int, width: int, fit: Fit = "crop",
                     normalization: Literal["min-max", "sum-max"] = "min-max") -> torch.Tensor:
    """Raw (P, gh, gw) maps → (P, height, width) heatmaps in 0..1 aligned with the input frame."""
    norm = normalize_minmax if normalization == "min-max" else normalize_sum_max
    return norm(heatmap_to_frame(maps, height, width, fit).clamp_min(0), dims=(-2, -1)).clamp(0, 1)


def jet(values: torch.Tensor) -> torch.Tensor:
    """The 'jet' colormap: values (...) in 0..1 → RGB (..., 3) in 0..1 (no matplotlib needed)."""
    v = values.clamp(0.0, 1.0)[..., None]
    centres = torch.tensor([3.0, 2.0, 1.0], dtype=v.dtype, device=v.device)
    return (1.5 - (4 * v - centres).abs()).clamp(0.0, 1.0)


def overlay(images: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Blend 0..1 heatmaps (..., H, W) over RGB images (..., H, W, C) in 0..1 → (..., H, W, 3)."""
    return (1 - alpha) * images[..., :3] + alpha * jet(heat)


def load_image(path: str) -> Image.Image:
    """Open an image file as RGB with a clear error for unreadable files."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc}).") from exc
