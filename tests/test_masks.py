"""Tests for relevancy.masks: heatmap → ComfyUI MASK."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from relevancy.masks import (
    MaskOptions,
    connected_components,
    feather_mask,
    fill_bbox,
    fill_holes,
    grow_mask,
    heatmap_to_mask,
    keep_largest_component,
    mask_to_box,
    normalize_heatmap,
    otsu_threshold,
)

# ---------------------------------------------------------------- synthetic inputs and references


def blob(h: int, w: int, cy: float, cx: float, sigma: float, peak: float = 1.0) -> torch.Tensor:
    """(1, H, W) isotropic Gaussian."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return peak * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))[None]


def two_blobs(h: int = 96, w: int = 128) -> torch.Tensor:
    """A big hot blob on the left (peak 1) and a small, cooler one on the right (peak 0.6)."""
    return blob(h, w, 40, 35, 10) + blob(h, w, 50, 100, 5, peak=0.6)


def square(h: int, w: int, y0: int, x0: int, side: int) -> torch.Tensor:
    m = torch.zeros(1, h, w, dtype=torch.bool)
    m[0, y0 : y0 + side, x0 : x0 + side] = True
    return m


def disk_points(radius: int) -> int:
    """Lattice points with a, b >= 1 and a² + b² <= r² (one quadrant, axes excluded)."""
    return sum(
        1 for a in range(1, radius + 1) for b in range(1, radius + 1) if a * a + b * b <= radius**2
    )


def reference_labels(mask: torch.Tensor, connectivity: int) -> torch.Tensor:
    """BFS labelling of one (H, W) mask with connected_components' label convention."""
    m = mask.tolist()
    h, w = len(m), len(m[0])
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    labels = [[0] * w for _ in range(h)]
    for y in range(h):
        for x in range(w):
            if m[y][x] and not labels[y][x]:
                labels[y][x] = label = y * w + x + 1
                queue = deque([(y, x)])
                while queue:
                    a, b = queue.popleft()
                    for dy, dx in steps:
                        c, d = a + dy, b + dx
                        if 0 <= c < h and 0 <= d < w and m[c][d] and not labels[c][d]:
                            labels[c][d] = label
                            queue.append((c, d))
    return torch.tensor(labels)


def reference_dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1).float()
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]
    return F.conv2d(mask.float()[:, None], disk, padding=radius)[:, 0] > 0.5


def brute_force_otsu(values: torch.Tensor) -> float:
    """Exact Otsu over every cut of the sorted values; returns the largest class-0 value."""
    v = values.double().sort().values
    n = v.numel()
    i = torch.arange(1, n)
    w0 = i.double() / n
    c = v.cumsum(0)
    m0 = c[:-1] / i
    m1 = (c[-1] - c[:-1]) / (n - i)
    between = w0 * (1 - w0) * (m0 - m1) ** 2
    return float(v[int(between.argmax())])


# ---------------------------------------------------------------- options


def test_defaults_are_valid_and_frozen():
    o = MaskOptions()
    assert (o.threshold_mode, o.threshold, o.area, o.blur, o.grow) == ("otsu", 0.5, 0.2, 0.0, 0)
    assert (o.fill_holes, o.keep, o.feather, o.invert, o.normalize) == (
        False,
        "all",
        0.0,
        False,
        True,
    )
    with pytest.raises(AttributeError):
        o.threshold = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold_mode": "mean"}, "threshold_mode"),
        ({"keep": "biggest"}, "keep"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": float("nan"), "normalize": False}, "threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"area": -0.01}, "area"),
        ({"area": 1.01}, "area"),
        ({"blur": -1.0}, "blur"),
        ({"blur": float("inf")}, "blur"),
        ({"feather": -2}, "feather"),
        ({"grow": 1.5}, "grow"),
        ({"grow": True}, "grow"),
        ({"fill_holes": "yes"}, "fill_holes"),
        ({"invert": 1}, "invert"),
        ({"normalize": None}, "normalize"),
    ],
)
def test_invalid_options_name_the_option(kwargs, name):
    with pytest.raises(ValueError, match=rf"MaskOptions\.{name}\b"):
        MaskOptions(**kwargs)


