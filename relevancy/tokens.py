"""Tokenise prompts with CLIP's BPE and map tokens back to the words of the prompt.

Words are the chunks CLIP's own pre-tokeniser splits a prompt into (letter runs, single digits,
punctuation runs, English contractions). Each word owns one or more BPE tokens.

Semantic words (the ones a prompt must not leave behind):
- by default every word that is neither punctuation nor an English stopword;
- **emphasis syntax**: if the prompt contains square brackets, exactly the words inside brackets are
  semantic, e.g. ``"a [red car] parked by the [tree]"`` → ``red``, ``car``, ``tree``. Brackets are
  removed before the text reaches CLIP.

Prompts longer than the context are truncated as open_clip does (SOT + first ``ctx-2`` tokens + EOT);
the dropped words are reported and a warning is logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

logger = logging.getLogger(__name__)

STOPWORDS = frozenset("""
a an the and or but nor so yet of in on at to for from by with without within into onto upon over
under above below between among through during before after about against along around across behind
beyond near off out up down is are was were be been being am do does did done has have had having it
its it's this that these those there here which who whom whose what when where why how as than then
too very just also not no only own same such some any each every both either neither all few more
most other many much can could should would may might must shall will i me my we our you your he him
his she her they them their one ones 's 't 're 've 'm 'll 'd
""".split())

_WORD_RE = re.compile(r"\w", re.UNICODE)


@dataclass
class Word:
    """One word of the prompt and the BPE tokens it owns (indices into ``TokenizedPrompt.tokens``)."""

    text: str
    semantic: bool
    emphasised: bool
    token_indices: list[int] = field(default_factory=list)


@dataclass
class TokenizedPrompt:
    """A prompt as CLIP sees it: ids ``[SOT, t1..tn, EOT, 0...]`` and the word of each token."""

    prompt: str  # as the user wrote it
    text: str  # as sent to CLIP (brackets removed, cleaned)
    ids: list[int]  # SOT + tokens + EOT (no padding)
    tokens: list[str]  # readable token strings between SOT and EOT
    token_word: list[int]  # index into ``words`` for each token
    words: list[Word]
    dropped: list[str]  # words cut (fully or partly) by truncation

    @property
    def eot_index(self) -> int:
        """Position of EOT in ``ids``."""
        return len(self.ids) - 1

    def semantic_token_mask(self) -> torch.Tensor:
        """Bool mask over the tokens between SOT and EOT that belong to semantic words."""
        return torch.tensor([self.words[w].semantic for w in self.token_word], dtype=torch.bool)

    def padded_ids(self, context_length: int) -> torch.Tensor:
        """Ids padded with zeros to ``context_length`` (open_clip's layout)."""
        out = torch.zeros(context_length, dtype=torch.long)
        out[: len(self.ids)] = torch.tensor(self.ids, dtype=torch.long)
        return out


@lru_cache(maxsize=1)
def default_tokenizer() -> Any:
    """open_clip's CLIP BPE tokenizer (vocabulary ships with open_clip; no download)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def split_phrases(prompt: str) -> list[str]:
    """Split a prompt into phrases on ``|`` or new lines; empty phrases are dropped."""
    return [p.strip() for p in re.split(r"[|\n]", prompt) if p.strip()]


def _segments(prompt: str) -> list[tuple[str, bool]]:
    """Split on square brackets into ``(text, emphasised)`` segments."""
    if prompt.count("[") != prompt.count("]"):
        raise ValueError(
            f"prompt {prompt!r}: unbalanced square brackets. Brackets mark emphasised words, "
            "e.g. 'a [red car] on a road'; close every '[' with ']'."
        )
    out: list[tuple[str, bool]] = []
    for m in re.finditer(r"\[([^\[\]]*)\]|([^\[\]]+)", prompt):
        if m.group(1) is not None:
            out.append((m.group(1), True))
        elif m.group(2):
            out.append((m.group(2), False))
    return out


def token_string(tokenizer: Any, token_id: int) -> str:
    """Readable form of one BPE token (``'red</w>'`` → ``'red'``)."""
    raw = tokenizer.decoder[token_id]
    text = bytearray(tokenizer.byte_decoder[c] for c in raw).decode("utf-8", errors="replace")
    return text.replace("</w>", "")


def tokenize(prompt: str, context_length: int = 77, tokenizer: Any = None) -> TokenizedPrompt:
    """Tokenise ``prompt`` exactly as open_clip does, keeping the token → word mapping."""
    tok = tokenizer or default_tokenizer()
    segments = _segments(prompt)
    emphasis_mode = any(emph for _, emph in segments)
    words: list[Word] = []
    ids: list[int] = []
    token_word: list[int] = []
    for seg_text, emph in segments:
        cleaned = tok.clean_fn(seg_text)
        for chunk in tok.pat.findall(cleaned):
            chunk_bytes = "".join(tok.byte_encoder[b] for b in chunk.encode("utf-8"))
            chunk_ids = [tok.encoder[t] for t in tok.bpe(chunk_bytes).split(" ")]
            is_word = bool(_WORD_RE.search(chunk))
            semantic = is_word and (emph if emphasis_mode else chunk.lower() not in STOPWORDS)
            words.append(Word(chunk, semantic, emph))
            for t in chunk_ids:
                token_word.append(len(words) - 1)
                ids.append(t)
    text = " ".join(tok.clean_fn(s) for s, _ in segments if s.strip())
    limit = context_length - 2
    dropped: list[str] = []
    if len(ids) > limit:
        cut_word = token_word[limit]
        dropped = [w.text for w in words[cut_word:]]
        ids, token_word = ids[:limit], token_word[:limit]
        words = words[: token_word[-1] + 1]  # a word cut in half keeps its surviving tokens
        logger.warning("prompt %r is longer than the context (%d tokens); dropped words: %s",
                       prompt, context_length, " ".join(dropped))
    for i, w in enumerate(token_word):
        words[w].token_indices.append(i)
    tokens = [token_string(tok, t) for t in ids]
    full = [tok.sot_token_id, *ids, tok.eot_token_id]
    return TokenizedPrompt(prompt, text, full, tokens, token_word, words, dropped)


def word_relevance(prompt: TokenizedPrompt, token_relevance: torch.Tensor) -> list[float]:
    """Max relevance over each word's tokens."""
    rel = token_relevance.detach().float().cpu().tolist()
    return [max((rel[i] for i in w.token_indices), default=0.0) for w in prompt.words]
