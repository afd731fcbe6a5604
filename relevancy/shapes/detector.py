"""A CLIP-free object detector for shapes-world images.

1. Colour segmentation: a pixel belongs to an object when its chroma (max - min over RGB) is at
   least ``chroma_min`` (backgrounds are near-grey). Its colour is the palette entry whose direction
   from the background colour (median of the other pixels) is closest to the pixel's own direction,
   so edge pixels blended with the background (e.g. blurred orange, which drifts towards yellow)
   keep their object's colour.
2. Connected components (8-connectivity; star tips can touch only diagonally) per colour; components smaller than ``min_area_frac`` of
   the image are dropped as noise.
3. Shape: the component's core (pixels at least half covered by the colour, which keeps the
   notches of a blurred star) is cropped to its box, resized to ``template_px`` squared and compared
   with each shape's template (the mean of the world's own masks, likewise normalised); the
   highest soft IoU wins. Size: "large" when the longer box side is at least ``large_frac`` of the
   image side (the boundary between the world's size ranges).

Later benchmarks use it to judge generated images, so it only assumes the world's palette and
shapes, not exact pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .world import COLOUR_NAMES, COLOURS, SHAPES, Scene, ShapeWorld, WorldConfig

_PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)


@dataclass
class Detection:
    """One detected object: attributes, boolean HxW mask, box (x0, y0, x1, y1 exclusive), shape score."""

    colour: str
    shape: str
    size: str
    mask: np.ndarray
    box: tuple[int, int, int, int]
    score: float


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labels of a boolean mask (0 = background, 1..n), by min-propagation."""
    h, w = mask.shape
    big = h * w + 1
    lab = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), big)
    while True:
        m = lab.copy()
        m[1:] = np.minimum(m[1:], lab[:-1])
        m[:-1] = np.minimum(m[:-1], lab[1:])
        m[:, 1:] = np.minimum(m[:, 1:], lab[:, :-1])
        m[:, :-1] = np.minimum(m[:, :-1], lab[:, 1:])
        m[1:, 1:] = np.minimum(m[1:, 1:], lab[:-1, :-1])
        m[:-1, :-1] = np.minimum(m[:-1, :-1], lab[1:, 1:])
        m[1:, :-1] = np.minimum(m[1:, :-1], lab[:-1, 1:])
        m[:-1, 1:] = np.minimum(m[:-1, 1:], lab[1:, :-1])
        m = np.where(mask, m, big)
        if np.array_equal(m, lab):
            break
        lab = m
    ids = np.unique(lab[mask])
    out = np.zeros((h, w), dtype=np.int32)
    remap = np.zeros(big + 1, dtype=np.int32)
    remap[ids] = np.arange(1, len(ids) + 1)
    out[mask] = remap[lab[mask]]
    return out, len(ids)


def _normalise_crop(mask: np.ndarray, px: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    img = Image.fromarray(crop * 255.0).resize((px, px), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


class Detector:
    """Colour segmentation + connected components + shape templates; no learned CLIP involved."""

    def __init__(
        self,
        world: ShapeWorld | None = None,
        chroma_min: float = 60.0,
        min_area_frac: float = 0.006,
        template_px: int = 16,
        large_frac: float = 19.0 / 64.0,
    ) -> None:
        world = world or ShapeWorld(WorldConfig())
        self.chroma_min = chroma_min
        self.min_area_frac = min_area_frac
        self.template_px = template_px
        self.large_frac = large_frac
        temps = []
        for shape in SHAPES:
            ms = [m for (s, _), m in world.masks.items() if s == shape]
            temps.append(np.mean([_normalise_crop(m, template_px) for m in ms], axis=0))
        self.templates = np.stack(temps)  # (S, T, T)

    def classify_shape(self, mask: np.ndarray) -> tuple[str, float]:
        """Best-matching shape of one object mask and its soft IoU with the template."""
        x = _normalise_crop(mask, self.template_px)[None]
        inter = np.minimum(x, self.templates).sum(axis=(1, 2))
        union = np.maximum(x, self.templates).sum(axis=(1, 2))
        iou = inter / np.maximum(union, 1e-6)
        k = int(iou.argmax())
        return SHAPES[k], float(iou[k])

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Objects in an HxWx3 uint8 image, largest first."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
        img = image.astype(np.float32)
        h, w = img.shape[:2]
        fg = (img.max(axis=2) - img.min(axis=2)) >= self.chroma_min
        bg = np.median(img[~fg], axis=0) if (~fg).any() else np.full(3, 220.0, np.float32)
        v = img - bg
        ref = _PALETTE - bg
        ref_n = ref / (np.linalg.norm(ref, axis=1, keepdims=True) + 1e-6)
        cls = (v @ ref_n.T).argmax(axis=2)
        # coverage of a pixel by its colour (1 inside, ~0.5 on a blurred edge)
        alpha = np.take_along_axis(v @ ref.T, cls[..., None], 2)[..., 0]
        alpha /= (ref**2).sum(axis=1)[cls]
        min_area = max(4, int(round(self.min_area_frac * h * w)))
        out: list[Detection] = []
        for ci, colour in enumerate(COLOUR_NAMES):
            m = fg & (cls == ci)
            if m.sum() < min_area:
                continue
            lab, n = label_components(m)
            for k in range(1, n + 1):
                comp = lab == k
                if comp.sum() < min_area:
                    continue
                ys, xs = np.nonzero(comp)
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                core = comp & (alpha >= 0.5)
                shape, score = self.classify_shape(core if core.sum() >= min_area else comp)
                side = max(box[2] - box[0], box[3] - box[1])
                size = "large" if side >= self.large_frac * max(h, w) else "small"
                out.append(Detection(colour, shape, size, comp, box, score))
        out.sort(key=lambda det: -int(det.mask.sum()))
        return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


def detector_accuracy(detector: Detector, scenes: Sequence[Scene]) -> dict[str, float]:
    """Scene accuracy (count right and every object found with right colour+shape), object accuracy."""
    ok_scenes = ok_objects = n_objects = ok_size = 0
    for s in scenes:
        dets = detector.detect(s.image)
        good = len(dets) == len(s.objects)
        for o in s.objects:
            n_objects += 1
            best = max(dets, key=lambda d, o=o: _iou(d.mask, o.mask), default=None)
            hit = best is not None and _iou(best.mask, o.mask) >= 0.5
            right = hit and best.colour == o.colour and best.shape == o.shape
            ok_objects += right
            ok_size += bool(right and best.size == o.size)
            good = good and right
        ok_scenes += good
    return {
        "detector_acc": ok_scenes / max(len(scenes), 1),
        "detector_object_acc": ok_objects / max(n_objects, 1),
        "detector_size_acc": ok_size / max(n_objects, 1),
    }
