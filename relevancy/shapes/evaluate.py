"""Metrics of a CLIP on the shapes world (all scenes drawn from one seed; see ``evaluate``).

Recognition (similarity only):
    retrieval_top1   image -> caption among groups of up to 256 scenes (1-3 objects, "all" split);
                     a hit when the retrieved caption is true of the image.
    colour_acc       single-object scenes: argmax over "a <colour> <true shape>" is the true colour.
    shape_acc        single-object scenes: argmax over "a <true colour> <shape>" is the true shape.
    combo_acc        single-object scenes: argmax over all 30 "a <colour> <shape>" captions.
    binding_acc      two objects, distinct colours and shapes: "a c1 s1 and a c2 s2" beats the
                     colour-swapped "a c2 s1 and a c1 s2".
    relation_acc     two objects with a clear relation: "A rel B" beats "A opposite-rel B";
                     relation_acc_left_right: the same on left/right relations only.
    *_heldout        the same on scenes holding a held-out colour x shape pair.

Relevancy (the pack's engine, default settings: logit score, all layers):
    pointing_game    two objects with distinct colours; for each object's phrase "a c s" the argmax
                     pixel of its image map (bilinearly upsampled to the image) lies inside that
                     object's mask (the issue's definition). With a patch-8 model the upsampled argmax
                     is always a patch centre, so edge patches miss even when mostly object.
    pointing_game_tol4px  the same, also counting an argmax within ``POINTING_TOLERANCE`` (4 px at
                     64x64, scaled with the image) of the mask: the pointing game's usual 15-pixel
                     tolerance at 224 px, scaled down.
    pointing_game_patch   the argmax patch (native map resolution) overlaps the object's mask.
    mask_iou         IoU of ``masks.heatmap_to_mask`` (default ``MaskOptions``) with the object mask.
    pointing_game_ceiling, mask_iou_ceiling  the same two scores for ideal maps at the model's
                     patch grid (each patch's coverage by the object): the most that patch size allows.
    shape_word_share median over two-object captions "a c1 s1 and a c2 s2" of
                     mean(shape-word relevance) / mean(colour-word relevance) (text EOT row).

Detector:
    detector_acc     the CLIP-free detector's scene accuracy (``detector.detector_accuracy``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..explain import relevancy_maps
from ..images import preprocess_tensor, upsample
from ..loading import ClipSpec, LoadedClip
from ..masks import heatmap_to_mask
from ..tokens import tokenize, word_relevance
from . import world as W
from .detector import Detector, detector_accuracy

POINTING_TOLERANCE = 4.0 / 64.0  # fraction of the image side


def wrap_model(model: torch.nn.Module, sidecar: dict) -> LoadedClip:
    """A ``LoadedClip`` around an in-memory open_clip CLIP (e.g. during training)."""
    return LoadedClip(model=model, spec=ClipSpec(dict(sidecar["model_cfg"]), dict(sidecar["preprocess_cfg"]),
                                                 "open_clip"), path=None)


class Scorer:
    """Cosine similarities between scene images and captions, with cached text features."""

    def __init__(self, clip: LoadedClip, batch_size: int = 256) -> None:
        self.clip = clip
        self.batch_size = batch_size
        self._text: dict[str, torch.Tensor] = {}

    def ids(self, texts: Sequence[str]) -> torch.Tensor:
        ctx = self.clip.context_length
        return torch.stack([tokenize(t, ctx).padded_ids(ctx) for t in texts])

    def pixels(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        return preprocess_tensor(self.clip, x)

    @torch.no_grad()
    def image_features(self, images: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = self.pixels(images[i:i + self.batch_size]).to(self.clip.device, self.clip.dtype)
            out.append(F.normalize(self.clip.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        todo = sorted({t for t in texts if t not in self._text})
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            g = self.clip.model.encode_text(self.ids(chunk).to(self.clip.device))
            for t, v in zip(chunk, F.normalize(g.float(), dim=-1).cpu(), strict=True):
                self._text[t] = v
        return torch.stack([self._text[t] for t in texts])


def _images(scenes: Sequence[W.Scene]) -> np.ndarray:
    return np.stack([s.image for s in scenes])


def retrieval_top1(scorer: Scorer, scenes: Sequence[W.Scene], rng: np.random.Generator,
                   group: int = 256) -> float:
    hits = 0
    for k in range(0, len(scenes), group):
        chunk = scenes[k:k + group]
        descs = [W.describe(s, rng) for s in chunk]
        sims = scorer.image_features(_images(chunk)) @ scorer.text_features([d.text() for d in descs]).t()
        for i, j in enumerate(sims.argmax(dim=1).tolist()):
            hits += W.is_true(descs[j], chunk[i].objects)
    return hits / max(len(scenes), 1)


def attribute_accuracy(scorer: Scorer, scenes: Sequence[W.Scene]) -> dict[str, float]:
    """colour_acc, shape_acc, combo_acc on single-object scenes."""
    f = scorer.image_features(_images(scenes))
    combos = list(W.ALL_COMBOS)
    g = scorer.text_features([W.Phrase(c, s).text() for c, s in combos])
    sims = f @ g.t()  # (N, 30)
    col = shp = cmb = 0
    for n, sc in enumerate(scenes):
        o = sc.objects[0]
        by_colour = [sims[n, combos.index((c, o.shape))] for c in W.COLOUR_NAMES]
        by_shape = [sims[n, combos.index((o.colour, s))] for s in W.SHAPES]
        col += W.COLOUR_NAMES[int(np.argmax(by_colour))] == o.colour
        shp += W.SHAPES[int(np.argmax(by_shape))] == o.shape
        cmb += combos[int(sims[n].argmax())] == (o.colour, o.shape)
    n = max(len(scenes), 1)
    return {"colour_acc": col / n, "shape_acc": shp / n, "combo_acc": cmb / n}


def pair_accuracy(scorer: Scorer, scenes: Sequence[W.Scene], kind: str,
                  relations: Sequence[str] = W.RELATIONS) -> float:
    """binding ("colour-swapped" negative) or relation ("opposite relation") accuracy on 2-object
    scenes; for relations, only scenes whose relation is in ``relations``."""
    pos, neg, imgs = [], [], []
    for s in scenes:
        a, b = s.objects[:2]
        if kind == "binding":
            if a.colour == b.colour or a.shape == b.shape:
                continue
            d = W.Description((a.phrase(), b.phrase()))
            pos.append(d.text())
            neg.append(W.swap_colours(d).text())
        else:
            rel = W.relation_of(a, b)
            if rel is None or rel not in relations:
                continue
            d = W.Description((a.phrase(), b.phrase()), rel)
            pos.append(d.text())
            neg.append(W.swap_relation(d).text())
        imgs.append(s.image)
    if not imgs:
        return float("nan")
    f = scorer.image_features(np.stack(imgs))
    sp = (f * scorer.text_features(pos)).sum(-1)
    sn = (f * scorer.text_features(neg)).sum(-1)
    return float((sp > sn).float().mean())


def _pointing_items(scenes: Sequence[W.Scene]) -> list[tuple[W.Scene, W.SceneObject]]:
    """(scene, object) per object of the two-object scenes with distinct colours."""
    return [(s, o) for s in scenes if len(s.objects) == 2 and s.objects[0].colour != s.objects[1].colour
            for o in s.objects]


def score_maps(maps: torch.Tensor, objects: Sequence[W.SceneObject], size: tuple[int, int]) -> dict[str, list]:
    """Pointing hits (strict, tolerant, patch) and mask IoUs of image maps (P, gh, gw) vs object masks."""
    h, w = size
    up = upsample(maps, (h, w))
    masks = heatmap_to_mask(maps, size=(h, w)) > 0.5
    gh, gw = maps.shape[1:]
    tol = POINTING_TOLERANCE * max(h, w)
    out: dict[str, list] = {"strict": [], "tol": [], "patch": [], "iou": []}
    for o, m, mk, raw in zip(objects, up, masks, maps, strict=True):
        flat = int(m.flatten().argmax())
        y, x = flat // w, flat % w
        ys, xs = np.nonzero(o.mask)
        out["strict"].append(bool(o.mask[y, x]))
        out["tol"].append(bool(((ys - y) ** 2 + (xs - x) ** 2).min() <= tol**2))
        out["patch"].append(bool(W.patch_coverage(o.mask, (gh, gw)).ravel()[int(raw.flatten().argmax())] > 0))
        gt = torch.from_numpy(o.mask)
        union = (gt | mk).sum().item()
        out["iou"].append((gt & mk).sum().item() / union if union else 0.0)
    return out


def _summary(scores: dict[str, list], suffix: str = "") -> dict[str, float]:
    names = {"strict": "pointing_game", "tol": "pointing_game_tol4px", "patch": "pointing_game_patch",
             "iou": "mask_iou"}
    return {name + suffix: float(np.mean(scores[k])) if scores.get(k) else float("nan") for k, name in names.items()}


def ceiling_metrics(scenes: Sequence[W.Scene], grid: tuple[int, int]) -> dict[str, float]:
    """pointing_game_ceiling, mask_iou_ceiling: the scores of ideal maps at the model's patch grid.

    The ideal map of an object is its mask's coverage of each patch; no map at that resolution does
    better on average, so these bound what a model with this patch size can reach.
    """
    items = _pointing_items(scenes)
    if not items:
        return {"pointing_game_ceiling": float("nan"), "mask_iou_ceiling": float("nan")}
    h, w = items[0][0].image.shape[:2]
    gh, gw = grid
    cov = np.stack([W.patch_coverage(o.mask, (gh, gw)) for _, o in items])
    scores = score_maps(torch.from_numpy(cov.astype(np.float32)), [o for _, o in items], (h, w))
    res = _summary(scores, "_ceiling")
    return {k: res[k] for k in ("pointing_game_ceiling", "mask_iou_ceiling")}


def relevancy_metrics(clip: LoadedClip, scenes: Sequence[W.Scene], batch_size: int = 64) -> dict[str, float]:
    """pointing_game, mask_iou (object phrases) and shape_word_share (two-object captions)."""
    scorer = Scorer(clip)
    ctx = clip.context_length
    items = _pointing_items(scenes)
    maps = []
    for k in range(0, len(items), batch_size):
        chunk = items[k:k + batch_size]
        imgs = scorer.pixels(np.stack([s.image for s, _ in chunk]))
        ids = torch.stack([tokenize(o.phrase().text(), ctx).padded_ids(ctx) for _, o in chunk])
        maps.append(relevancy_maps(clip, imgs, ids, want_text=False).image.float().cpu())
    scores = score_maps(torch.cat(maps), [o for _, o in items], items[0][0].image.shape[:2]) if items else {}
    # text relevance of shape vs colour words
    pairs = [(s, W.Description((s.objects[0].phrase(), s.objects[1].phrase())))
             for s in scenes if len(s.objects) == 2]
    ratios = []
    colours, shapes = set(W.COLOUR_NAMES), set(W.SHAPES)
    for k in range(0, len(pairs), batch_size):
        chunk = pairs[k:k + batch_size]
        prompts = [tokenize(d.text(), ctx) for _, d in chunk]
        imgs = scorer.pixels(np.stack([s.image for s, _ in chunk]))
        ids = torch.stack([p.padded_ids(ctx) for p in prompts])
        out = relevancy_maps(clip, imgs, ids, want_image=False)
        for p, row in zip(prompts, out.text.float().cpu(), strict=True):
            rel = word_relevance(p, row[1:p.eot_index])
            sh = [r for wd, r in zip(p.words, rel, strict=True) if wd.text in shapes]
            co = [r for wd, r in zip(p.words, rel, strict=True) if wd.text in colours]
            if co and np.mean(co) > 0:
                ratios.append(float(np.mean(sh) / np.mean(co)))
    return {**_summary(scores), "shape_word_share": float(np.median(ratios)) if ratios else float("nan")}


def make_probe(sidecar: dict, n: int = 200, seed: int = 1000) -> Callable[[torch.nn.Module, int], dict[str, float]]:
    """A cheap training-time probe (its own fixed scenes, seed distinct from evaluation's default)."""
    world = W.ShapeWorld(W.WorldConfig(image_size=int(sidecar["preprocess_cfg"]["size"])))
    rng = np.random.default_rng(seed)
    single = world.batch(rng, n, split="all", n_objects=1)
    double = world.batch(rng, n, split="all", n_objects=2)

    def probe(model: torch.nn.Module, step: int) -> dict[str, float]:
        clip = wrap_model(model, sidecar)
        scorer = Scorer(clip)
        out = attribute_accuracy(scorer, single)
        out["binding_acc"] = pair_accuracy(scorer, double, "binding")
        out.update(relevancy_metrics(clip, double[: n // 2]))
        return {f"probe_{k}": round(v, 4) for k, v in out.items()}

    return probe


def evaluate(
    clip: LoadedClip,
    n: int = 500,
    seed: int = 0,
    relevancy: bool = True,
    detector: bool = True,
    heldout: bool = True,
) -> dict[str, float]:
    """All metrics on ``n`` scenes per scene family, drawn from ``seed``."""
    world = W.ShapeWorld(W.WorldConfig(image_size=clip.image_size))
    rng = np.random.default_rng(seed)
    scorer = Scorer(clip)
    mixed = world.batch(rng, n, split="all")
    single = world.batch(rng, n, split="all", n_objects=1)
    double = world.batch(rng, n, split="all", n_objects=2)
    out: dict[str, float] = {"retrieval_top1": retrieval_top1(scorer, mixed, rng)}
    out.update(attribute_accuracy(scorer, single))
    out["binding_acc"] = pair_accuracy(scorer, double, "binding")
    out["relation_acc"] = pair_accuracy(scorer, double, "relation")
    out["relation_acc_left_right"] = pair_accuracy(scorer, double, "relation", W.HORIZONTAL_RELATIONS)
    if heldout:
        held1 = world.batch(rng, n, split="heldout", n_objects=1)
        held2 = world.batch(rng, n, split="heldout", n_objects=2)
        out.update({f"{k}_heldout": v for k, v in attribute_accuracy(scorer, held1).items()})
        out["binding_acc_heldout"] = pair_accuracy(scorer, held2, "binding")
    if relevancy:
        out.update(relevancy_metrics(clip, double))
        out.update(ceiling_metrics(double, clip.patch_grid))
    if detector:
        out["detector_acc"] = detector_accuracy(Detector(world), mixed)["detector_acc"]
    return out
