"""The pack's nodes executed by the real ComfyUI engine in this process, under inference mode."""

from __future__ import annotations

import json

import pytest
import torch
from clip_factory import CONFIGS, make_clip, save_open_clip_safetensors, write_sidecar

from relevancy.explain import explain, normalize_minmax
from relevancy.images import heatmap_to_frame, preprocess_tensor

NODE_IDS = ["NTLB_LoadRelevancyCLIP", "NTLB_CLIPRelevancy", "NTLB_TokenCoverage", "NTLB_HeatmapToMask"]
MODEL = "tiny/open_clip_model.safetensors"
RELEVANCY_DEFAULTS = dict(score="logit", start_layer_image=0, start_layer_text=0, left_behind_threshold=0.7,
                          normalization="min-max", fit="crop", overlay_opacity=0.5)
MASK_DEFAULTS = dict(threshold_mode="otsu", threshold=0.5, area=0.2, blur=0.0, grow=0, fill_holes=False,
                     keep="all", feather=0.0, invert=False)


@pytest.fixture(scope="module")
def comfy(comfy_inprocess):
    comfy_inprocess.load_pack()
    return comfy_inprocess


@pytest.fixture(scope="module")
def tiny(comfy):
    """A random CLIP in the pack's model folder, and the engine's copy of it."""
    folder = comfy.base_dir / "models" / "relevancy_clip" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    clip = make_clip(CONFIGS["deeper"], seed=21)
    write_sidecar(save_open_clip_safetensors(clip, folder / "open_clip_model.safetensors"), clip)
    return clip


@pytest.fixture(scope="module")
def managed(comfy, tiny):
    return comfy.run_node("NTLB_LoadRelevancyCLIP", model=MODEL, device="auto", dtype="auto",
                          activation="auto").outputs[0]


def _relevancy(comfy, managed, image, prompt, **kw):
    return comfy.run_node("NTLB_CLIPRelevancy", relevancy_clip=managed, image=image, prompt=prompt,
                          **{**RELEVANCY_DEFAULTS, **kw})


def test_nodes_registered_with_tooltips_and_descriptions(comfy):
    for node_id in NODE_IDS:
        cls = comfy.node_class(node_id)
        info = cls.GET_NODE_INFO_V1()
        assert info["description"], node_id
        assert info["category"].startswith("No Token Left Behind/"), node_id
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(info["output_tooltips"]), f"{node_id} output without tooltip"


def test_loader_lists_builtin_and_folder_models_and_caches(comfy, tiny, managed):
    info = comfy.node_class("NTLB_LoadRelevancyCLIP").GET_NODE_INFO_V1()
    options = info["input"]["required"]["model"][1]["options"]
    assert options[0] == "shapes (built-in)" and MODEL in options
    again = comfy.run_node("NTLB_LoadRelevancyCLIP", model=MODEL, device="auto", dtype="auto",
                           activation="auto").outputs[0]
    assert again is managed  # loaded once
    assert not any(p.is_inference() for p in managed.clip.model.parameters())


def test_corrupt_model_file_is_a_clear_error(comfy):
    bad = comfy.base_dir / "models" / "relevancy_clip" / "broken.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="broken.safetensors.*truncated or corrupt"):
        comfy.run_node("NTLB_LoadRelevancyCLIP", model="broken.safetensors", device="cpu", dtype="fp32",
                       activation="auto")


def test_relevancy_outputs_follow_comfy_conventions_and_match_the_engine(comfy, tiny, managed):
    image = torch.rand(2, 60, 80, 3, generator=torch.Generator().manual_seed(0))
    out = _relevancy(comfy, managed, image, "a red circle | a [blue] square\na tree")
    overlays, heat, report = out.outputs
    assert overlays.shape == (6, 60, 80, 3) and heat.shape == (6, 60, 80)
    assert heat.dtype == torch.float32 and overlays.dtype == torch.float32
    assert 0.0 <= float(heat.min()) and float(heat.max()) <= 1.0
    assert 0.0 <= float(overlays.min()) and float(overlays.max()) <= 1.0
    # crop fit: the 10-pixel side bands CLIP never saw carry no heat
    assert heat[:, :, :10].abs().max() == 0 and heat[:, :, 70:].abs().max() == 0
    # phrase-major and identical to the engine's own maps
    pix = preprocess_tensor(tiny, image.movedim(-1, 1))
    exp = explain(tiny, pix, ["a red circle", "a [blue] square", "a tree"])
    want = normalize_minmax(heatmap_to_frame(exp.image_relevance, 60, 80).clamp_min(0), dims=(-2, -1))
    torch.testing.assert_close(heat, want, atol=1e-4, rtol=1e-4)
    data = json.loads(report)
    assert [(r["image_index"], r["phrase"]) for r in data["results"]] == [
        (0, "a red circle"), (1, "a red circle"), (0, "a [blue] square"), (1, "a [blue] square"),
        (0, "a tree"), (1, "a tree")]
    assert [w["word"] for w in data["results"][2]["words"] if w["semantic"]] == ["blue"]
    ui_rows = out.ui["ntlb_report"][0]["results"]
    assert len(ui_rows) == 6 and "image_relevance" not in ui_rows[0]


