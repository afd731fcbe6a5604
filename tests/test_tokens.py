"""Tokenisation: identical ids to open_clip, tokens mapped to words, semantic choice, truncation."""

from __future__ import annotations

import logging

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from relevancy.report import coverage, word_reports
from relevancy.tokens import split_phrases, tokenize

PROMPTS = [
    "a red circle and a blue square",
    "A  photo of a Hippopotamus, wearing sunglasses!!",
    "it's the cat's 3 toys & 12 dogs",
    "café crème brûlée",
    "the",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_match_open_clip(prompt):
    want = SimpleTokenizer()(prompt, 77)[0]
    assert torch.equal(tokenize(prompt, 77).padded_ids(77), want)


def test_multi_token_words_map_back_to_one_word():
    tp = tokenize("a hippopotamus sunbathing")
    hippo = next(w for w in tp.words if w.text == "hippopotamus")
    assert len(hippo.token_indices) > 1
    assert "".join(tp.tokens[i] for i in hippo.token_indices) == "hippopotamus"
    assert [tp.words[w].text for w in tp.token_word].count("hippopotamus") == len(hippo.token_indices)
    assert len(tp.tokens) == len(tp.ids) - 2


def test_stopwords_and_punctuation_are_not_semantic():
    tp = tokenize("a photo of the red car, next to two trees!")
    sem = [w.text for w in tp.words if w.semantic]
    assert sem == ["photo", "red", "car", "next", "two", "trees"]


def test_emphasis_brackets_choose_the_semantic_words():
    tp = tokenize("a [red car] parked by the [tree]")
    assert tp.text == "a red car parked by the tree"
    assert [w.text for w in tp.words if w.semantic] == ["red", "car", "tree"]
    assert torch.equal(tp.padded_ids(77), SimpleTokenizer()("a red car parked by the tree", 77)[0])
    assert tp.semantic_token_mask().tolist() == [False, True, True, False, False, False, True]


def test_unbalanced_brackets_are_a_clear_error():
    with pytest.raises(ValueError, match="unbalanced square brackets"):
        tokenize("a [red car")


def test_truncation_names_the_dropped_words(caplog):
    prompt = "one two three four five six seven eight nine ten"
    with caplog.at_level(logging.WARNING):
        tp = tokenize(prompt, context_length=8)
    assert tp.dropped == ["seven", "eight", "nine", "ten"]
    assert "seven eight nine ten" in caplog.text
    assert torch.equal(tp.padded_ids(8), SimpleTokenizer()(prompt, 8)[0])
    assert [w.text for w in tp.words] == ["one", "two", "three", "four", "five", "six"]


def test_split_phrases():
    assert split_phrases(" a cat | a dog \n\n a bird ||") == ["a cat", "a dog", "a bird"]
    assert split_phrases(" | \n ") == []


def test_word_reports_normalise_and_flag_left_behind():
    tp = tokenize("a red circle and a blue square")
    rel = torch.tensor([0.1, 2.0, 0.5, 0.2, 0.1, 1.6, 0.4])
    words = word_reports(tp, rel, threshold=0.7)
    got = {w.word: round(w.relevance, 4) for w in words if w.semantic}
    assert got == {"red": 1.0, "circle": 0.25, "blue": 0.8, "square": 0.2}
    assert [w.word for w in words if w.left_behind] == ["circle", "square"]
    assert coverage(words) == 0.5
