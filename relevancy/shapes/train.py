"""Train a tiny open_clip CLIP on the shapes world, reproducibly, on CPU.

Objective per step (batch of B fresh scenes, each with one true caption and one hard negative):

- symmetric contrastive loss: image -> text over the B true captions plus ``negatives`` x B hard negatives
  (swapped colours / shapes / relation, or a replaced attribute), text -> image over the B images.
  Targets are multi-positive: every caption that is *true* of an image (``world.is_true``) counts
  as a positive for it, so duplicate captions in a batch are not pushed apart;
- auxiliary dense supervision (training only, not exported): a linear head on every patch token of
  the vision transformer's output predicts the colour and the shape of the object covering that
  patch (or background). It makes patch tokens carry shape, which contrastive learning alone learned
  slowly, and keeps them tied to their own location, which the relevancy maps read.
- auxiliary global supervision (training only): which colours / shapes are present, predicted from
  the CLS output, so the pooled embedding carries shape as well as colour.
- explainability supervision (``relevancy_weight``; the paper's idea of a loss on relevancy maps,
  applied to training): for the first ``relevancy_pairs`` (image, true caption) pairs, the engine's
  own image relevancy map (second order, all layers, logit score, exactly as at inference) is pulled
  towards the patch coverage of the objects the caption mentions (KL divergence). Without it the maps
  degrade late in training: the model partly scores a phrase by checking the *other* object.

Twins (``twin_frac``): part of each batch are minimal edits of other scenes in it (two objects swap
colours, or one object changes shape or colour, same positions and background), captioned in
parallel, so captions must bind attributes to objects to tell the pair apart (hard negative images).
With ``twin_mirror_prob``, a scene captioned with a left/right relation may get its mirror image as
twin instead, so that only the relation tells the pair apart (measured: relations stayed at chance
with ``twin_mirror_prob`` 1, relation_acc_left_right 0.532 at step 3500 of the default recipe, so
it is off there).

Curriculum: the first ``single_object_steps`` use one object per scene, then the world's 1-3.
Learning rate: linear warm-up then cosine decay. Everything random comes from one seed.
Exports the open_clip state dict (safetensors) plus ``open_clip_config.json`` (open_clip hub layout).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..explain import relevancy_maps
from ..images import preprocess_tensor
from ..loading import LoadedClip
from . import world as W
from .evaluate import wrap_model

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class TrainConfig:
    """Training recipe; ``model_cfg`` is an open_clip CLIP config (embed_dim, vision_cfg, text_cfg, quick_gelu)."""

    model_cfg: dict[str, Any]
    seed: int = 0
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    min_lr_frac: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    single_object_steps: int = 0
    size_prob: float = 0.3
    relation_prob: float = 0.5
    partial_prob: float = 0.1
    negatives: int = 1
    twin_frac: float = 0.0
    twin_swap_prob: float = 0.75
    twin_mirror_prob: float = 0.0
    aux_dense_weight: float = 1.0
    aux_global_weight: float = 0.5
    relevancy_weight: float = 0.0
    relevancy_pairs: int = 32
    relevancy_start_step: int = 0
    log_every: int = 25
    probe_every: int = 0
    export_dtype: str = "float16"
    world: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown training config keys {sorted(unknown)}")
        if "model_cfg" not in data:
            raise ValueError(f"{path}: training config needs a 'model_cfg' (open_clip CLIP config)")
        return cls(**data)


# ---------------------------------------------------------------- model and data


def build_clip(model_cfg: dict[str, Any]) -> nn.Module:
    """An ``open_clip.model.CLIP`` from a config dict (random init)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = dict(model_cfg)
    return CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=CLIPTextCfg(**cfg["text_cfg"]),
        quick_gelu=bool(cfg.get("quick_gelu", False)),
    )


class CaptionTokenizer:
    """CLIP BPE tokenizer (ships with open_clip) with a cache; captions repeat a lot."""

    def __init__(self, context_length: int) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.tok = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for t in texts:
            ids = self.cache.get(t)
            if ids is None:
                enc = self.tok.encode(t)
                if len(enc) + 2 > self.context_length:
                    raise ValueError(f"caption {t!r} needs {len(enc) + 2} tokens > context {self.context_length}")
                ids = torch.zeros(self.context_length, dtype=torch.long)
                ids[: len(enc) + 2] = torch.tensor([self.tok.sot_token_id, *enc, self.tok.eot_token_id])
                self.cache[t] = ids
            out.append(ids)
        return torch.stack(out)


