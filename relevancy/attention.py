"""Capture post-softmax attention probabilities on stock open_clip towers.

open_clip's ``ResidualAttentionBlock.attention`` calls ``nn.MultiheadAttention`` with
``need_weights=False`` (fused kernels that expose no probabilities). :class:`AttentionCapture`
shadows that method on each block *instance* with an explicit computation that keeps the
probabilities ``(B, H, N, N)`` in the autograd graph. Nothing in open_clip is edited; removing the
capture deletes the instance attributes and restores the stock method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from types import MethodType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def explicit_attention(
    mha: nn.MultiheadAttention, x: torch.Tensor, attn_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of ``x`` (B, N, D) with ``mha``'s weights; returns (output, probs (B,H,N,N))."""
    b, n, d = x.shape
    h = mha.num_heads
    hd = d // h
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    q = q.reshape(b, n, h, hd).transpose(1, 2) * (1.0 / math.sqrt(hd))
    k = k.reshape(b, n, h, hd).transpose(1, 2)
    v = v.reshape(b, n, h, hd).transpose(1, 2)
    scores = q @ k.transpose(-2, -1)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(scores.dtype)
    probs = scores.softmax(dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(b, n, d)
    return mha.out_proj(out), probs


class AttentionCapture:
    """Install explicit attention on a set of open_clip blocks and collect their probabilities.

    Use as a context manager or call :meth:`remove`. ``probs`` holds one ``(B, H, N, N)`` tensor per
    block, in block order, for the most recent forward pass (cleared by :meth:`clear`).
    """

    def __init__(self, blocks: Iterable[nn.Module]):
        self.blocks = list(blocks)
        self.probs: list[torch.Tensor | None] = [None] * len(self.blocks)
        for i, blk in enumerate(self.blocks):
            if not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
                raise TypeError(
                    f"block {i} ({type(blk).__name__}) has no nn.MultiheadAttention 'attn'; only "
                    "standard open_clip ResidualAttentionBlocks can be explained."
                )
            if "attention" in vars(blk):
                raise RuntimeError(f"block {i} already has an attention capture installed.")
            blk.attention = MethodType(self._make_attention(i), blk)

    def _make_attention(self, index: int) -> Any:
        capture = self

        def attention(blk: nn.Module, q_x: torch.Tensor, k_x: torch.Tensor | None = None,
                      v_x: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
            if k_x is not None or v_x is not None:
                raise NotImplementedError("cross-attention blocks are not supported by the capture.")
            mha: nn.MultiheadAttention = blk.attn
            x = q_x if mha.batch_first else q_x.transpose(0, 1)
            out, probs = explicit_attention(mha, x, attn_mask)
            capture.probs[index] = probs
            return out if mha.batch_first else out.transpose(0, 1)

        return attention

    def clear(self) -> None:
        """Drop references to the captured tensors (frees the graph they keep alive)."""
        self.probs = [None] * len(self.blocks)

    def remove(self) -> None:
        """Restore the stock attention on every block."""
        for blk in self.blocks:
            vars(blk).pop("attention", None)
        self.clear()

    def __enter__(self) -> AttentionCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def vision_blocks(model: Any) -> list[nn.Module]:
    """The residual blocks of an open_clip CLIP's vision transformer."""
    return list(model.visual.transformer.resblocks)


def text_blocks(model: Any) -> list[nn.Module]:
    """The residual blocks of an open_clip CLIP's text transformer."""
    return list(model.transformer.resblocks)
