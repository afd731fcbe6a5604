"""Shapes-world generator: determinism, mask/box/pixel consistency, caption truth, held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from relevancy.shapes import world as W


@pytest.fixture(scope="module")
def world() -> W.ShapeWorld:
    return W.ShapeWorld()


@pytest.fixture(scope="module")
def scenes(world: W.ShapeWorld) -> list[W.Scene]:
    return world.batch(np.random.default_rng(123), 300, split="all")


def test_same_seed_same_bytes(world: W.ShapeWorld) -> None:
    a = world.batch(np.random.default_rng(7), 20)
    b = world.batch(np.random.default_rng(7), 20)
    c = world.batch(np.random.default_rng(8), 20)
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(a, b, strict=True))
    assert [x.captions for x in a] == [y.captions for y in b]
    assert any(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, c, strict=True))


def test_image_format_and_counts(scenes: list[W.Scene]) -> None:
    counts = set()
    for s in scenes:
        assert s.image.dtype == np.uint8 and s.image.shape == (64, 64, 3)
        assert 1 <= len(s.objects) <= 3
        counts.add(len(s.objects))
        combos = [(o.colour, o.shape) for o in s.objects]
        assert len(set(combos)) == len(combos)
    assert counts == {1, 2, 3}
    assert {s.background for s in scenes} == {"plain", "noise", "gradient"}


def test_masks_match_pixels_and_boxes(scenes: list[W.Scene]) -> None:
    for s in scenes:
        union = np.zeros(s.image.shape[:2], dtype=bool)
        for o in s.objects:
            assert o.mask.dtype == bool and o.mask.shape == s.image.shape[:2]
            assert not (union & o.mask).any(), "objects overlap"
            union |= o.mask
            ys, xs = np.nonzero(o.mask)
            assert o.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            side = max(o.box[2] - o.box[0], o.box[3] - o.box[1])
            assert (side <= 16) if o.size == "small" else (side >= 22)
            # every mask pixel has the object's palette colour (up to jitter)
            px = s.image[o.mask].astype(int)
            ref = np.array(W.COLOURS[o.colour])
            assert np.abs(px - ref).max() <= 12
        # background pixels are near-grey, far from every palette colour
        bg = s.image[~union].astype(int)
        assert (bg.max(axis=1) - bg.min(axis=1)).max() <= 14


def test_shape_masks_are_distinct() -> None:
    side = 24
    masks = {s: W.shape_mask(s, side) for s in W.SHAPES}
    for a in W.SHAPES:
        for b in W.SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.8, (a, b, iou)
    assert masks["square"].all()
    fill = {s: m.mean() for s, m in masks.items()}
    assert 0.7 < fill["circle"] < 0.85 and 0.4 < fill["triangle"] < 0.6


def test_captions_are_true_and_parse(scenes: list[W.Scene]) -> None:
    rng = np.random.default_rng(0)
    n_rel = 0
    for s in scenes:
        for cap in s.captions:
            d = W.parse_caption(cap)
            assert d.text() == cap
            assert W.is_true(d, s.objects), cap
        for _ in range(3):
            d = W.describe(s, rng, partial_prob=0.3)
            assert W.is_true(d, s.objects) and W.parse_caption(d.text()) == d
    for s in scenes:
        if len(s.objects) != 2:
            continue
        a, b = s.objects
        rel = W.relation_of(a, b)
        if rel is None:
            continue
        n_rel += 1
        dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
        assert {"to the left of": dx > 0, "to the right of": dx < 0, "above": dy > 0,
                "below": dy < 0}[rel]
        assert f"{a.phrase().text()} {rel} {b.phrase().text()}" in s.captions
        assert W.relation_of(b, a) == W.OPPOSITE[rel]
    assert n_rel > 20


def test_grammar_examples() -> None:
    assert W.Phrase("red", "circle").text() == "a red circle"
    assert W.Phrase("orange", "star").text() == "an orange star"
    assert W.Phrase("orange", "star", "small").text() == "a small orange star"
    d = W.Description((W.Phrase("red", "circle"), W.Phrase("green", "square")), "to the left of")
    assert d.text() == "a red circle to the left of a green square"
    assert W.parse_caption("a red circle, a blue star and a large green cross").phrases[2].size == "large"
    with pytest.raises(ValueError):
        W.parse_caption("a pink circle")
    with pytest.raises(ValueError):
        W.Description((W.Phrase("red", "circle"),), "above")


def test_hard_negatives_are_false_and_close(world: W.ShapeWorld) -> None:
    rng = np.random.default_rng(1)
    scenes = world.batch(rng, 400, split="train")
    kinds: set[str] = set()
    d = W.Description((W.Phrase("red", "circle"), W.Phrase("green", "square")), "above")
    assert W.swap_colours(d).text() == "a green circle above a red square"
    assert W.swap_shapes(d).text() == "a red square above a green circle"
    assert W.swap_relation(d).text() == "a red circle below a green square"
    for s in scenes:
        d = W.describe(s, rng)
        n = W.hard_negative(d, s.objects, rng)
        assert not W.is_true(n, s.objects), (s.captions, n.text())
        assert len(n.phrases) == len(d.phrases)
        kinds.add("swap" if sorted(n.phrases, key=str) != sorted(d.phrases, key=str)
                  and {p.colour for p in n.phrases} == {p.colour for p in d.phrases}
                  and {p.shape for p in n.phrases} == {p.shape for p in d.phrases} else "other")
        for p in n.phrases:
            assert (p.colour, p.shape) not in W.HELDOUT_COMBOS
    assert kinds == {"swap", "other"}


def test_heldout_split(world: W.ShapeWorld) -> None:
    rng = np.random.default_rng(5)
    train = world.batch(rng, 2000, split="train")
    seen = {(o.colour, o.shape) for s in train for o in s.objects}
    assert not seen & W.HELDOUT_COMBOS
    assert seen == set(W.TRAIN_COMBOS)
    for s in train[:200]:
        for cap in s.captions:
            for p in W.parse_caption(cap).phrases:
                assert (p.colour, p.shape) not in W.HELDOUT_COMBOS
    held = world.batch(rng, 200, split="heldout")
    assert all(any((o.colour, o.shape) in W.HELDOUT_COMBOS for o in s.objects) for s in held)
    assert {(o.colour, o.shape) for s in held for o in s.objects} >= W.HELDOUT_COMBOS


def test_other_image_size_and_errors() -> None:
    w = W.ShapeWorld(W.WorldConfig(image_size=96, max_objects=2))
    s = w.sample(np.random.default_rng(0), n_objects=2)
    assert s.image.shape == (96, 96, 3) and len(s.objects) == 2
    with pytest.raises(ValueError):
        w.sample(np.random.default_rng(0), split="test")
    with pytest.raises(ValueError):
        w.render(np.random.default_rng(0), [("pink", "circle", "small")])


def test_twins_differ_only_in_edited_attributes(world: W.ShapeWorld) -> None:
    rng = np.random.default_rng(21)
    kinds = set()
    for s in world.batch(rng, 200, split="train"):
        t = world.twin(s, rng)
        assert len(t.objects) == len(s.objects)
        changed = [k for k, (a, b) in enumerate(zip(s.objects, t.objects, strict=True))
                   if (a.colour, a.shape) != (b.colour, b.shape)]
        assert 1 <= len(changed) <= 2
        if len(changed) == 2:
            i, j = changed
            assert (t.objects[i].colour, t.objects[j].colour) == (s.objects[j].colour, s.objects[i].colour)
            kinds.add("swap")
        else:
            kinds.add("edit")
        for a, b in zip(s.objects, t.objects, strict=True):
            assert a.size == b.size and a.footprint == b.footprint
            assert (b.colour, b.shape) not in W.HELDOUT_COMBOS
            px = t.image[b.mask].astype(int)
            assert np.abs(px - np.array(W.COLOURS[b.colour])).max() <= 12
        union = np.any([o.mask for o in t.objects], axis=0)
        assert np.array_equal(t.image[~union], s.backdrop[~union])
        d = W.describe(s, rng)
        dt = W.describe_like(d, s, t)
        assert W.is_true(dt, t.objects) and len(dt.phrases) == len(d.phrases)
        if any(k in changed for k in range(len(s.objects))) and len(d.phrases) == len(s.objects):
            assert dt != d
    assert kinds == {"swap", "edit"}
