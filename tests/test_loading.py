"""Checkpoint loading: every format round-trips; bad files give errors naming file and problem."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from clip_factory import (
    CONFIGS,
    ODD_HEADS,
    hf_model,
    make_clip,
    save_hf,
    save_open_clip_bin,
    save_open_clip_safetensors,
    save_openai,
    state_dict,
    write_sidecar,
)
from safetensors.torch import save_file

from relevancy.loading import CheckpointError, load_clip
from relevancy.tokens import tokenize

torch.set_num_threads(1)


def _inputs(clip, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    size = clip.image_size
    images = torch.randn(n, 3, size, size, generator=g)
    ids = torch.stack([tokenize(t, clip.context_length).padded_ids(clip.context_length)
                       for t in ("a red circle", "two small blue stars and a cross")[:n]])
    return images, ids


def _max_diff(a, b):
    ia, ta = _inputs(a)
    with torch.no_grad():
        di = (a.model.encode_image(ia) - b.model.encode_image(ia)).abs().max()
        dt = (a.model.encode_text(ta) - b.model.encode_text(ta)).abs().max()
    return float(max(di, dt))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("fmt", ["safetensors", "bin", "pth_openai"])
def test_round_trip_infers_architecture(tmp_path, name, fmt):
    quick = fmt == "pth_openai"  # OpenAI-format files default to QuickGELU
    ref = make_clip(CONFIGS[name], seed=3, quick_gelu=quick)
    path = {"safetensors": lambda: save_open_clip_safetensors(ref, tmp_path / "m.safetensors"),
            "bin": lambda: save_open_clip_bin(ref, tmp_path / "m.bin"),
            "pth_openai": lambda: save_openai(ref, tmp_path / "m.pth")}[fmt]()
    loaded = load_clip(path)
    assert loaded.spec.source_format == ("openai" if quick else "open_clip")
    v, t = loaded.spec.model_cfg["vision_cfg"], loaded.spec.model_cfg["text_cfg"]
    want_v, want_t = CONFIGS[name]["vision_cfg"], CONFIGS[name]["text_cfg"]
    for key in ("image_size", "patch_size", "width", "layers", "head_width"):
        assert v[key] == want_v[key], key
    for key in ("context_length", "width", "heads", "layers"):
        assert t[key] == want_t[key], key
    assert loaded.spec.model_cfg["embed_dim"] == CONFIGS[name]["embed_dim"]
    assert loaded.spec.model_cfg["quick_gelu"] is quick
    assert _max_diff(ref, loaded) <= 1e-5
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert not loaded.model.training


def test_gelu_default_warns_and_explicit_option_wins(tmp_path, caplog):
    ref = make_clip(CONFIGS["small"], seed=1, quick_gelu=True)
    path = save_open_clip_safetensors(ref, tmp_path / "m.safetensors")
    with caplog.at_level(logging.WARNING):
        default = load_clip(path)
    assert "activation not recorded" in caplog.text and "m.safetensors" in caplog.text
    assert default.spec.model_cfg["quick_gelu"] is False
    assert _max_diff(ref, default) > 1e-4  # wrong activation gives different embeddings
    explicit = load_clip(path, quick_gelu=True)
    assert _max_diff(ref, explicit) <= 1e-5


def test_sidecar_config_wins_over_inference(tmp_path):
    ref = make_clip(ODD_HEADS, seed=2, quick_gelu=True)
    path = save_open_clip_safetensors(ref, tmp_path / "open_clip_model.safetensors")
    guessed = load_clip(path, quick_gelu=True)  # heads guessed as width//64 = 1
    assert guessed.spec.model_cfg["text_cfg"]["heads"] == 1
    assert _max_diff(ref, guessed) > 1e-4
    write_sidecar(path, ref)
    loaded = load_clip(tmp_path)  # a folder in the open_clip hub layout
    assert loaded.spec.model_cfg["text_cfg"]["heads"] == 4
    assert loaded.spec.model_cfg["quick_gelu"] is True
    assert _max_diff(ref, loaded) <= 1e-5


def test_stem_sidecar_is_preferred(tmp_path):
    ref = make_clip(ODD_HEADS, seed=2)
    path = save_open_clip_safetensors(ref, tmp_path / "mine.safetensors")
    (tmp_path / "mine.open_clip_config.json").write_text(json.dumps({"model_cfg": ref.spec.model_cfg}))
    assert _max_diff(ref, load_clip(path)) <= 1e-5


@pytest.mark.parametrize("with_config", [True, False])
def test_hugging_face_clipmodel_is_converted(tmp_path, with_config):
    cfg = CONFIGS["deeper"]
    hf = hf_model(cfg, seed=4)
    path = save_hf(hf, tmp_path / "hf", with_config=with_config)
    loaded = load_clip(path)
    assert loaded.spec.source_format == "hf"
    assert loaded.spec.model_cfg["quick_gelu"] is True  # from config.json, or the HF default
    images, ids = _inputs(loaded)
    t = int(ids.argmax(-1).max()) + 1
    with torch.no_grad():
        want_i = hf.get_image_features(pixel_values=images)
        want_t = hf.get_text_features(input_ids=ids[:, :t])
        got_i = loaded.model.encode_image(images)
        got_t = loaded.model.encode_text(ids)
    want_i = getattr(want_i, "pooler_output", want_i)
    want_t = getattr(want_t, "pooler_output", want_t)
    assert (got_i - want_i).abs().max() <= 1e-5
    assert (got_t - want_t).abs().max() <= 1e-5


def test_hf_head_count_comes_from_config_json(tmp_path):
    cfg = json.loads(json.dumps(CONFIGS["small"]))
    cfg["vision_cfg"]["head_width"] = 16  # 4 heads: not the width//64 convention
    cfg["text_cfg"]["heads"] = 4
    hf = hf_model(cfg, seed=5)
    loaded = load_clip(save_hf(hf, tmp_path / "hf"))
    assert loaded.spec.model_cfg["vision_cfg"]["head_width"] == 16
    assert loaded.spec.model_cfg["text_cfg"]["heads"] == 4
    images, _ = _inputs(loaded)
    with torch.no_grad():
        want = hf.get_image_features(pixel_values=images)
    want = getattr(want, "pooler_output", want)
    assert (loaded.model.encode_image(images) - want).abs().max() <= 1e-5


# ----------------------------------------------------------------------------- bad files


def _expect(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        load_clip(path)
    msg = str(info.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.safetensors", "not found")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    _expect(p, "empty")


def test_truncated_safetensors(tmp_path):
    p = save_open_clip_safetensors(make_clip(CONFIGS["small"]), tmp_path / "m.safetensors")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _expect(p, "truncated or corrupt")


def test_truncated_torch_file(tmp_path):
    p = save_open_clip_bin(make_clip(CONFIGS["small"]), tmp_path / "m.bin")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _expect(p, "truncated")


def test_not_a_clip_checkpoint(tmp_path):
    p = tmp_path / "unet.safetensors"
    save_file({"down.0.weight": torch.zeros(3, 3), "up.1.bias": torch.zeros(3)}, str(p))
    _expect(p, "not a CLIP checkpoint", "down.0.weight")


def test_missing_keys(tmp_path):
    sd = state_dict(make_clip(CONFIGS["small"]))
    del sd["transformer.resblocks.1.mlp.c_proj.bias"]
    p = tmp_path / "m.safetensors"
    save_file(sd, str(p))
    _expect(p, "missing", "transformer.resblocks.1.mlp.c_proj.bias")


def test_resnet_clip_is_refused_clearly(tmp_path):
    p = tmp_path / "rn50.safetensors"
    save_file({"visual.layer1.0.conv1.weight": torch.zeros(4, 4, 1, 1),
               "token_embedding.weight": torch.zeros(10, 4)}, str(p))
    _expect(p, "ResNet", "Vision Transformer")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": _Evil()}}, p)
    _expect(p, "weights-only")
    assert "pwned" not in capsys.readouterr().out


def test_unsupported_extension(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"123")
    _expect(p, "unsupported file type")


def test_bad_sidecar_json(tmp_path):
    p = save_open_clip_safetensors(make_clip(CONFIGS["small"]), tmp_path / "m.safetensors")
    (tmp_path / "open_clip_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_clip(p)