def test_squash_fit_covers_the_whole_frame(comfy, managed):
    image = torch.rand(1, 40, 90, 3, generator=torch.Generator().manual_seed(1))
    heat = _relevancy(comfy, managed, image, "a cat", fit="squash").outputs[1]
    assert heat.shape == (1, 40, 90)
    assert heat[:, :, :10].max() > 0 and heat[:, :, 80:].max() > 0


def test_empty_prompt_is_a_clear_error(comfy, managed):
    with pytest.raises(ValueError, match="prompt is empty"):
        _relevancy(comfy, managed, torch.rand(1, 32, 32, 3), "  |  \n ")


def test_token_coverage_with_and_without_image(comfy, managed):
    kw = dict(relevancy_clip=managed, prompt="a red circle and a blue square", score="logit",
              start_layer_image=0, start_layer_text=0, left_behind_threshold=0.7)
    cov, behind, report = comfy.run_node("NTLB_TokenCoverage", **kw).outputs
    data = json.loads(report)
    assert data["prompt_only"] is True
    words = data["results"][0]["words"]
    sem = [w for w in words if w["semantic"]]
    assert [w["word"] for w in sem] == ["red", "circle", "blue", "square"]
    assert cov == pytest.approx(sum(not w["left_behind"] for w in sem) / 4)
    assert behind == ", ".join(w["word"] for w in sem if w["left_behind"])
    assert max(w["relevance"] for w in words) == pytest.approx(1.0)
    img = torch.rand(2, 48, 48, 3)
    cov2, _, report2 = comfy.run_node("NTLB_TokenCoverage", image=img, **kw).outputs
    assert len(json.loads(report2)["results"]) == 2 and 0.0 <= cov2 <= 1.0


def test_token_coverage_rejects_prompts_without_semantic_words(comfy, managed):
    with pytest.raises(ValueError, match="no semantic words"):
        comfy.run_node("NTLB_TokenCoverage", relevancy_clip=managed, prompt="the and of a", score="logit",
                       start_layer_image=0, start_layer_text=0, left_behind_threshold=0.7)


def test_masks_are_accepted_by_core_mask_nodes(comfy, managed):
    image = torch.rand(1, 64, 64, 3)
    heat = _relevancy(comfy, managed, image, "a circle").outputs[1]
    mask = comfy.run_node("NTLB_HeatmapToMask", heatmap=heat, image=image,
                          **{**MASK_DEFAULTS, "blur": 2.0, "grow": 2, "keep": "largest", "feather": 3.0}).outputs[0]
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32 and mask.max() == 1.0
    as_image = comfy.run_node("MaskToImage", mask=mask).outputs[0]
    assert as_image.shape == (1, 64, 64, 3)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    noised = comfy.run_node("SetLatentNoiseMask", samples=latent, mask=mask).outputs[0]
    assert noised["noise_mask"].shape[-2:] == (64, 64)
    comp = comfy.run_node("ImageCompositeMasked", destination=image, source=torch.zeros(1, 64, 64, 3), x=0, y=0,
                          resize_source=False, mask=mask).outputs[0]
    assert torch.allclose(comp[0][mask[0] == 1], torch.zeros(3))
    cond = [[torch.zeros(1, 4, 8), {}]]
    masked = comfy.run_node("ConditioningSetMask", conditioning=cond, mask=mask, strength=1.0,
                            set_cond_area="default").outputs[0]
    assert masked[0][1]["mask"].shape[-2:] == (64, 64)


def test_flat_heatmap_gives_an_empty_mask_not_an_error(comfy):
    mask = comfy.run_node("NTLB_HeatmapToMask", heatmap=torch.zeros(2, 16, 16), **MASK_DEFAULTS).outputs[0]
    assert mask.shape == (2, 16, 16) and mask.max() == 0


def test_mask_image_mismatch_errors(comfy):
    with pytest.raises(ValueError, match="aspect ratios differ"):
        comfy.run_node("NTLB_HeatmapToMask", heatmap=torch.rand(1, 16, 16), image=torch.rand(1, 16, 32, 3),
                       **MASK_DEFAULTS)
    with pytest.raises(ValueError, match="not a multiple of the image batch"):
        comfy.run_node("NTLB_HeatmapToMask", heatmap=torch.rand(3, 16, 16), image=torch.rand(2, 32, 32, 3),
                       **MASK_DEFAULTS)


def test_cancel_stops_relevancy(comfy, managed):
    mm = comfy.model_management
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _relevancy(comfy, managed, torch.rand(3, 32, 32, 3), "a | b | c | d")
    finally:
        mm.interrupt_current_processing(False)


def test_cancel_stops_heatmap_to_mask(comfy):
    mm = comfy.model_management
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            comfy.run_node("NTLB_HeatmapToMask", heatmap=torch.rand(4, 32, 32), **MASK_DEFAULTS)
    finally:
        mm.interrupt_current_processing(False)


def test_validate_inputs_rejects_unknown_combo_values(comfy):
    rel = comfy.node_class("NTLB_CLIPRelevancy")
    assert rel.validate_inputs(score="logit", normalization="sum-max", fit="squash") is True
    msg = rel.validate_inputs(score="logit", normalization="l2", fit="crop")
    assert isinstance(msg, str) and msg.startswith("normalization: 'l2' is not one of")
    loader = comfy.node_class("NTLB_LoadRelevancyCLIP")
    assert "device: 'gpu'" in loader.validate_inputs(model="shapes (built-in)", device="gpu", dtype="auto",
                                                     activation="auto")
