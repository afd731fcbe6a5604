"""Tiny-CLIP training on the shapes world, and the shipped default model in models/shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from relevancy.loading import default_model_path, load_clip
from relevancy.shapes import train as T
from relevancy.shapes import world as W
from relevancy.shapes.__main__ import main as cli
from relevancy.shapes.evaluate import Scorer, ceiling_metrics, evaluate, score_maps, wrap_model

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "relevancy" / "shapes" / "configs" / "tiny.json"
DEFAULT = ROOT / "relevancy" / "shapes" / "configs" / "default.json"
SHIPPED = ROOT / "models" / "shapes"


def test_truth_matrix_matches_is_true() -> None:
    world = W.ShapeWorld()
    rng = np.random.default_rng(0)
    scenes = world.batch(rng, 40)
    descs = [W.describe(s, rng, partial_prob=0.5) for s in scenes]
    descs += [W.hard_negative(d, s.objects, rng) for d, s in zip(descs, scenes, strict=True)]
    brute = torch.tensor([[float(W.is_true(d, s.objects)) for d in descs] for s in scenes])
    got = T.truth_matrix(scenes, descs)
    assert torch.equal(got, brute)
    assert torch.diagonal(got[:, :40]).min() == 1 and torch.diagonal(got[:, 40:]).max() == 0


def test_contrastive_loss_prefers_aligned_features() -> None:
    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    truth = torch.cat([torch.eye(8), torch.zeros(8, 8)], dim=1)
    aligned = torch.cat([f, -f], dim=0)
    shuffled = torch.cat([f.roll(1, 0), -f], dim=0)
    scale = torch.tensor(10.0)
    assert T.contrastive_loss(f, aligned, scale, truth) < T.contrastive_loss(f, shuffled, scale, truth) - 1


def test_patch_labels() -> None:
    world = W.ShapeWorld()
    s = world.render(np.random.default_rng(0), [("blue", "square", "large")])
    col, shp = T.patch_labels([s], 8, 8)
    grid = s.objects[0].mask.reshape(8, 8, 8, 8).mean(axis=(1, 3)).flatten()
    assert ((col[0] > 0).numpy() == (grid >= 0.25)).all()
    assert set(col[0].unique().tolist()) == {0, W.COLOUR_NAMES.index("blue") + 1}
    assert set(shp[0].unique().tolist()) == {0, W.SHAPES.index("square") + 1}


def test_lr_schedule() -> None:
    cfg = T.TrainConfig(model_cfg={}, steps=100, warmup_steps=10, lr=1e-3, min_lr_frac=0.1)
    assert T.lr_at(0, cfg) == pytest.approx(1e-4)
    assert T.lr_at(9, cfg) == pytest.approx(1e-3)
    assert T.lr_at(99, cfg) == pytest.approx(1e-4, rel=0.01)


def test_train_command_writes_loadable_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "model"
    assert cli(["train", "--config", str(TINY), "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert '"step": 3' in printed and "training_seconds:" in printed
    side = json.loads((out / "open_clip_config.json").read_text())
    assert side["model_cfg"]["quick_gelu"] is False
    assert side["preprocess_cfg"]["size"] == 64 and side["preprocess_cfg"]["interpolation"] == "bicubic"
    sd = load_file(str(out / "open_clip_model.safetensors"))
    ref = T.build_clip(side["model_cfg"]).state_dict()
    assert set(sd) == set(ref)  # no training-only heads in the export
    clip = load_clip(out)  # the pack's own loader
    sims = Scorer(clip).image_features(np.stack([W.ShapeWorld().sample(np.random.default_rng(1)).image]))
    assert torch.isfinite(sims).all()
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["history"]) == 3 and all(np.isfinite(h["loss"]) for h in log["history"])
    # same seed -> same weights
    out2 = tmp_path / "again"
    assert cli(["train", "--config", str(TINY), "--out", str(out2), "--threads", "1"]) == 0
    sd2 = load_file(str(out2 / "open_clip_model.safetensors"))
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_training_steps_reduce_loss() -> None:
    cfg = T.TrainConfig.from_json(TINY)
    cfg.steps, cfg.log_every, cfg.lr, cfg.warmup_steps, cfg.batch_size = 30, 1, 3e-3, 3, 32
    _, summary = T.train(cfg, log=lambda s: None)
    hist = [h["loss"] for h in summary["history"]]
    assert np.mean(hist[-5:]) < np.mean(hist[:5]) - 0.2


def test_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_cfg": {}, "stepz": 3}))
    with pytest.raises(ValueError, match="stepz"):
        T.TrainConfig.from_json(bad)
    bad.write_text(json.dumps({"steps": 3}))
    with pytest.raises(ValueError, match="model_cfg"):
        T.TrainConfig.from_json(bad)


def test_default_config_matches_shipped_sidecar() -> None:
    cfg = T.TrainConfig.from_json(DEFAULT)
    side = json.loads((SHIPPED / "open_clip_config.json").read_text())
    assert side == T.sidecar_config(cfg)
    assert side["model_cfg"]["text_cfg"]["vocab_size"] == 49408


def test_shipped_model_loads_and_scores_above_floors() -> None:
    path = SHIPPED / "open_clip_model.safetensors"
    assert path.stat().st_size <= 20 * 1024 * 1024
    assert default_model_path() == SHIPPED
    clip = load_clip(SHIPPED)
    res = evaluate(clip, n=60, seed=123, heldout=False, detector=False)
    floors = {"colour_acc": 0.85, "shape_acc": 0.7, "binding_acc": 0.7, "pointing_game": 0.7, "pointing_game_tol4px": 0.85,
              "mask_iou": 0.45, "retrieval_top1": 0.5}
    low = {k: round(res[k], 3) for k, v in floors.items() if not res[k] >= v}
    assert not low, f"shipped model below floors: {low} (all: {res})"


def test_in_memory_model_wrap_matches_loader(tmp_path: Path) -> None:
    cfg = T.TrainConfig.from_json(TINY)
    cfg.export_dtype = "float32"
    torch.manual_seed(0)
    model = T.build_clip(cfg.model_cfg).eval()
    T.export_model(model, cfg, tmp_path)
    img = np.stack([W.ShapeWorld().sample(np.random.default_rng(2)).image])
    a = Scorer(wrap_model(model, T.sidecar_config(cfg))).image_features(img)
    b = Scorer(load_clip(tmp_path)).image_features(img)
    assert torch.allclose(a, b, atol=1e-5)


def test_batches_hold_twins_and_negatives() -> None:
    cfg = T.TrainConfig.from_json(TINY)
    cfg.batch_size, cfg.twin_frac, cfg.negatives = 20, 0.5, 2
    batch = T.Batcher(cfg, T.CaptionTokenizer(20)).next(step=5)  # past the single-object phase
    scenes, texts, truth = batch["scenes"], batch["texts"], batch["truth"]
    assert len(scenes) == 20 and len(texts) == 60 and truth.shape == (20, 60)
    assert batch["ids"].shape == (60, 20)
    for k in range(10):  # scene k + 10 is a twin of scene k: same layout, other attributes
        a, b = scenes[k], scenes[k + 10]
        assert [o.footprint for o in a.objects] == [o.footprint for o in b.objects]
        assert [(o.colour, o.shape) for o in a.objects] != [(o.colour, o.shape) for o in b.objects]
    assert torch.diagonal(truth[:, :20]).min() == 1
    assert truth[:, 20:40].diagonal().max() == 0 and truth[:, 40:].diagonal().max() == 0
    with pytest.raises(ValueError, match="twin_frac"):
        cfg.twin_frac = 0.8
        T.Batcher(cfg, T.CaptionTokenizer(20)).next(step=5)


def test_relevancy_targets_cover_the_mentioned_objects() -> None:
    world = W.ShapeWorld()
    s = world.render(np.random.default_rng(3), [("red", "circle", "large"), ("blue", "square", "large")])
    red, blue = s.objects
    one = W.Description((red.phrase(),))
    both = W.Description((red.phrase(), blue.phrase()))
    t = T.relevancy_targets([s, s], [one, both], 8)
    assert t.shape == (2, 64) and torch.allclose(t.sum(1), torch.ones(2))
    cov_red = torch.from_numpy(red.mask.reshape(8, 8, 8, 8).mean(axis=(1, 3)).ravel())
    cov_blue = torch.from_numpy(blue.mask.reshape(8, 8, 8, 8).mean(axis=(1, 3)).ravel())
    assert torch.equal(t[0] > 0, cov_red > 0)  # only the red circle's patches
    assert torch.equal(t[1] > 0, (cov_red + cov_blue) > 0)
    assert int(t[0].argmax()) == int(cov_red.argmax())  # the most covered patch weighs most


def test_relevancy_loss_is_second_order_and_trainable() -> None:
    cfg = T.TrainConfig.from_json(TINY)
    cfg.model_cfg = json.loads(json.dumps(cfg.model_cfg))
    cfg.model_cfg["vision_cfg"]["patch_size"] = 8
    torch.manual_seed(0)
    model = T.build_clip(cfg.model_cfg)
    view = wrap_model(model, T.sidecar_config(cfg))
    world = W.ShapeWorld()
    rng = np.random.default_rng(0)
    scenes = world.batch(rng, 8, n_objects=2)
    descs = [W.Description((s.objects[0].phrase(),)) for s in scenes]
    ids = T.CaptionTokenizer(20)([d.text() for d in descs])
    x = Scorer(view).pixels(np.stack([s.image for s in scenes]))
    target = T.relevancy_targets(scenes, descs, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = T.relevancy_loss(view, x, ids, target)
        opt.zero_grad()
        loss.backward()
        if not losses:  # the loss reaches the vision tower's weights through the attention gradients
            grads = [p.grad for p in model.visual.transformer.parameters()]
            assert any(g is not None and g.abs().sum() > 0 for g in grads)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_init_fine_tunes_from_a_saved_model(tmp_path: Path) -> None:
    cfg = T.TrainConfig.from_json(TINY)
    cfg.export_dtype = "float32"
    torch.manual_seed(5)
    T.export_model(T.build_clip(cfg.model_cfg), cfg, tmp_path / "start")
    cfg.init, cfg.steps = str(tmp_path / "start"), 0
    T.train(cfg, out=tmp_path / "same", log=lambda s: None)
    a = load_file(str(tmp_path / "start" / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "same" / "open_clip_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg.model_cfg = json.loads(json.dumps(cfg.model_cfg))
    cfg.model_cfg["vision_cfg"]["width"] = 48
    with pytest.raises(ValueError, match="does not match the config"):
        T.train(cfg, log=lambda s: None)


def test_pointing_scores_and_their_ceiling() -> None:
    world = W.ShapeWorld()
    scenes = world.batch(np.random.default_rng(7), 40, n_objects=2)
    coarse, fine, exact = (ceiling_metrics(scenes, (g, g)) for g in (8, 16, 64))
    assert exact["pointing_game_ceiling"] == 1.0 and exact["mask_iou_ceiling"] > 0.9
    assert coarse["pointing_game_ceiling"] < fine["pointing_game_ceiling"] <= 1.0
    assert 0.5 < coarse["mask_iou_ceiling"] < fine["mask_iou_ceiling"]
    # a map that points at the other object scores zero
    s = scenes[0]
    a, b = s.objects
    wrong = torch.from_numpy(np.stack([b.mask, a.mask]).astype(np.float32))
    res = score_maps(wrong, [a, b], (64, 64))
    assert res["strict"] == [False, False] and max(res["iou"]) < 0.05


def test_mirror_twins_differ_only_in_the_relation() -> None:
    world = W.ShapeWorld()
    s = world.render(np.random.default_rng(4), [("red", "circle", "large"), ("blue", "square", "small")])
    m = world.mirror(s)
    assert [(o.colour, o.shape, o.size) for o in m.objects] == [(o.colour, o.shape, o.size) for o in s.objects]
    for a, b in zip(s.objects, m.objects, strict=True):
        assert a.mask.sum() == b.mask.sum() and abs((a.centre[0] + b.centre[0]) - 63) <= 1
        assert np.array_equal(b.mask, a.mask[:, ::-1]) or a.shape != "square"
    rel = W.relation_of(*s.objects)
    if rel in W.HORIZONTAL_RELATIONS:
        assert W.relation_of(*m.objects) == W.OPPOSITE[rel]
    cfg = T.TrainConfig.from_json(TINY)
    cfg.batch_size, cfg.twin_frac, cfg.twin_mirror_prob, cfg.relation_prob, cfg.partial_prob = 40, 0.5, 1.0, 1.0, 0.0
    batch = T.Batcher(cfg, T.CaptionTokenizer(20)).next(step=5)
    descs, scenes, truth = batch["descs"], batch["scenes"], batch["truth"]
    mirrored = [k for k in range(20) if descs[k].relation in W.HORIZONTAL_RELATIONS]
    assert mirrored, "no left/right captions drawn"
    for k in mirrored:  # the twin is the mirror image, its caption has the opposite relation
        assert [o.footprint[1:] for o in scenes[k + 20].objects] == [o.footprint[1:] for o in scenes[k].objects]
        assert all(abs(a.centre[0] + b.centre[0] - 63) <= 1 for a, b in zip(scenes[k].objects, scenes[k + 20].objects, strict=True))
        assert descs[k + 20].phrases == descs[k].phrases
        assert descs[k + 20].relation in (W.OPPOSITE[descs[k].relation], None)
        if descs[k + 20].relation is not None:
            assert truth[k + 20, k] == 0 and truth[k, k + 20] == 0
