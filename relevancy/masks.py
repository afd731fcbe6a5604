"""Heatmap → mask: thresholds (absolute, percentile, Otsu), blur, grow/shrink, fill holes,
largest component / bounding box, feather and invert.

Masks follow ComfyUI's MASK convention: float32 (B, H, W) in [0, 1]. Boolean helpers take and
return bool (B, H, W) tensors. Pure torch + kornia; no scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

ThresholdMode = Literal["absolute", "percentile", "otsu"]
KeepMode = Literal["all", "largest", "bbox"]

_FLAT_RTOL = 1e-6  # a map whose span is below this fraction of its magnitude counts as constant
_SNAP = 1e-6  # feathered values this close to 0 or 1 are snapped to it


@dataclass(frozen=True)
class MaskOptions:
    """How `heatmap_to_mask` turns a heatmap into a mask.

    Pipeline: resize → blur → normalize → threshold → grow → fill_holes → keep → feather → invert.

    Attributes:
        threshold_mode: "absolute" (``threshold``), "percentile" (hottest ``area``) or "otsu".
        threshold: absolute mode cut-off; in [0, 1] on the normalised map when ``normalize``.
        area: percentile mode: fraction of hottest pixels kept, 0..1 (ties at the image minimum
            are never kept, so mostly-zero maps do not flood).
        blur: Gaussian sigma in pixels applied to the heatmap before thresholding.
        grow: pixels to dilate (positive) or erode (negative) with a disk.
        fill_holes: fill background regions not connected to the image border.
        keep: "all", "largest" connected component, or "bbox" (fill the kept pixels' box).
        feather: soft-edge half-width in pixels; values ramp 0 → 1 across ±feather of the edge.
        invert: return ``1 - mask``.
        normalize: per-image min–max normalisation before thresholding.
    """

    threshold_mode: ThresholdMode = "otsu"
    threshold: float = 0.5
    area: float = 0.2
    blur: float = 0.0
    grow: int = 0
    fill_holes: bool = False
    keep: KeepMode = "all"
    feather: float = 0.0
    invert: bool = False
    normalize: bool = True

    def __post_init__(self) -> None:
        _check_choice("threshold_mode", self.threshold_mode, get_args(ThresholdMode))
        _check_choice("keep", self.keep, get_args(KeepMode))
        _check_real("threshold", self.threshold, None, "the absolute threshold")
        if self.normalize and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(
                f"MaskOptions.threshold must be in [0, 1] when normalize=True (it applies to the "
                f"min-max normalised heatmap), got {self.threshold!r}. Use a value in [0, 1], or "
                "set normalize=False to threshold raw heatmap values."
            )
        _check_real(
            "area", self.area, 1.0, "the fraction of pixels kept (0.2 keeps the hottest 20%)"
        )
        _check_real("blur", self.blur, math.inf, "a Gaussian sigma in pixels; use 0 for no blur")
        _check_real("feather", self.feather, math.inf, "the soft-edge width in pixels; 0 = hard")
        if not isinstance(self.grow, Integral) or isinstance(self.grow, bool):
            raise ValueError(
                f"MaskOptions.grow must be a whole number of pixels (negative shrinks), "
                f"got {self.grow!r}."
            )
        for name in ("fill_holes", "invert", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"MaskOptions.{name} must be True or False, got {getattr(self, name)!r}."
                )


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"MaskOptions.{name} must be one of {options}; got {value!r}.")


def _check_real(name: str, value: object, high: float | None, meaning: str) -> None:
    """Finite real; with ``high`` also in [0, high] (``math.inf`` = any non-negative value)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and high is not None:
        ok = 0.0 <= value <= high
    if not ok:
        where = (
            "a finite number"
            if high is None
            else ("a finite number >= 0" if high == math.inf else f"a number in [0, {high:g}]")
        )
        raise ValueError(f"MaskOptions.{name} must be {where} ({meaning}); got {value!r}.")


def heatmap_to_mask(
    heatmap: torch.Tensor,
    options: MaskOptions | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Turn heatmaps (B, H, W) or (H, W), any range, into a float32 (B, H, W) mask in [0, 1].

    ``options=None`` means ``MaskOptions()``. NaN/inf count as 0. ``size=(H_out, W_out)``
    resizes the heatmap bilinearly first. Constant heatmaps, or thresholds that select nothing,
    give all-zero masks (before ``invert``). The result is on the input's device, contiguous.
    """
    opts = options if options is not None else MaskOptions()
    h = _as_batch(heatmap)
    out_hw = _check_size(size) if size is not None else (h.shape[1], h.shape[2])
    if h.numel() == 0 or 0 in out_hw:
        return h.new_zeros((h.shape[0], *out_hw))
    if out_hw != tuple(h.shape[1:]):
        h = F.interpolate(
            h[:, None], size=out_hw, mode="bilinear", align_corners=False, antialias=True
        )[:, 0]
    if opts.blur > 0:
        h = _gaussian(h, opts.blur, math.ceil(3 * opts.blur))
    flat = _is_flat(h)
    if opts.normalize:
        h = normalize_heatmap(h)
    mask = _threshold(h, opts) & ~flat[:, None, None]
    if opts.grow:
        mask = grow_mask(mask, opts.grow)
    if opts.fill_holes:
        mask = fill_holes(mask)
    if opts.keep == "largest":
        mask = keep_largest_component(mask)
    elif opts.keep == "bbox":
        mask = fill_bbox(mask)
    out = mask.float()
    if opts.feather > 0:
        out = feather_mask(out, opts.feather)
    if opts.invert:
        out = 1.0 - out
    return out.contiguous()


def _as_batch(heatmap: torch.Tensor) -> torch.Tensor:
    """Detached float32 (B, H, W) copy with non-finite values set to 0."""
    if not isinstance(heatmap, torch.Tensor):
        raise ValueError(f"heatmap must be a torch.Tensor, got {type(heatmap).__name__}.")
    if heatmap.ndim not in (2, 3):
        raise ValueError(
            f"heatmap must have shape (B, H, W) or (H, W), got {tuple(heatmap.shape)}; "
            "squeeze or select the channel dimension first."
        )
    h = heatmap.detach().to(torch.float32)
    h = h[None] if h.ndim == 2 else h
    return torch.where(torch.isfinite(h), h, torch.zeros((), device=h.device))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 0 for s in size)
    )
    if not ok:
        raise ValueError(f"size must be (height, width) in pixels, got {size!r}.")
    return int(size[0]), int(size[1])


def _is_flat(h: torch.Tensor) -> torch.Tensor:
    """(B,) bool: images whose value span is negligible relative to their magnitude."""
    lo, hi = h.amin(dim=(-2, -1)), h.amax(dim=(-2, -1))
    return (hi - lo) <= _FLAT_RTOL * torch.maximum(lo.abs(), hi.abs())


def normalize_heatmap(heatmap: torch.Tensor) -> torch.Tensor:
    """Per-image min–max normalisation over the last two dims to [0, 1].

    Non-finite values count as 0; constant images become all zeros.
    """
    h = heatmap.detach()
    h = h.float() if not h.is_floating_point() else h
    h = torch.where(torch.isfinite(h), h, torch.zeros((), dtype=h.dtype, device=h.device))
    lo = h.amin(dim=(-2, -1), keepdim=True)
    span = h.amax(dim=(-2, -1), keepdim=True) - lo
    scale = torch.where(_is_flat(h)[..., None, None], 0.0, 1.0 / span)
    return ((h - lo) * scale).clamp(0.0, 1.0)


def _threshold(h: torch.Tensor, opts: MaskOptions) -> torch.Tensor:
    if opts.threshold_mode == "absolute":
        return h > opts.threshold
    if opts.threshold_mode == "otsu":
        return h > otsu_threshold(h, batched=True)[:, None, None]
    return _top_area(h, opts.area)


def _top_area(h: torch.Tensor, area: float) -> torch.Tensor:
    """Keep the hottest ``area`` fraction of each image; pixels at the image minimum never count."""
    flat = h.flatten(1)
    n = flat.shape[1]
    k = min(n, math.floor(area * n + 0.5))
    if k == 0:
        return torch.zeros_like(h, dtype=torch.bool)
    kth = flat.kthvalue(n - k + 1, dim=1).values[:, None, None]
    lo = flat.amin(dim=1)[:, None, None]
    return (h >= kth) & (h > lo)


def otsu_threshold(values: torch.Tensor, bins: int = 256, batched: bool = False) -> torch.Tensor:
    """Otsu's threshold: values ``> t`` are foreground. Non-finite values are ignored.

    ``batched=False``: one population, returns a 0-d tensor (use ``float(t)``).
    ``batched=True``: dim 0 is the batch, returns (B,). A constant population returns its value.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}.")
    v = values.detach().to(torch.float64)
    v = v.reshape(v.shape[0], -1) if batched else v.reshape(1, -1)
    valid = torch.isfinite(v)
    lo = torch.where(valid, v, math.inf).amin(dim=1, keepdim=True)
    hi = torch.where(valid, v, -math.inf).amax(dim=1, keepdim=True)
    lo = torch.where(valid.any(dim=1, keepdim=True), lo, 0.0)
    span = torch.where(valid.any(dim=1, keepdim=True), hi - lo, 0.0)
    idx = ((v - lo) / span.clamp_min(1e-300) * bins).floor().clamp(0, bins - 1)
    idx = torch.where(valid, idx, 0.0).long()
    hist = torch.zeros(v.shape[0], bins, dtype=torch.float64, device=v.device)
    hist.scatter_add_(1, idx, valid.to(torch.float64))
    total = hist.sum(dim=1, keepdim=True).clamp_min(1.0)
    omega = hist.cumsum(dim=1) / total  # class-0 weight for a cut after each bin
    mu = (hist * torch.arange(bins, dtype=torch.float64, device=v.device)).cumsum(dim=1) / total
    denom = omega * (1.0 - omega)
    between = torch.where(denom > 0, (mu[:, -1:] * omega - mu) ** 2 / denom.clamp_min(1e-300), -1.0)
    best = between.argmax(dim=1, keepdim=True)
    t = lo + (best + 1).to(torch.float64) / bins * span
    t = torch.where((denom > 0).any(dim=1, keepdim=True), t, lo)[:, 0].to(torch.float32)
    return t if batched else t[0]


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift the last two dims by (dy, dx), filling with zeros/False."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _dilate_disk(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Exact dilation by the disk {dx² + dy² <= r²}, as a union of shifted row segments: O(r) ops."""
    radius = min(radius, math.ceil(math.hypot(*mask.shape[-2:])))  # larger disks change nothing
    out = torch.zeros_like(mask)
    rows, width = mask, 0  # rows: OR over the horizontal window [-width, width]
    for dy in range(radius, -1, -1):
        while width < math.isqrt(radius * radius - dy * dy):
            rows = rows | _shift(rows, 0, 1) | _shift(rows, 0, -1)
            width += 1
        out |= _shift(rows, dy, 0)
        if dy:
            out |= _shift(rows, -dy, 0)
    return out


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (pixels < 0) a bool (B, H, W) mask with a disk of radius |pixels|.

    Outside the image is neutral: erosion does not eat in from the image border.
    """
    if pixels > 0:
        return _dilate_disk(mask, pixels)
    if pixels < 0:
        return ~_dilate_disk(~mask, -pixels)
    return mask


def _neighbour_min(x: torch.Tensor, connectivity: int, fill: int) -> torch.Tensor:
    """Minimum over each pixel and its 4- or 8-neighbours (outside = ``fill``)."""
    p = F.pad(x, (1, 1, 1, 1), value=fill)
    if connectivity == 8:
        r = torch.minimum(torch.minimum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
        return torch.minimum(torch.minimum(r[:, :-2], r[:, 1:-1]), r[:, 2:])
    c = p[:, 1:-1, 1:-1]
    vertical = torch.minimum(p[:, :-2, 1:-1], p[:, 2:, 1:-1])
    horizontal = torch.minimum(p[:, 1:-1, :-2], p[:, 1:-1, 2:])
    return torch.minimum(c, torch.minimum(vertical, horizontal))


def _component_roots(mask: torch.Tensor, connectivity: int) -> torch.Tensor:
    """int64 (B, H, W): each foreground pixel's smallest flat index (over the whole batch) in its
    component; background = ``mask.numel()``. Min-label hooking with pointer jumping."""
    n = mask.numel()
    roots = torch.where(mask, torch.arange(n, device=mask.device).view(mask.shape), n)
    parent = torch.arange(n + 1, device=mask.device)
    fg = mask.flatten()
    while True:
        lowest = _neighbour_min(roots, connectivity, n)
        parent.scatter_reduce_(0, roots.flatten()[fg], lowest.flatten()[fg], reduce="amin")
        while not torch.equal(grand := parent[parent], parent):
            parent = grand
        new = parent[roots]
        if torch.equal(new, roots):
            return roots
        roots = new


def connected_components(mask: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Label a bool (B, H, W) mask's 4- or 8-connected regions.

    Returns int64 (B, H, W): 0 = background, else 1 + the row-major index of the region's first
    pixel in its image (stable but not consecutive).
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}.")
    b, h, w = mask.shape
    roots = _component_roots(mask, connectivity)
    offset = (torch.arange(b, device=mask.device) * (h * w))[:, None, None]
    return torch.where(mask, roots - offset + 1, 0)


def keep_largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep each image's largest 8-connected region (ties: the first in row-major order)."""
    b, h, w = mask.shape
    roots = _component_roots(mask, 8)
    counts = torch.bincount(roots.flatten(), minlength=mask.numel() + 1)[:-1].view(b, h * w)
    best = counts.argmax(dim=1) + torch.arange(b, device=mask.device) * (h * w)
    return mask & (roots == best[:, None, None])


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """Fill background regions (4-connected) that do not touch the image border."""
    roots = _component_roots(~mask, 4)
    edge = torch.ones_like(mask)
    edge[:, 1:-1, 1:-1] = False
    outside = torch.zeros(mask.numel() + 1, dtype=torch.bool, device=mask.device)
    outside[roots[edge & ~mask]] = True
    return mask | ~outside[roots]


def _between_first_and_last(x: torch.Tensor) -> torch.Tensor:
    """Along dim 1: True from the first True to the last True, inclusive."""
    return (x.cumsum(dim=1) > 0) & (x.flip(1).cumsum(dim=1).flip(1) > 0)


def fill_bbox(mask: torch.Tensor) -> torch.Tensor:
    """Replace each image's mask by the filled bounding box of its pixels (empty stays empty)."""
    rows = _between_first_and_last(mask.any(dim=2))
    cols = _between_first_and_last(mask.any(dim=1))
    return rows[:, :, None] & cols[:, None, :]


def _gaussian(x: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) with a (2r+1)² kernel and replicated borders."""
    k = 2 * radius + 1
    return gaussian_blur2d(x[:, None], (k, k), (sigma, sigma), border_type="replicate")[:, 0]


def feather_mask(mask: torch.Tensor, feather: float) -> torch.Tensor:
    """Soften a float (B, H, W) mask's edges: Gaussian with sigma = feather/3, truncated at
    ``ceil(feather)`` pixels, so values are strictly between 0 and 1 only near edges."""
    if feather <= 0:
        return mask
    out = _gaussian(mask, feather / 3.0, math.ceil(feather)).clamp(0.0, 1.0)
    out = torch.where(out < _SNAP, 0.0, out)
    return torch.where(out > 1.0 - _SNAP, 1.0, out)


def mask_to_box(mask: torch.Tensor, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of pixels ``> threshold`` in a (H, W) or (1, H, W) mask.

    x1 and y1 are exclusive (PIL crop convention: width = x1 - x0). None when nothing is inside.
    """
    m = mask[0] if mask.ndim == 3 and mask.shape[0] == 1 else mask
    if m.ndim != 2:
        raise ValueError(
            f"mask_to_box expects one mask (H, W) or (1, H, W), got {tuple(mask.shape)}; "
            "call it per image."
        )
    inside = m.detach().float() > threshold
    ys = torch.nonzero(inside.any(dim=1)).flatten()
    xs = torch.nonzero(inside.any(dim=0)).flatten()
    if ys.numel() == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1