def test_threshold_message_says_how_to_fix():
    with pytest.raises(ValueError, match="normalize=False"):
        MaskOptions(threshold=2.0)
    assert MaskOptions(threshold=2.0, normalize=False).threshold == 2.0  # raw thresholds allowed
    assert MaskOptions(grow=-3, blur=2, feather=1, area=0, threshold=1).grow == -3


# ---------------------------------------------------------------- threshold modes


def test_absolute_threshold_on_a_gaussian_is_the_expected_disk():
    sigma, t = 8.0, 0.5
    h = blob(101, 101, 50, 50, sigma)  # min ≈ 0, max 1: normalisation is (almost) the identity
    m = heatmap_to_mask(h, MaskOptions(threshold_mode="absolute", threshold=t))[0]
    yy, xx = torch.meshgrid(torch.arange(101), torch.arange(101), indexing="ij")
    expected = ((yy - 50) ** 2 + (xx - 50) ** 2) < -2 * sigma**2 * math.log(t)
    assert (m.bool() != expected).sum() <= 4
    assert m.sum() == pytest.approx(math.pi * (-2 * sigma**2 * math.log(t)), rel=0.05)


def test_absolute_threshold_picks_blobs_by_height():
    h = two_blobs()
    hot = heatmap_to_mask(h, MaskOptions(threshold_mode="absolute", threshold=0.8))[0]
    both = heatmap_to_mask(h, MaskOptions(threshold_mode="absolute", threshold=0.3))[0]
    assert hot[40, 35] == 1 and hot[50, 100] == 0  # the cooler blob (peak 0.6) is below 0.8
    assert both[40, 35] == 1 and both[50, 100] == 1
    assert connected_components(both.bool()[None]).unique().numel() == 3  # background + 2 blobs
    assert heatmap_to_mask(h, MaskOptions(threshold_mode="absolute", threshold=1.0)).sum() == 0


def test_absolute_threshold_without_normalisation_uses_raw_values():
    h = two_blobs() * 10 + 5  # range 5..15
    raw = heatmap_to_mask(
        h, MaskOptions(threshold_mode="absolute", threshold=13.0, normalize=False)
    )
    norm = heatmap_to_mask(h, MaskOptions(threshold_mode="absolute", threshold=0.8))
    assert torch.equal(raw.bool(), h > 13.0)
    assert torch.equal(norm.bool(), normalize_heatmap(h) > 0.8)


@pytest.mark.parametrize("area", [0.003, 0.05, 0.2, 0.5, 0.9])
def test_percentile_keeps_requested_area_of_hottest_pixels(area):
    torch.manual_seed(0)
    h = F.avg_pool2d(torch.rand(1, 1, 70, 90), 5, 1, 2)[0]  # smooth, no ties
    m = heatmap_to_mask(h, MaskOptions(threshold_mode="percentile", area=area))[0].bool()
    assert abs(int(m.sum()) - area * h.numel()) <= 1
    assert h[0][m].min() > h[0][~m].max()  # exactly the hottest pixels


def test_percentile_never_selects_the_minimum_plateau():
    h = torch.zeros(1, 50, 50)
    h[0, 10:20, 10:20] = torch.linspace(0.1, 1.0, 100).view(10, 10)  # 4% non-zero
    m = heatmap_to_mask(h, MaskOptions(threshold_mode="percentile", area=0.5))
    assert m.sum() == 100
    assert heatmap_to_mask(h, MaskOptions(threshold_mode="percentile", area=0.0)).sum() == 0
    assert heatmap_to_mask(h, MaskOptions(threshold_mode="percentile", area=0.02)).sum() == 50


def test_otsu_splits_two_values():
    v = torch.cat([torch.full((300,), 0.1), torch.full((700,), 0.9)])
    t = float(otsu_threshold(v))
    assert 0.1 <= t < 0.9
    assert int((v > t).sum()) == 700


