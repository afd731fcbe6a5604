"""Relevancy maps for CLIP (Chefer et al. 2021), batched, in one backward pass.

For each (image, text) pair b the score is ``s_b = scale·cos(f_b, g_b)`` with ``scale = e^τ``
(``score="logit"``) or 1 (``score="cos"``); the differentiated scalar is ``Σ_b s_b``. Pairs do not
interact, so one ``autograd.grad`` over every captured attention map of both towers gives every
pair's gradients at once. Per tower, from layer ``l0``::

    R = I;  for l in l0..L-1:  Ā = mean_heads(clamp(∂s/∂A^l ⊙ A^l, min=0));  R = R + Ā R

The image map is ``R[CLS, 1:]`` (patches), the text map ``R[EOT, :]``. Only one row of ``R`` is
ever read, so it is computed as a row vector from the last layer down
(``e^T (I+Ā_L)…(I+Ā_l0)``), O(L·N²) instead of O(L·N³), identical to the matrix recursion.

Gradients flow to the inputs (pixels / token embeddings), never to the frozen weights. With
``create_graph=True`` the maps are differentiable (second order) for use in losses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .attention import AttentionCapture, text_blocks, vision_blocks
from .loading import LoadedClip
from .tokens import TokenizedPrompt, tokenize

Score = Literal["logit", "cos"]


@dataclass
class RelevancyMaps:
    """Raw relevancy read-outs for P pairs (differentiable when computed with ``create_graph``)."""

    similarity: torch.Tensor  # (P,) cosine similarity
    image: torch.Tensor | None  # (P, gh, gw) CLS-row patch relevance
    text: torch.Tensor | None  # (P, T) EOT-row relevance over positions 0..T-1 (T = max EOT + 1)
    eot: torch.Tensor  # (P,) EOT position of each pair's text


def _layer_index(start: int, n_layers: int, what: str) -> int:
    idx = start + n_layers if start < 0 else start
    if not 0 <= idx < n_layers:
        raise ValueError(
            f"start_layer_{what}={start} is out of range for a {n_layers}-layer {what} tower; "
            f"use 0..{n_layers - 1} (or -1 for the last layer only)."
        )
    return idx


def _acc(x: torch.Tensor) -> torch.Tensor:
    """Accumulation precision: half types go to float32, float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def relevance_row(
    probs: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], row: torch.Tensor
) -> torch.Tensor:
    """Row ``row[b]`` of ``R`` for each pair, given attention maps and their gradients (l0..L-1)."""
    n = probs[0].shape[-1]
    vec = F.one_hot(row, n).to(_acc(probs[0]).dtype)  # (B, N)
    for a, g in zip(reversed(probs), reversed(grads), strict=True):
        cam = (_acc(g) * _acc(a)).clamp(min=0).mean(dim=1)  # (B, N, N)
        vec = vec + torch.bmm(vec.unsqueeze(1), cam).squeeze(1)
    return vec


def encode_text_ids(clip: LoadedClip, ids: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """Text features for token ids ``(B, T)``; with argmax pooling ``T`` may be < the context.

    Mirrors ``open_clip.model.CLIP.encode_text``. The causal mask makes the EOT feature depend only
    on positions ≤ EOT, so truncating to ``max(EOT)+1`` positions gives the same features, faster.
    ``embeddings`` (B, T, D) replaces the token-embedding lookup (prompt learning).
    """
    m = clip.model
    t = ids.shape[1]
    cast = m.transformer.get_cast_dtype()
    x = m.token_embedding(ids).to(cast) if embeddings is None else embeddings.to(cast)
    if torch.is_grad_enabled() and not x.requires_grad:
        x = x.detach().requires_grad_(True)  # weights are frozen: give the graph a leaf
    x = x + m.positional_embedding[:t].to(cast)
    mask = m.attn_mask[:t, :t] if m.attn_mask is not None else None
    x = m.transformer(x, attn_mask=mask)
    x = m.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]
    proj = m.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def _check_supported(clip: LoadedClip) -> None:
    pool = getattr(clip.model, "text_pool_type", "argmax")
    if pool != "argmax":
        raise ValueError(f"text pooling {pool!r} is not supported; relevancy needs EOT (argmax) pooling.")


