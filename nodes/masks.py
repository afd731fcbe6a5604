"""Heatmap to Mask node."""

from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..relevancy.masks import MaskOptions, heatmap_to_mask
from .common import CATEGORY, PREFIX, check_combos, mask_batch, progress_callback


def _target_size(heat: torch.Tensor, image: torch.Tensor | None) -> tuple[int, int] | None:
    """Output size from the optional reference image; refuses sizes that would misalign."""
    if image is None:
        return None
    if image.ndim != 4:
        raise ValueError(f"image: expected an IMAGE batch (B, H, W, C); got {tuple(image.shape)}.")
    (hb, hh, hw), (ib, ih, iw) = heat.shape, image.shape[:3]
    if abs(hh / hw - ih / iw) > 0.02:
        raise ValueError(
            f"heatmap is {hw}×{hh} but image is {iw}×{ih}: the aspect ratios differ, so the mask would "
            "not line up. Use the heatmaps made from this image (CLIP Relevancy) or disconnect 'image'."
        )
    if hb % ib != 0:
        raise ValueError(
            f"heatmap batch ({hb}) is not a multiple of the image batch ({ib}); CLIP Relevancy gives "
            "phrases × images maps. Connect the same image batch that made the heatmaps."
        )
    return (ih, iw)


class HeatmapToMask(io.ComfyNode):
    """Turns relevancy heatmaps into clean masks for inpainting, regional prompts and compositing."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "HeatmapToMask",
            display_name="Heatmap to Mask",
            category=CATEGORY + "/mask",
            description=(
                "Thresholds heatmaps (absolute, top-area percentile or automatic Otsu) and cleans the "
                "result: blur, grow/shrink, fill holes, keep the largest blob or its box, feather, "
                "invert. Output is a standard MASK (B,H,W, 0..1); nothing found gives an empty mask."
            ),
            inputs=[
                io.Mask.Input("heatmap", tooltip="Heatmaps (e.g. CLIP Relevancy's 'heatmaps' output)."),
                io.Combo.Input("threshold_mode", options=["otsu", "absolute", "percentile"], default="otsu",
                               tooltip="'otsu' picks the cut automatically; 'absolute' keeps heat above "
                                       "'threshold'; 'percentile' keeps the hottest 'area' fraction."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Cut-off for 'absolute' mode, on the map scaled to 0..1."),
                io.Float.Input("area", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of pixels to keep in 'percentile' mode."),
                io.Float.Input("blur", default=0.0, min=0.0, max=64.0, step=0.5,
                               tooltip="Gaussian blur (sigma, pixels) of the heatmap before thresholding; "
                                       "smooths blocky patch maps."),
                io.Int.Input("grow", default=0, min=-512, max=512,
                             tooltip="Grow (positive) or shrink (negative) the mask by this many pixels."),
                io.Boolean.Input("fill_holes", default=False, tooltip="Fill holes inside mask regions."),
                io.Combo.Input("keep", options=["all", "largest", "bbox"], default="all",
                               tooltip="Keep all regions, only the largest connected region, or fill the "
                                       "bounding box of what is kept."),
                io.Float.Input("feather", default=0.0, min=0.0, max=256.0, step=0.5,
                               tooltip="Soft edge width in pixels (applied last)."),
                io.Boolean.Input("invert", default=False, tooltip="Invert the final mask."),
                io.Image.Input("image", optional=True,
                               tooltip="Optional: resize the masks to this image's size (same aspect "
                                       "ratio required)."),
            ],
            outputs=[io.Mask.Output(display_name="mask",
                                    tooltip="Masks (B,H,W) in 0..1, one per heatmap, ready for "
                                            "SetLatentNoiseMask, ConditioningSetMask, ImageCompositeMasked.")],
        )

    @classmethod
    def validate_inputs(cls, threshold_mode: str, keep: str) -> bool | str:
        return check_combos(cls, threshold_mode=threshold_mode, keep=keep)

    @classmethod
    def execute(cls, heatmap: torch.Tensor, threshold_mode: str, threshold: float, area: float, blur: float,
                grow: int, fill_holes: bool, keep: str, feather: float, invert: bool,
                image: torch.Tensor | None = None) -> io.NodeOutput:
        heat = mask_batch(heatmap, "heatmap")
        size = _target_size(heat, image)
        opts = MaskOptions(threshold_mode=threshold_mode, threshold=threshold, area=area, blur=blur, grow=grow,
                           fill_holes=fill_holes, keep=keep, feather=feather, invert=invert)
        progress = progress_callback(heat.shape[0])
        masks = []
        with torch.inference_mode(False):
            for k in range(heat.shape[0]):  # one map at a time: progress, and cancel between maps
                masks.append(heatmap_to_mask(heat[k:k + 1].detach().clone(), opts, size=size))
                progress(k + 1, heat.shape[0])
        return io.NodeOutput(torch.cat(masks).to(mm.intermediate_device()))