def patch_labels(scenes: Sequence[W.Scene], patch: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch colour (0 = background, 1..C) and shape (0 = background, 1..S) labels.

    A patch takes the object covering most of it if that object covers at least a quarter of it.
    """
    n = len(scenes)
    size = grid * patch
    col = np.zeros((n, grid, grid), dtype=np.int64)
    shp = np.zeros((n, grid, grid), dtype=np.int64)
    best = np.zeros((n, grid, grid), dtype=np.float32)
    for i, s in enumerate(scenes):
        for o in s.objects:
            m = o.mask
            if m.shape[0] != size:
                raise ValueError(f"scene size {m.shape[0]} does not match the model input {size}")
            cov = W.patch_coverage(m, (grid, grid))
            take = (cov >= 0.25) & (cov > best[i])
            best[i][take] = cov[take]
            col[i][take] = W.COLOUR_NAMES.index(o.colour) + 1
            shp[i][take] = W.SHAPES.index(o.shape) + 1
    return torch.from_numpy(col).flatten(1), torch.from_numpy(shp).flatten(1)


def presence_labels(scenes: Sequence[W.Scene]) -> torch.Tensor:
    """(N, C + S) multi-hot: which colours and which shapes appear in each scene."""
    out = torch.zeros(len(scenes), len(W.COLOUR_NAMES) + len(W.SHAPES))
    for i, s in enumerate(scenes):
        for o in s.objects:
            out[i, W.COLOUR_NAMES.index(o.colour)] = 1
            out[i, len(W.COLOUR_NAMES) + W.SHAPES.index(o.shape)] = 1
    return out


def relevancy_targets(scenes: Sequence[W.Scene], descs: Sequence[W.Description], grid: int) -> torch.Tensor:
    """(N, grid*grid) target distributions: per-patch coverage of the objects each caption mentions."""
    out = np.zeros((len(scenes), grid * grid), dtype=np.float32)
    for i, (s, d) in enumerate(zip(scenes, descs, strict=True)):
        for o in W.mentioned_objects(d, s.objects):
            out[i] += W.patch_coverage(o.mask, (grid, grid)).ravel()
    out /= np.maximum(out.sum(1, keepdims=True), 1e-12)
    return torch.from_numpy(out)


def relevancy_loss(view: LoadedClip, x: torch.Tensor, ids: torch.Tensor, target: torch.Tensor,
                   eps: float = 1e-6) -> torch.Tensor:
    """KL(target || map) for the engine's image relevancy maps (second order, as at inference).

    The map of each (image, true caption) pair, normalised to a distribution over patches, is pulled
    towards the coverage of the objects the caption mentions: relevance must sit on those objects.
    """
    p = relevancy_maps(view, x, ids, want_text=False, create_graph=True).image.flatten(1) + eps
    p = p / p.sum(1, keepdim=True)
    return (target * (target.clamp_min(1e-12).log() - p.log())).sum(1).mean()


class AuxHeads(nn.Module):
    """Training-only heads on the vision tower's output tokens (never exported)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        nc, ns = len(W.COLOUR_NAMES), len(W.SHAPES)
        self.norm = nn.LayerNorm(width)
        self.dense = nn.Linear(width, (nc + 1) + (ns + 1))
        self.glob = nn.Linear(width, nc + ns)
        self.nc = nc

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.norm(tokens)
        d = self.dense(x[:, 1:])
        return d[..., : self.nc + 1], d[..., self.nc + 1:], self.glob(x[:, 0])


class Batcher:
    """Deterministic stream of training batches (scenes, captions, hard negatives, targets)."""

    def __init__(self, cfg: TrainConfig, tokenizer: CaptionTokenizer) -> None:
        self.cfg = cfg
        self.world = W.ShapeWorld(W.WorldConfig(**cfg.world))
        self.rng = np.random.default_rng(cfg.seed)
        self.tokenizer = tokenizer

    def next(self, step: int) -> dict[str, Any]:
        cfg = self.cfg
        n_obj = 1 if step < cfg.single_object_steps else None
        n_twin = int(round(cfg.batch_size * cfg.twin_frac))
        if not 0 <= n_twin <= cfg.batch_size // 2:
            raise ValueError(f"twin_frac must be in [0, 0.5], got {cfg.twin_frac}")
        scenes = self.world.batch(self.rng, cfg.batch_size - n_twin, split="train", n_objects=n_obj)
        pos = [W.describe(s, self.rng, cfg.size_prob, cfg.relation_prob, cfg.partial_prob) for s in scenes]
        for k in range(n_twin):
            if cfg.twin_mirror_prob > 0 and pos[k].relation in W.HORIZONTAL_RELATIONS and \
                    self.rng.random() < cfg.twin_mirror_prob:
                t = self.world.mirror(scenes[k])  # only the left/right relation changes
            else:
                t = self.world.twin(scenes[k], self.rng, swap_prob=cfg.twin_swap_prob)
            pos.append(W.describe_like(pos[k], scenes[k], t))
            scenes.append(t)
        neg = [W.hard_negative(d, s.objects, self.rng) for _ in range(cfg.negatives)
               for d, s in zip(pos, scenes, strict=True)]
        texts = [d.text() for d in pos] + [d.text() for d in neg]
        descs = pos + neg
        return {"scenes": scenes, "texts": texts, "descs": descs, "truth": truth_matrix(scenes, descs),
                "ids": self.tokenizer(texts)}


_COMBO_BIT = {c: 1 << k for k, c in enumerate(W.ALL_COMBOS)}


def truth_matrix(scenes: Sequence[W.Scene], descs: Sequence[W.Description]) -> torch.Tensor:
    """(N scenes, M descriptions) float matrix: 1 where the description is true of the scene.

    A cheap bitmask test (every mentioned colour-shape pair is present) filters candidates;
    ``world.is_true`` decides the rest (sizes, relations, distinct objects).
    """
    sm = np.array([sum({_COMBO_BIT[(o.colour, o.shape)] for o in s.objects}) for s in scenes], dtype=np.int64)
    dm = np.array([sum({_COMBO_BIT[(p.colour, p.shape)] for p in d.phrases}) for d in descs], dtype=np.int64)
    cand = (dm[None, :] & ~sm[:, None]) == 0
    out = torch.zeros(len(scenes), len(descs))
    for i, j in zip(*np.nonzero(cand), strict=True):
        out[i, j] = float(W.is_true(descs[j], scenes[i].objects))
    return out


def contrastive_loss(f: torch.Tensor, g: torch.Tensor, scale: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Multi-positive symmetric InfoNCE: images vs all texts, positive texts vs images."""
    b = f.shape[0]
    logits = scale * f @ g.t()  # (B, 2B)
    i2t = -(F.log_softmax(logits, dim=1) * truth / truth.sum(1, keepdim=True)).sum(1).mean()
    tpos = truth[:, :b].t()  # (B texts, B images)
    t2i = -(F.log_softmax(logits[:, :b].t(), dim=1) * tpos / tpos.sum(1, keepdim=True)).sum(1).mean()
    return 0.5 * (i2t + t2i)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def _param_groups(model: nn.Module, heads: nn.Module, wd: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for mod in (model, heads):
        for name, p in mod.named_parameters():
            if p.ndim < 2 or "embedding" in name or "logit_scale" in name or "norm" in name or "ln_" in name:
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------- export


def sidecar_config(cfg: TrainConfig) -> dict[str, Any]:
    """open_clip hub sidecar: ``model_cfg`` + ``preprocess_cfg``."""
    size = cfg.model_cfg["vision_cfg"]["image_size"]
    return {
        "model_cfg": {**cfg.model_cfg, "quick_gelu": bool(cfg.model_cfg.get("quick_gelu", False))},
        "preprocess_cfg": {"mean": list(cfg.mean), "std": list(cfg.std), "size": size,
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }


def export_model(model: nn.Module, cfg: TrainConfig, out: str | Path) -> Path:
    """Write ``open_clip_model.safetensors`` and ``open_clip_config.json`` into folder ``out``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = {"float16": torch.float16, "float32": torch.float32}[cfg.export_dtype]
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "open_clip_model.safetensors"), metadata={"format": "pt"})
    (out / "open_clip_config.json").write_text(json.dumps(sidecar_config(cfg), indent=2) + "\n")
    return out / "open_clip_model.safetensors"