def relevancy_maps(
    clip: LoadedClip,
    images: torch.Tensor | None,
    ids: torch.Tensor,
    *,
    score: Score = "logit",
    start_layer_image: int = 0,
    start_layer_text: int = 0,
    create_graph: bool = False,
    want_image: bool = True,
    want_text: bool = True,
    text_embeddings: torch.Tensor | None = None,
) -> RelevancyMaps:
    """Relevancy for P (image, text) pairs: ``images`` (P,3,H,W) preprocessed, ``ids`` (P,T).

    ``ids`` may be padded to any length ≥ max EOT + 1; it is trimmed to max EOT + 1.
    With ``images=None`` the score is the norm of each text embedding (a prompt-only estimate of
    which tokens the EOT feature is built from); ``similarity`` is then NaN and there is no image map.
    """
    if score not in ("logit", "cos"):
        raise ValueError(f"score={score!r}: expected 'logit' or 'cos'.")
    want_image = want_image and images is not None
    if images is not None and images.shape[0] != ids.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {ids.shape[0]} texts; pass one image per text.")
    _check_supported(clip)
    m = clip.model
    eot = ids.argmax(dim=-1)
    t = int(eot.max()) + 1
    ids = ids[:, :t]
    if text_embeddings is not None:
        text_embeddings = text_embeddings[:, :t]
    vis, txt = vision_blocks(m), text_blocks(m)
    l0_img = _layer_index(start_layer_image, len(vis), "image")
    l0_txt = _layer_index(start_layer_text, len(txt), "text")
    cap_img = AttentionCapture(vis[l0_img:]) if want_image else None
    cap_txt = AttentionCapture(txt[l0_txt:]) if want_text else None
    try:
        with torch.enable_grad():
            g_raw = _acc(encode_text_ids(clip, ids.to(clip.device), text_embeddings))
            if images is None:
                cos = torch.full((ids.shape[0],), float("nan"), dtype=g_raw.dtype, device=g_raw.device)
                s = g_raw.norm(dim=-1).sum()
            else:
                pix = images.to(clip.device, clip.dtype)
                if want_image and not pix.requires_grad:
                    pix = pix.detach().requires_grad_(True)
                f = F.normalize(_acc(m.visual(pix)), dim=-1)
                cos = (f * F.normalize(g_raw, dim=-1)).sum(-1)
                scale = _acc(m.logit_scale.exp()) if score == "logit" else 1.0
                s = (cos * scale).sum()
            probs: list[torch.Tensor] = []
            for cap in (cap_img, cap_txt):
                if cap is not None:
                    probs += [p for p in cap.probs if p is not None]
            image_map = text_map = None
            grads = torch.autograd.grad(s, probs, create_graph=create_graph) if probs else ()
            n_img = len(cap_img.probs) if cap_img is not None else 0
            if cap_img is not None:
                cls = torch.zeros(ids.shape[0], dtype=torch.long, device=clip.device)
                row = relevance_row(probs[:n_img], grads[:n_img], cls)[:, 1:]
                gh, gw = clip.patch_grid
                image_map = row.reshape(-1, gh, gw)
            if cap_txt is not None:
                text_map = relevance_row(probs[n_img:], grads[n_img:], eot.to(clip.device))
    finally:
        for cap in (cap_img, cap_txt):
            if cap is not None:
                cap.remove()
    if not create_graph:
        cos = cos.detach()
        image_map = image_map.detach() if image_map is not None else None
        text_map = text_map.detach() if text_map is not None else None
    return RelevancyMaps(cos, image_map, text_map, eot)


# ----------------------------------------------------------------------------- high level


@dataclass
class Explanation:
    """Relevancy of every (image, phrase) pair, phrase-major: pair ``p = j * n_images + i``."""

    prompts: list[TokenizedPrompt]
    n_images: int
    similarity: torch.Tensor  # (P,)
    image_relevance: torch.Tensor | None  # (P, gh, gw) raw
    text_relevance: list[torch.Tensor]  # per pair: raw EOT-row values for the tokens between SOT and EOT

    def pair(self, image_index: int, phrase_index: int) -> int:
        """Index of the (image, phrase) pair."""
        return phrase_index * self.n_images + image_index


def explain(
    clip: LoadedClip,
    images: torch.Tensor | None,
    phrases: Sequence[str | TokenizedPrompt],
    *,
    score: Score = "logit",
    start_layer_image: int = 0,
    start_layer_text: int = 0,
    batch_size: int = 16,
    want_image: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Explanation:
    """Explain every image in ``images`` (I,3,H,W, preprocessed) against every phrase.

    ``images=None`` explains the phrases alone (see :func:`relevancy_maps`), as one "image".
    Pairs are evaluated in chunks of ``batch_size``; ``progress(done, total)`` is called after each.
    """
    if not phrases:
        raise ValueError("no phrases to explain; give at least one non-empty phrase.")
    prompts = [p if isinstance(p, TokenizedPrompt) else tokenize(p, clip.context_length) for p in phrases]
    n_img = 1 if images is None else images.shape[0]
    pairs = [(i, j) for j in range(len(prompts)) for i in range(n_img)]
    sims, maps, texts = [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        t = max(len(prompts[j].ids) for _, j in chunk)
        ids = torch.stack([prompts[j].padded_ids(t) for _, j in chunk])
        pix = None if images is None else images[[i for i, _ in chunk]]
        out = relevancy_maps(
            clip, pix, ids, score=score, start_layer_image=start_layer_image,
            start_layer_text=start_layer_text, want_image=want_image,
        )
        sims.append(out.similarity.cpu())
        if out.image is not None:
            maps.append(out.image.cpu())
        for k, (_, j) in enumerate(chunk):
            texts.append(out.text[k, 1:prompts[j].eot_index].cpu())
        if progress is not None:
            progress(min(start + batch_size, len(pairs)), len(pairs))
    return Explanation(prompts, n_img, torch.cat(sims), torch.cat(maps) if maps else None, texts)


def normalize_sum_max(x: torch.Tensor, dims: tuple[int, ...] = (-1,), eps: float = 1e-12) -> torch.Tensor:
    """Divide by the sum, then by the max, over ``dims`` (the paper's /sum,/max normalisation)."""
    x = x / x.sum(dim=dims, keepdim=True).clamp_min(eps)
    return x / x.amax(dim=dims, keepdim=True).clamp_min(eps)


def normalize_minmax(x: torch.Tensor, dims: tuple[int, ...] = (-1,), eps: float = 1e-12) -> torch.Tensor:
    """Min–max normalise to [0, 1] over ``dims``."""
    lo = x.amin(dim=dims, keepdim=True)
    return (x - lo) / (x.amax(dim=dims, keepdim=True) - lo).clamp_min(eps)
