"""CLIP-free shapes detector: accuracy on fixed seeds, robustness to mild blur/noise, components."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from relevancy.shapes.detector import Detector, detector_accuracy, label_components
from relevancy.shapes.world import Scene, ShapeWorld, WorldConfig


@pytest.fixture(scope="module")
def world() -> ShapeWorld:
    return ShapeWorld()


@pytest.fixture(scope="module")
def detector(world: ShapeWorld) -> Detector:
    return Detector(world)


def test_label_components() -> None:
    m = np.zeros((6, 7), dtype=bool)
    m[0:2, 0:2] = True
    m[4:6, 1:6] = True
    m[2, 5] = m[3, 5] = True  # column 5 touches the bottom bar
    m[0, 6] = True  # isolated
    m[3, 0] = True  # diagonal neighbour of (4, 1): joins the bottom bar
    m[2, 2] = True  # diagonal neighbour of (1, 1): joins the top-left blob
    lab, n = label_components(m)
    assert n == 3 and lab[2, 2] == lab[0, 0] and lab[3, 0] == lab[5, 1]
    assert len({lab[0, 0], lab[1, 1]}) == 1 and lab[0, 0] != lab[5, 1]
    assert lab[2, 5] == lab[5, 5] and lab[0, 6] not in (lab[0, 0], lab[5, 5])
    assert (lab > 0).sum() == m.sum()


def test_accuracy_on_fixed_seed_set(world: ShapeWorld, detector: Detector) -> None:
    scenes = world.batch(np.random.default_rng(2024), 300, split="all")
    acc = detector_accuracy(detector, scenes)
    assert acc["detector_acc"] >= 0.98, acc
    assert acc["detector_size_acc"] >= 0.98, acc


def test_detections_match_ground_truth(world: ShapeWorld, detector: Detector) -> None:
    s = world.render(np.random.default_rng(3), [("red", "star", "large"), ("orange", "cross", "small"),
                                                ("blue", "triangle", "large")])
    dets = detector.detect(s.image)
    assert sorted((d.colour, d.shape, d.size) for d in dets) == sorted(
        (o.colour, o.shape, o.size) for o in s.objects)
    for o in s.objects:
        d = next(d for d in dets if d.colour == o.colour)
        assert d.box == o.box and np.array_equal(d.mask, o.mask)


def test_blank_image_has_no_objects(detector: Detector) -> None:
    assert detector.detect(np.full((64, 64, 3), 200, np.uint8)) == []
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64), np.uint8))


def test_robust_to_mild_blur_and_noise(world: ShapeWorld, detector: Detector) -> None:
    rng = np.random.default_rng(11)
    scenes = world.batch(np.random.default_rng(77), 150, split="all")
    pert = []
    for s in scenes:
        im = np.asarray(Image.fromarray(s.image).filter(ImageFilter.GaussianBlur(0.7)), np.float32)
        im = np.clip(im + rng.normal(0, 10, im.shape), 0, 255).astype(np.uint8)
        pert.append(Scene(im, s.objects, s.captions, s.background))
    assert detector_accuracy(detector, pert)["detector_acc"] >= 0.9


def test_other_image_size() -> None:
    w = ShapeWorld(WorldConfig(image_size=96))
    acc = detector_accuracy(Detector(w), w.batch(np.random.default_rng(0), 60, split="all"))
    assert acc["detector_acc"] >= 0.95