# ---------------------------------------------------------------- training loop


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
    probe: Callable[[nn.Module, int], dict[str, float]] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train from scratch; export to ``out`` if given. Returns the model and a run summary.

    Every ``cfg.probe_every`` steps ``probe(model, step)`` adds metrics to the log and, with
    ``checkpoint_dir``, the model is exported to ``checkpoint_dir/step_<N>`` (neither touches the
    training random streams).
    """
    torch.manual_seed(cfg.seed)
    model = build_clip(cfg.model_cfg)
    if cfg.init:  # fine-tune: start from a saved model of the same architecture
        from ..loading import load_clip

        start = load_clip(cfg.init).model.state_dict()
        ours = model.state_dict()
        bad = sorted(k for k in set(ours) | set(start) if k not in start or k not in ours
                     or start[k].shape != ours[k].shape)
        if bad:
            raise ValueError(f"init model {cfg.init} does not match the config's model_cfg "
                             f"(differs at {bad[:3]}); fine-tune with the config it was trained with")
        model.load_state_dict({k: v.float() for k, v in start.items()})
    vcfg = cfg.model_cfg["vision_cfg"]
    patch, size = int(vcfg["patch_size"]), int(vcfg["image_size"])
    if cfg.world.get("image_size", 64) != size:
        raise ValueError(f"world image_size {cfg.world.get('image_size', 64)} must equal the model's {size}")
    grid = size // patch
    view = wrap_model(model, sidecar_config(cfg))  # the engine's preprocessing, as at inference
    heads = AuxHeads(int(vcfg["width"]))
    tokenizer = CaptionTokenizer(int(cfg.model_cfg["text_cfg"]["context_length"]))
    batcher = Batcher(cfg, tokenizer)
    opt = torch.optim.AdamW(_param_groups(model, heads, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    captured: dict[str, torch.Tensor] = {}
    hook = model.visual.transformer.register_forward_hook(lambda m, i, o: captured.__setitem__("tokens", o))
    history: list[dict[str, float]] = []
    t0 = time.time()
    model.train()
    try:
        for step in range(cfg.steps):
            batch = batcher.next(step)
            scenes = batch["scenes"]
            x = preprocess_tensor(view, torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2) / 255.0)
            for gr in opt.param_groups:
                gr["lr"] = lr_at(step, cfg)
            f = F.normalize(model.encode_image(x), dim=-1)
            g = F.normalize(model.encode_text(batch["ids"]), dim=-1)
            scale = model.logit_scale.exp().clamp(max=100.0)
            loss_c = contrastive_loss(f, g, scale, batch["truth"])
            loss = loss_c
            logs = {"step": step + 1, "contrastive": loss_c.item()}
            if cfg.aux_dense_weight > 0 or cfg.aux_global_weight > 0:
                col_logit, shp_logit, glob = heads(captured["tokens"])
                col_t, shp_t = patch_labels(scenes, patch, grid)
                dense = F.cross_entropy(col_logit.flatten(0, 1), col_t.flatten()) + \
                    F.cross_entropy(shp_logit.flatten(0, 1), shp_t.flatten())
                glob_l = F.binary_cross_entropy_with_logits(glob, presence_labels(scenes))
                loss = loss + cfg.aux_dense_weight * dense + cfg.aux_global_weight * glob_l
                logs.update(dense=dense.item(), presence=glob_l.item())
            if cfg.relevancy_weight > 0 and step >= cfg.relevancy_start_step:
                k = min(cfg.relevancy_pairs, len(scenes))
                target = relevancy_targets(scenes[:k], batch["descs"][:k], grid)
                rel = relevancy_loss(view, x[:k], batch["ids"][:k], target)
                loss = loss + cfg.relevancy_weight * rel
                logs.update(relevancy=rel.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for gr in opt.param_groups for p in gr["params"]], cfg.grad_clip)
            opt.step()
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                logs.update(loss=loss.item(), scale=scale.item(), lr=lr_at(step, cfg),
                            seconds=round(time.time() - t0, 1))
                if cfg.probe_every and ((step + 1) % cfg.probe_every == 0 or step + 1 == cfg.steps):
                    model.eval()
                    if probe is not None:
                        logs.update(probe(model, step + 1))
                    if checkpoint_dir is not None:
                        export_model(model, cfg, Path(checkpoint_dir) / f"step_{step + 1:05d}")
                    model.train()
                history.append(logs)
                log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in logs.items()}))
    finally:
        hook.remove()
    model.eval()
    seconds = time.time() - t0
    summary = {"config": asdict(cfg), "seconds": round(seconds, 1), "threads": torch.get_num_threads(),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "history": history}
    if out is not None:
        export_model(model, cfg, out)
        (Path(out) / "train_log.json").write_text(json.dumps(summary, indent=1) + "\n")
    return model, summary
