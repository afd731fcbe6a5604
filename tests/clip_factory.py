"""Tiny random CLIP models and checkpoint files in every supported format, for tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from relevancy.loading import ClipSpec, LoadedClip, build_model, default_preprocess_cfg

CONFIGS: dict[str, dict[str, Any]] = {
    # vision/text widths are multiples of 64 so the loader's width//64 head rule applies
    "small": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                                             "head_width": 64},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}},
    "deeper": {"embed_dim": 48, "vision_cfg": {"image_size": 48, "patch_size": 16, "width": 128, "layers": 3,
                                              "head_width": 64, "mlp_ratio": 2.0},
               "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3,
                            "mlp_ratio": 2.0}},
    "wide": {"embed_dim": 64, "vision_cfg": {"image_size": 40, "patch_size": 4, "width": 192, "layers": 1,
                                            "head_width": 64},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 192, "heads": 3, "layers": 1}},
}

# a config whose head count cannot be inferred from weights (needs a sidecar)
ODD_HEADS = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2,
                                            "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}


def make_clip(cfg: dict[str, Any], seed: int = 0, quick_gelu: bool = False,
              dtype: torch.dtype = torch.float32) -> LoadedClip:
    """A random CLIP with attention sharpened ×3 (as in the parity recipe) so maps are not uniform."""
    cfg = copy.deepcopy(cfg)
    cfg["quick_gelu"] = quick_gelu
    torch.manual_seed(seed)
    spec = ClipSpec(cfg, default_preprocess_cfg(cfg["vision_cfg"]["image_size"]), "open_clip")
    model = build_model(spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("attn.in_proj_weight"):
                p.mul_(3.0)
            if name.endswith("positional_embedding") or name.endswith("class_embedding"):
                p.normal_(0, 0.5)
        model.logit_scale.fill_(torch.log(torch.tensor(100.0)))
    model = model.to(dtype).eval().requires_grad_(False)
    return LoadedClip(model, spec, None)


def state_dict(clip: LoadedClip) -> dict[str, torch.Tensor]:
    """Contiguous copies of the model's tensors."""
    return {k: v.detach().clone().contiguous() for k, v in clip.model.state_dict().items()}


def write_sidecar(path: Path, clip: LoadedClip) -> Path:
    """Write ``open_clip_config.json`` next to ``path``."""
    side = path.with_name("open_clip_config.json")
    side.write_text(json.dumps({"model_cfg": clip.spec.model_cfg, "preprocess_cfg": clip.spec.preprocess_cfg}))
    return side


def save_open_clip_safetensors(clip: LoadedClip, path: Path) -> Path:
    save_file(state_dict(clip), str(path))
    return path


def save_open_clip_bin(clip: LoadedClip, path: Path) -> Path:
    """``{"state_dict": {"module.<key>": tensor}}`` as saved by open_clip training under DDP."""
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state_dict(clip).items()}}, path)
    return path


def save_openai(clip: LoadedClip, path: Path) -> Path:
    """OpenAI's layout: the same ViT keys plus integer metadata tensors."""
    sd = state_dict(clip)
    cfg = clip.spec.model_cfg
    sd["input_resolution"] = torch.tensor(cfg["vision_cfg"]["image_size"])
    sd["context_length"] = torch.tensor(cfg["text_cfg"]["context_length"])
    sd["vocab_size"] = torch.tensor(cfg["text_cfg"]["vocab_size"])
    torch.save(sd, path)
    return path


def hf_model(cfg: dict[str, Any], seed: int = 0, act: str = "quick_gelu") -> Any:
    """A random ``transformers.CLIPModel`` with the shapes of ``cfg``."""
    from transformers import CLIPConfig, CLIPModel

    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    conf = CLIPConfig(
        text_config={"vocab_size": t["vocab_size"], "hidden_size": t["width"],
                     "intermediate_size": int(t["width"] * t.get("mlp_ratio", 4.0)),
                     "num_hidden_layers": t["layers"], "num_attention_heads": t["heads"],
                     "max_position_embeddings": t["context_length"], "hidden_act": act,
                     "eos_token_id": 2},
        vision_config={"hidden_size": v["width"], "intermediate_size": int(v["width"] * v.get("mlp_ratio", 4.0)),
                       "num_hidden_layers": v["layers"], "num_attention_heads": v["width"] // v["head_width"],
                       "image_size": v["image_size"], "patch_size": v["patch_size"], "hidden_act": act},
        projection_dim=cfg["embed_dim"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(conf).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("bias"):
                p.normal_(0, 0.05)
    return model


def save_hf(model: Any, folder: Path, with_config: bool = True) -> Path:
    """``model.safetensors`` (+ ``config.json``) as ``save_pretrained`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(folder / "model.safetensors"))
    if with_config:
        model.config.to_json_file(str(folder / "config.json"))
    return folder / "model.safetensors"