@pytest.mark.parametrize(("m0", "m1", "n0", "n1"), [(0.2, 0.7, 4000, 1000), (-3.0, 5.0, 500, 3000)])
def test_otsu_matches_brute_force_on_bimodal_samples(m0, m1, n0, n1):
    g = torch.Generator().manual_seed(1)
    v = torch.cat(
        [m0 + 0.08 * torch.randn(n0, generator=g), m1 + 0.1 * torch.randn(n1, generator=g)]
    )
    t = float(otsu_threshold(v))
    exact = brute_force_otsu(v)
    assert m0 < t < m1
    assert abs(t - exact) <= 2 * (v.max() - v.min()) / 256
    assert ((v > t) != (v > exact)).float().mean() < 0.01


def test_otsu_batched_ignores_non_finite_and_handles_constants():
    g = torch.Generator().manual_seed(2)
    rows = torch.stack([torch.rand(500, generator=g) ** 3, torch.rand(500, generator=g) + 4])
    batched = otsu_threshold(rows, batched=True)
    assert batched.shape == (2,)
    for i in range(2):
        assert batched[i] == otsu_threshold(rows[i])
    with_nan = torch.cat([rows[0], torch.tensor([float("nan"), float("inf"), -float("inf")])])
    assert otsu_threshold(with_nan) == otsu_threshold(rows[0])
    assert otsu_threshold(torch.full((10,), 0.25)).ndim == 0
    assert float(otsu_threshold(torch.full((10,), 0.25))) == 0.25
    assert float(otsu_threshold(torch.full((4,), float("nan")))) == 0.0
    with pytest.raises(ValueError, match="bins"):
        otsu_threshold(rows, bins=1)


def test_otsu_mode_recovers_a_noisy_square_exactly():
    g = torch.Generator().manual_seed(3)
    h = 0.2 + 0.05 * torch.rand(1, 64, 64, generator=g)
    h[0, 16:40, 20:50] = 0.8 + 0.05 * torch.rand(24, 30, generator=g)
    m = heatmap_to_mask(h)  # Otsu is the default
    expected = torch.zeros(1, 64, 64, dtype=torch.bool)
    expected[0, 16:40, 20:50] = True
    assert torch.equal(m.bool(), expected)


def test_otsu_mode_uses_the_normalised_map_threshold():
    h = two_blobs()
    m = heatmap_to_mask(h, MaskOptions(threshold_mode="otsu"))
    n = normalize_heatmap(h)
    assert torch.equal(m.bool(), n > otsu_threshold(n))


# ---------------------------------------------------------------- blur


def test_blur_removes_salt_noise_before_thresholding():
    h = blob(64, 64, 32, 32, 6)
    h[0, 5, 5] = h[0, 60, 10] = 1.0  # isolated hot pixels
    opts = {"threshold_mode": "absolute", "threshold": 0.4}
    sharp = heatmap_to_mask(h, MaskOptions(**opts))[0]
    blurred = heatmap_to_mask(h, MaskOptions(blur=2.0, **opts))[0]
    assert sharp[5, 5] == 1 and sharp[60, 10] == 1
    assert blurred[5, 5] == 0 and blurred[60, 10] == 0 and blurred[32, 32] == 1


def test_blur_larger_than_a_patch_grid_does_not_crash():
    h = torch.rand(2, 7, 7)
    m = heatmap_to_mask(h, MaskOptions(blur=5.0, threshold_mode="percentile", area=0.3))
    assert m.shape == (2, 7, 7)


# ---------------------------------------------------------------- grow / shrink


def test_grow_adds_exactly_a_rounded_border_to_a_square():
    side = 20
    sq = square(80, 80, 30, 30, side)
    areas = [int(grow_mask(sq, g).sum()) for g in range(0, 9)]
    for g, a in enumerate(areas):
        assert a == side * side + 4 * side * g + 4 * disk_points(g)
    assert all(a < b for a, b in zip(areas[:-1], areas[1:], strict=True))


def test_shrink_removes_exactly_a_border_from_a_square():
    side = 20
    sq = square(80, 80, 30, 30, side)
    areas = [int(grow_mask(sq, -g).sum()) for g in range(0, 11)]
    assert areas == [(side - 2 * g) ** 2 for g in range(0, 11)]
    assert grow_mask(sq, -11).sum() == 0


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8])
def test_grow_matches_brute_force_disk_morphology(radius):
    g = torch.Generator().manual_seed(radius)
    m = torch.rand(2, 30, 41, generator=g) > 0.93
    assert torch.equal(grow_mask(m, radius), reference_dilate(m, radius))
    holes = torch.rand(2, 30, 41, generator=g) > 0.07
    assert torch.equal(grow_mask(holes, -radius), ~reference_dilate(~holes, radius))


