"""Per-pair reports: token relevance, per-word coverage and "left behind" flags.

Word relevance follows the paper's generation code: the EOT row over the tokens between SOT and
EOT is divided by its sum, then by its max (so the strongest token is 1); a word's relevance is the
max over its tokens, and a semantic word below ``threshold`` (default 0.7) is *left behind*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .explain import Explanation, normalize_sum_max
from .tokens import TokenizedPrompt, word_relevance

LEFT_BEHIND_THRESHOLD = 0.7


@dataclass
class WordReport:
    """Coverage of one word."""

    word: str
    semantic: bool
    relevance: float
    left_behind: bool


def word_reports(
    prompt: TokenizedPrompt, token_relevance: torch.Tensor, threshold: float = LEFT_BEHIND_THRESHOLD
) -> list[WordReport]:
    """Per-word max normalised relevance and left-behind flags for one (image, prompt) pair."""
    if token_relevance.numel() == 0:
        return []
    norm = normalize_sum_max(token_relevance.clamp_min(0))
    rel = word_relevance(prompt, norm)
    return [WordReport(w.text, w.semantic, r, w.semantic and r < threshold)
            for w, r in zip(prompt.words, rel, strict=True)]


def coverage(words: list[WordReport]) -> float:
    """Fraction of semantic words that are not left behind (1.0 when there are none)."""
    sem = [w for w in words if w.semantic]
    return 1.0 if not sem else sum(not w.left_behind for w in sem) / len(sem)


def pair_report(
    exp: Explanation, image_index: int, phrase_index: int, threshold: float = LEFT_BEHIND_THRESHOLD
) -> dict[str, Any]:
    """JSON-ready report of one pair (raw relevance values plus the per-word coverage)."""
    p = exp.pair(image_index, phrase_index)
    prompt = exp.prompts[phrase_index]
    rel = exp.text_relevance[p]
    words = word_reports(prompt, rel, threshold)
    out: dict[str, Any] = {
        "phrase": prompt.prompt,
        "similarity": float(exp.similarity[p]),
        "tokens": list(prompt.tokens),
        "text_relevance": [float(v) for v in rel],
        "words": [vars(w) for w in words],
        "coverage": coverage(words),
        "left_behind": [w.word for w in words if w.left_behind],
    }
    if prompt.dropped:
        out["dropped_words"] = list(prompt.dropped)
    if exp.image_relevance is not None:
        out["image_relevance"] = exp.image_relevance[p].tolist()
    return out


def explanation_results(exp: Explanation, threshold: float = LEFT_BEHIND_THRESHOLD) -> list[dict[str, Any]]:
    """Reports of every pair, phrase-major (the order of ``exp``), each with its ``image_index``."""
    return [{"image_index": i, **pair_report(exp, i, j, threshold)}
            for j in range(len(exp.prompts)) for i in range(exp.n_images)]