def test_shrink_does_not_eat_in_from_the_image_border_and_huge_grow_fills():
    full = torch.ones(1, 20, 30, dtype=torch.bool)
    assert torch.equal(grow_mask(full, -5), full)
    dot = torch.zeros(1, 20, 30, dtype=torch.bool)
    dot[0, 3, 4] = True
    assert torch.equal(grow_mask(dot, 10**6), full)  # radius is capped, no long loop


def test_grow_option_changes_area_monotonically():
    h = two_blobs()
    areas = [float(heatmap_to_mask(h, MaskOptions(grow=g)).sum()) for g in (-6, -3, 0, 3, 6)]
    assert all(a < b for a, b in zip(areas[:-1], areas[1:], strict=True))


# ---------------------------------------------------------------- components, holes, boxes


def ring_heatmap(size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    return torch.exp(-((r - 16) ** 2) / (2 * 2.0**2))[None]  # hot annulus of radius 16


def test_fill_holes_fills_a_ring():
    h = ring_heatmap()
    ring = heatmap_to_mask(h, MaskOptions(threshold_mode="absolute", threshold=0.5))
    filled = heatmap_to_mask(
        h, MaskOptions(threshold_mode="absolute", threshold=0.5, fill_holes=True)
    )
    assert ring[0, 32, 32] == 0 and filled[0, 32, 32] == 1
    assert torch.equal(filled.bool() & ring.bool(), ring.bool())  # only adds pixels
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    inside = ((yy - 32) ** 2 + (xx - 32) ** 2) < 14**2
    assert filled[0][inside].all()
    assert filled.sum() > ring.sum() + 400


def test_fill_holes_leaves_regions_open_to_the_border():
    u = torch.zeros(1, 20, 20, dtype=torch.bool)
    u[0, 5:15, 5] = u[0, 5:15, 14] = u[0, 14, 5:15] = True  # a U, open at the top
    assert torch.equal(fill_holes(u), u)
    u[0, 0:5, 5] = u[0, 0:5, 14] = True  # walls reach the image border: enclosed only by the edge
    assert torch.equal(fill_holes(u), u)
    closed = u.clone()
    closed[0, 5, 5:15] = True  # lid: the 8x8 inside is now a hole
    assert int(fill_holes(closed).sum()) == int(closed.sum()) + 8 * 8


def test_fill_holes_diagonal_gaps_count_as_closed():
    diamond = torch.zeros(1, 9, 9, dtype=torch.bool)
    for i in range(4):  # 8-connected diamond outline around the centre
        diamond[0, 4 - i, i] = diamond[0, 4 + i, i] = diamond[0, i, 4 + i] = diamond[
            0, 8 - i, 4 + i
        ] = True
    diamond[0, 4, 8] = True
    assert fill_holes(diamond)[0, 4, 4]


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_match_bfs(connectivity):
    g = torch.Generator().manual_seed(connectivity)
    for p in (0.3, 0.5, 0.65):
        m = torch.rand(3, 33, 47, generator=g) < p
        labels = connected_components(m, connectivity)
        for i in range(3):
            assert torch.equal(labels[i], reference_labels(m[i], connectivity))
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(m, 6)


def test_connected_components_follow_a_long_serpentine():
    m = torch.zeros(1, 64, 64, dtype=torch.bool)
    m[0, ::2] = True
    for y in range(1, 64, 2):
        m[0, y, 63 if y % 4 == 1 else 0] = True
    assert connected_components(m).unique().tolist() == [0, 1]


def test_keep_largest_drops_the_small_blob():
    h = two_blobs()
    opts = MaskOptions(threshold_mode="absolute", threshold=0.3)
    both = heatmap_to_mask(h, opts)[0]
    largest = heatmap_to_mask(
        h, MaskOptions(threshold_mode="absolute", threshold=0.3, keep="largest")
    )[0]
    assert both[50, 100] == 1 and largest[50, 100] == 0
    assert largest[40, 35] == 1
    assert torch.equal(largest.bool(), both.bool() & (torch.arange(128) < 70))


def test_keep_largest_matches_reference_per_image():
    g = torch.Generator().manual_seed(5)
    m = torch.rand(4, 30, 30, generator=g) < 0.45
    m[3] = False  # an empty image stays empty
    kept = keep_largest_component(m)
    for i in range(3):
        labels = reference_labels(m[i], 8)
        sizes = torch.bincount(labels.flatten())[1:]
        assert int(kept[i].sum()) == int(sizes.max())
        assert labels[kept[i]].unique().numel() == 1
    assert kept[3].sum() == 0


def test_bbox_gives_the_rectangle_around_all_kept_pixels():
    h = two_blobs()
    opts = {"threshold_mode": "absolute", "threshold": 0.3}
    both = heatmap_to_mask(h, MaskOptions(**opts))
    box = heatmap_to_mask(h, MaskOptions(keep="bbox", **opts))
    x0, y0, x1, y1 = mask_to_box(both)
    expected = torch.zeros_like(box)
    expected[0, y0:y1, x0:x1] = 1
    assert torch.equal(box, expected)
    assert mask_to_box(box) == (x0, y0, x1, y1)
    assert x0 < 35 < 100 < x1  # spans both blobs
    assert fill_bbox(torch.zeros(2, 5, 5, dtype=torch.bool)).sum() == 0


def test_mask_to_box_convention():
    m = torch.zeros(1, 10, 12)
    m[0, 2:5, 3:9] = 1.0
    assert mask_to_box(m) == (3, 2, 9, 5)  # x0, y0, exclusive x1, y1
    assert mask_to_box(m[0]) == (3, 2, 9, 5)
    assert mask_to_box(m * 0.4) is None  # nothing above 0.5
    assert mask_to_box(m * 0.4, threshold=0.3) == (3, 2, 9, 5)
    assert mask_to_box(torch.zeros(4, 4)) is None
    with pytest.raises(ValueError, match="per image"):
        mask_to_box(torch.zeros(2, 4, 4))


# ---------------------------------------------------------------- feather, invert


def test_feather_is_soft_only_near_edges_and_one_deep_inside():
    sq = square(64, 64, 16, 16, 32)
    f = 4.0
    out = heatmap_to_mask(
        sq.float(), MaskOptions(threshold_mode="absolute", threshold=0.5, feather=f)
    )
    assert out.min() >= 0 and out.max() <= 1
    soft = (out > 0) & (out < 1)
    assert soft.sum() > 0

    def chebyshev_band(r: int) -> torch.Tensor:  # pixels within r px (Chebyshev) of the edge
        grown = F.max_pool2d(sq.float(), 2 * r + 1, 1, r) > 0
        shrunk = F.max_pool2d(-sq.float(), 2 * r + 1, 1, r) > -1
        return grown & shrunk

    # the truncated kernel is a 9x9 square: soft values only within 4 px of the edge
    assert not (soft & ~chebyshev_band(4)).any()
    assert (out[sq & ~chebyshev_band(4)] == 1).all()  # deep inside: exactly 1
    assert (out[~sq & ~chebyshev_band(4)] == 0).all()  # far outside: exactly 0
    assert soft[0, 32, 12:20].all()  # the whole band across a straight edge is soft
    assert out[0, 32, 15].item() == pytest.approx(1 - out[0, 32, 16].item(), abs=1e-6)  # symmetric
    assert out.sum().item() == pytest.approx(sq.sum().item(), rel=0.01)  # mass kept


def test_feather_keeps_a_full_mask_full():
    full = torch.ones(1, 16, 16)
    assert torch.equal(feather_mask(full, 6.0), full)
    assert torch.equal(feather_mask(full, 0.0), full)


@pytest.mark.parametrize(
    "opts",
    [
        MaskOptions(),
        MaskOptions(threshold_mode="percentile", feather=3.0, grow=2),
        MaskOptions(keep="bbox"),
    ],
)
def test_invert_is_the_complement(opts):
    h = two_blobs()
    base = heatmap_to_mask(h, opts)
    inv = heatmap_to_mask(h, replace(opts, invert=True))
    assert torch.allclose(inv, 1 - base, atol=0)


# ---------------------------------------------------------------- degenerate inputs and contract

DEGENERATE = {
    "zeros": torch.zeros(2, 16, 24),
    "constant": torch.full((2, 16, 24), 3.7),
    "negative constant": torch.full((2, 16, 24), -1e6),
    "all nan": torch.full((2, 16, 24), float("nan")),
    "all inf": torch.full((2, 16, 24), float("inf")),
    "nan and zeros": torch.where(torch.rand(2, 16, 24) > 0.5, float("nan"), 0.0),
}


@pytest.mark.parametrize("name", DEGENERATE)
@pytest.mark.parametrize(
    "opts",
    [
        MaskOptions(),
        MaskOptions(threshold_mode="absolute", threshold=0.0),
        MaskOptions(threshold_mode="percentile", area=1.0),
        MaskOptions(threshold_mode="absolute", threshold=-5.0, normalize=False),
        MaskOptions(blur=2, grow=3, fill_holes=True, keep="largest", feather=2),
        MaskOptions(keep="bbox"),
    ],
)
def test_empty_constant_and_nan_inputs_give_zero_masks(name, opts):
    out = heatmap_to_mask(DEGENERATE[name], opts)
    assert out.shape == (2, 16, 24) and out.dtype == torch.float32
    assert out.sum() == 0


def test_float_rounding_noise_on_a_constant_map_still_counts_as_constant():
    g = torch.Generator().manual_seed(4)
    h = torch.full((2, 9, 11), 0.3)
    h = torch.nextafter(h, torch.ones_like(h)).where(torch.rand(h.shape, generator=g) > 0.5, h)
    h[1] *= 1e4  # relative, not absolute: large constant maps too
    assert (h.amax(dim=(1, 2)) > h.amin(dim=(1, 2))).all()  # not exactly constant
    for opts in (MaskOptions(), MaskOptions(threshold_mode="percentile", blur=0.6)):
        assert heatmap_to_mask(h, opts, size=(101, 77)).sum() == 0
    assert normalize_heatmap(h).sum() == 0


def test_nan_counts_as_zero():
    h = two_blobs()
    with_nan = h.clone()
    with_nan[0, :10, :10] = float("nan")  # a cold corner: NaN -> 0 changes nothing
    h_zero = h.clone()
    h_zero[0, :10, :10] = 0
    for opts in (MaskOptions(), MaskOptions(threshold_mode="percentile", blur=1.5)):
        assert torch.equal(heatmap_to_mask(with_nan, opts), heatmap_to_mask(h_zero, opts))


def test_empty_tensors_do_not_crash():
    assert heatmap_to_mask(torch.zeros(0, 8, 8)).shape == (0, 8, 8)
    assert heatmap_to_mask(torch.zeros(0, 8, 8), size=(4, 5)).shape == (0, 4, 5)
    assert heatmap_to_mask(torch.zeros(2, 0, 8)).shape == (2, 0, 8)


def test_scale_invariance_for_tiny_and_huge_heatmaps():
    h = two_blobs()
    ref = heatmap_to_mask(h)
    for scaled in (h * 1e-20, h * 1e20 - 3e19):
        assert (heatmap_to_mask(scaled) != ref).sum() <= 2  # float rounding at the threshold


def test_2d_input_gives_a_batch_of_one_and_batches_are_independent():
    h = two_blobs()[0]
    single = heatmap_to_mask(h)
    assert single.shape == (1, 96, 128)
    batch = torch.stack([h, h.flip(1) * 4, torch.zeros_like(h)])  # x4 is exact in float
    out = heatmap_to_mask(batch, MaskOptions(keep="largest", grow=2))
    for i in range(3):
        assert torch.equal(
            out[i], heatmap_to_mask(batch[i], MaskOptions(keep="largest", grow=2))[0]
        )
    assert torch.equal(out[1], out[0].flip(1))


def test_size_resizes_patch_maps_bilinearly():
    h = torch.zeros(1, 7, 7)
    h[0, 1, 5] = 1.0  # hot patch in the top-right
    out = heatmap_to_mask(h, MaskOptions(threshold_mode="absolute", threshold=0.5), size=(224, 160))
    assert out.shape == (1, 224, 160)
    x0, y0, x1, y1 = mask_to_box(out)
    assert 160 * 5 / 7 <= (x0 + x1) / 2 <= 160 * 6 / 7
    assert 224 * 1 / 7 <= (y0 + y1) / 2 <= 224 * 2 / 7
    same = heatmap_to_mask(h, size=(7, 7))
    assert torch.equal(same, heatmap_to_mask(h))
    for bad in [(224,), (224, -1), "224x160", (2.5, 3)]:
        with pytest.raises(ValueError, match="size"):
            heatmap_to_mask(h, size=bad)  # type: ignore[arg-type]


def test_size_interpolates_instead_of_repeating_patches():
    h = torch.zeros(1, 7, 7)
    h[0, 3, 3] = 1.0
    out = heatmap_to_mask(h, MaskOptions(threshold_mode="absolute", threshold=0.5), size=(70, 70))
    area = int(out.sum())
    assert 20 < area < 90  # a bilinear tent above 0.5 is smaller than the 10x10 patch cell
    assert not torch.equal(out.bool(), fill_bbox(out.bool()))  # rounded, not a pasted square
    assert out[0, 35, 35] == 1


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool]
)
def test_output_contract_for_any_input_dtype(dtype):
    h = (two_blobs() * 100).to(dtype)
    out = heatmap_to_mask(h, MaskOptions(feather=2.0))
    assert out.dtype == torch.float32 and out.shape == (1, 96, 128)
    assert out.is_contiguous() and out.min() >= 0 and out.max() <= 1


def test_non_contiguous_and_grad_inputs():
    base = two_blobs()
    h = base.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)
    assert not h.is_contiguous()
    out = heatmap_to_mask(h)
    assert out.is_contiguous() and not out.requires_grad
    assert torch.equal(out, heatmap_to_mask(base))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        heatmap_to_mask(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="torch.Tensor"):
        heatmap_to_mask([[0.0, 1.0]])  # type: ignore[arg-type]


def test_works_under_inference_mode():
    h = two_blobs()
    opts = MaskOptions(blur=1.0, grow=-2, fill_holes=True, keep="largest", feather=2.0, invert=True)
    expected = heatmap_to_mask(h, opts)
    with torch.inference_mode():
        assert torch.equal(heatmap_to_mask(h, opts), expected)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_is_preserved_and_results_match_cpu(device):
    h = two_blobs().repeat(2, 1, 1)
    opts = MaskOptions(blur=1.0, grow=3, fill_holes=True, keep="largest", feather=2.0)
    out = heatmap_to_mask(h.to(device), opts, size=(120, 160))
    assert out.device.type == device and out.dtype == torch.float32
    assert torch.allclose(out.cpu(), heatmap_to_mask(h, opts, size=(120, 160)), atol=1e-5)


def test_normalize_heatmap_per_image():
    h = torch.stack([two_blobs()[0] * 3 + 1, torch.full((96, 128), 2.0), two_blobs()[0] - 7])
    h[2, 0, 0] = float("nan")
    n = normalize_heatmap(h)
    assert n.shape == h.shape and torch.isfinite(n).all()
    assert n[0].min() == 0 and n[0].max() == 1
    assert n[1].abs().sum() == 0
    assert n.min() >= 0 and n.max() <= 1
    tiny = normalize_heatmap(h[:1] * 1e-20)
    assert tiny.max() == 1 and torch.allclose(tiny, n[:1], atol=1e-6)  # scale invariant


def test_megapixel_with_every_step_is_fast():
    h = F.interpolate(two_blobs()[None], size=(1024, 1024), mode="bilinear")[0]
    opts = MaskOptions(blur=2.0, grow=8, fill_holes=True, keep="largest", feather=4.0)
    start = time.perf_counter()
    out = heatmap_to_mask(h, opts)
    assert time.perf_counter() - start < 20  # ~1 s on one CPU thread; guards against blow-ups
    assert out.shape == (1, 1024, 1024) and 0 < out.mean() < 1
