"""Load open_clip ViT CLIP models from local checkpoint files, offline and without unpickling code.

Supported files:
- open_clip state dicts: ``.safetensors``, ``.bin``/``.pt``/``.pth`` (optionally wrapped in
  ``{"state_dict": ...}`` and/or prefixed with ``module.``);
- OpenAI-format state dicts (same ViT keys plus ``input_resolution``/``context_length``/``vocab_size``);
- Hugging Face ``transformers`` ``CLIPModel`` state dicts (``vision_model.*``/``text_model.*``),
  converted on load.

The architecture is inferred from tensor shapes. A sidecar config wins over inference: first
``<stem>.open_clip_config.json`` or ``<stem>.json``, then ``open_clip_config.json`` in the same
folder (the open_clip hub format ``{"model_cfg": {...}, "preprocess_cfg": {...}}``). A Hugging Face
``config.json`` in the folder supplies the activation and head count of HF checkpoints.

Settings that weights cannot reveal:
- activation: OpenAI weights use QuickGELU, most open_clip-trained weights GELU. Order of
  precedence: explicit ``quick_gelu=`` argument, sidecar, HF ``config.json``, then a default by
  format (OpenAI-format files → QuickGELU; others → GELU) with a warning.
- attention heads: ``width // 64`` (the convention of OpenAI and open_clip configs) unless a config
  says otherwise.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint file could not be used; the message names the file and the problem."""


@dataclass
class ClipSpec:
    """Everything needed to build a model: open_clip ``model_cfg`` + ``preprocess_cfg``."""

    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    source_format: str  # "open_clip" | "openai" | "hf"
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadedClip:
    """A ready-to-use CLIP: model (eval, frozen), tokenizer, preprocessing and provenance."""

    model: Any  # open_clip.model.CLIP
    spec: ClipSpec
    path: Path | None

    @property
    def image_size(self) -> int:
        """Side of the square input image the vision tower expects."""
        size = self.spec.model_cfg["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else size[0])

    @property
    def context_length(self) -> int:
        """Number of text positions (SOT + tokens + EOT + padding)."""
        return int(self.spec.model_cfg["text_cfg"]["context_length"])

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) of the vision tower."""
        side = self.image_size // int(self.spec.model_cfg["vision_cfg"]["patch_size"])
        return side, side

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


# ----------------------------------------------------------------------------- reading files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``path`` safely (safetensors, or ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found. Check the path or put the file in the model folder.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty (0 bytes); re-download or re-export it.")
    if path.suffix == ".safetensors" or path.suffix == ".sft":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({exc}); it may be truncated or corrupt."
            ) from exc
    elif path.suffix in _PICKLE_SUFFIXES:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for bad archives
            reason = str(exc).splitlines()[0][:300]
            raise CheckpointError(
                f"{path}: cannot be read as a weights-only torch checkpoint ({reason}). "
                "The file may be truncated, corrupt, or contain pickled code; convert it to "
                ".safetensors with a trusted tool."
            ) from exc
    else:
        raise CheckpointError(
            f"{path}: unsupported file type {path.suffix!r}; expected .safetensors, .bin, .pt or .pth."
        )
    return _unwrap(sd, path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Take the tensors out of common wrappers (``state_dict``, ``model``, DDP ``module.``)."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: does not contain a state dict (found {type(obj).__name__}).")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{path}: contains no tensors; it is not a model checkpoint.")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


# ----------------------------------------------------------------------------- format detection


def detect_format(sd: dict[str, torch.Tensor], path: Path | str = "<state dict>") -> str:
    """Return ``"hf"`` or ``"open_clip"`` (OpenAI shares open_clip's ViT keys); raise otherwise."""
    if any(k.startswith("vision_model.") for k in sd) and any(k.startswith("text_model.") for k in sd):
        return "hf"
    if "visual.conv1.weight" in sd and "token_embedding.weight" in sd:
        return "open_clip"
    if any(k.startswith("visual.layer1.") for k in sd) or "visual.attnpool.c_proj.weight" in sd:
        raise CheckpointError(
            f"{path}: this is a ResNet CLIP (modified ResNet image tower). Relevancy maps need a "
            "Vision Transformer image tower; use a ViT CLIP (e.g. ViT-B/32, ViT-B/16, ViT-L/14)."
        )
    if any(k.startswith("visual.trunk.") for k in sd) or any(k.startswith("text.") for k in sd):
        raise CheckpointError(
            f"{path}: a timm/HF-tower open_clip model (keys 'visual.trunk.*' or 'text.*'); only "
            "standard CLIP ViT towers are supported."
        )
    sample = ", ".join(list(sd)[:5])
    raise CheckpointError(
        f"{path}: not a CLIP checkpoint (expected keys such as 'visual.conv1.weight' and "
        f"'token_embedding.weight', or HF 'vision_model.*'/'text_model.*'; found {sample}, ...)."
    )


def is_openai_format(sd: dict[str, torch.Tensor]) -> bool:
    """OpenAI's released state dicts carry these integer metadata entries."""
    return any(k in sd for k in _OPENAI_EXTRA_KEYS)


# ----------------------------------------------------------------------------- inference


def _count_layers(sd: dict[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(ids) + 1 if ids else 0


def infer_model_cfg(sd: dict[str, torch.Tensor], path: Path | str = "<state dict>") -> dict[str, Any]:
    """Infer an open_clip ``model_cfg`` from an open_clip/OpenAI ViT state dict."""
    try:
        conv = sd["visual.conv1.weight"]
        v_width, patch = int(conv.shape[0]), int(conv.shape[-1])
        n_pos = int(sd["visual.positional_embedding"].shape[0])
        grid = int(round((n_pos - 1) ** 0.5))
        if grid * grid != n_pos - 1:
            raise CheckpointError(f"{path}: non-square vision position grid ({n_pos - 1} patches).")
        v_layers = _count_layers(sd, "visual.transformer.resblocks.")
        v_mlp = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / v_width
        t_width = int(sd["ln_final.weight"].shape[0])
        t_layers = _count_layers(sd, "transformer.resblocks.")
        t_mlp = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / t_width
        tp = sd["text_projection"] if "text_projection" in sd else sd["text_projection.weight"].T
        embed_dim = int(tp.shape[1])
        vision_cfg: dict[str, Any] = {
            "image_size": grid * patch,
            "patch_size": patch,
            "width": v_width,
            "layers": v_layers,
            "head_width": 64 if v_width % 64 == 0 else v_width,
            "mlp_ratio": v_mlp,
        }
        if "visual.ln_pre.weight" not in sd:
            vision_cfg["no_ln_pre"] = True
        text_cfg: dict[str, Any] = {
            "context_length": int(sd["positional_embedding"].shape[0]),
            "vocab_size": int(sd["token_embedding.weight"].shape[0]),
            "width": t_width,
            "heads": max(1, t_width // 64),
            "layers": t_layers,
            "mlp_ratio": t_mlp,
        }
        if "text_projection.weight" in sd:
            text_cfg["proj_type"] = "linear"
            text_cfg["proj_bias"] = "text_projection.bias" in sd
    except KeyError as exc:
        raise CheckpointError(f"{path}: missing tensor {exc.args[0]!r}; the checkpoint is incomplete.") from exc
    cfg: dict[str, Any] = {"embed_dim": embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if "logit_bias" in sd:
        cfg["init_logit_bias"] = float(sd["logit_bias"].reshape(-1)[0])
    return cfg


# ----------------------------------------------------------------------------- Hugging Face


def convert_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a ``transformers`` ``CLIPModel`` state dict to open_clip keys."""
    out: dict[str, torch.Tensor] = {}

    def blocks(src: str, dst: str) -> None:
        n = _count_layers(sd, f"{src}.encoder.layers.")
        for i in range(n):
            s, d = f"{src}.encoder.layers.{i}.", f"{dst}.resblocks.{i}."
            att = s + "self_attn."
            out[d + "attn.in_proj_weight"] = torch.cat(
                [sd[att + f"{p}_proj.weight"] for p in ("q", "k", "v")]
            )
            out[d + "attn.in_proj_bias"] = torch.cat([sd[att + f"{p}_proj.bias"] for p in ("q", "k", "v")])
            out[d + "attn.out_proj.weight"] = sd[att + "out_proj.weight"]
            out[d + "attn.out_proj.bias"] = sd[att + "out_proj.bias"]
            for hf, oc in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                           ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[d + oc + ".weight"] = sd[s + hf + ".weight"]
                out[d + oc + ".bias"] = sd[s + hf + ".bias"]

    v, t = "vision_model", "text_model"
    out["visual.class_embedding"] = sd[f"{v}.embeddings.class_embedding"]
    out["visual.conv1.weight"] = sd[f"{v}.embeddings.patch_embedding.weight"]
    out["visual.positional_embedding"] = sd[f"{v}.embeddings.position_embedding.weight"]
    for hf, oc in ((f"{v}.pre_layrnorm", "visual.ln_pre"), (f"{v}.post_layernorm", "visual.ln_post"),
                   (f"{t}.final_layer_norm", "ln_final")):
        out[oc + ".weight"] = sd[hf + ".weight"]
        out[oc + ".bias"] = sd[hf + ".bias"]
    blocks(f"{v}", "visual.transformer")
    blocks(f"{t}", "transformer")
    out["visual.proj"] = sd["visual_projection.weight"].T.contiguous()
    out["token_embedding.weight"] = sd[f"{t}.embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd[f"{t}.embeddings.position_embedding.weight"]
    out["text_projection"] = sd["text_projection.weight"].T.contiguous()
    out["logit_scale"] = sd["logit_scale"].reshape(())
    return out


def _read_hf_config(folder: Path) -> dict[str, Any] | None:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cfg if isinstance(cfg, dict) and "vision_config" in cfg else None


# ----------------------------------------------------------------------------- sidecars


def find_sidecar(path: Path) -> Path | None:
    """The sidecar config for ``path`` (see module docstring for the search order)."""
    for cand in (path.with_name(path.stem + ".open_clip_config.json"), path.with_suffix(".json"),
                 path.with_name("open_clip_config.json")):
        if cand.is_file() and cand != path:
            return cand
    return None


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: sidecar config is not valid JSON ({exc}).") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise CheckpointError(f"{path}: sidecar config needs a 'model_cfg' object (open_clip hub format).")
    return cfg


def default_preprocess_cfg(image_size: int) -> dict[str, Any]:
    """open_clip's defaults: OpenAI mean/std, bicubic, resize shortest side then center crop."""
    return {"size": image_size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
            "interpolation": "bicubic", "resize_mode": "shortest"}


# ----------------------------------------------------------------------------- public API


def resolve_spec(
    sd: dict[str, torch.Tensor], path: Path | None, quick_gelu: bool | None = None
) -> tuple[ClipSpec, dict[str, torch.Tensor]]:
    """Work out the model config for ``sd`` (sidecar > inference) and return the open_clip state dict."""
    where = path or "<state dict>"
    fmt = detect_format(sd, where)
    hf_cfg = None
    if fmt == "hf":
        try:
            sd = convert_hf_state_dict(sd)
        except KeyError as exc:
            raise CheckpointError(f"{where}: Hugging Face CLIP checkpoint is missing {exc.args[0]!r}.") from exc
        hf_cfg = _read_hf_config(path.parent) if path else None
    elif is_openai_format(sd):
        fmt = "openai"
    sd = {k: v for k, v in sd.items() if k not in _OPENAI_EXTRA_KEYS and k != "attn_mask"}
    notes: list[str] = []
    sidecar = find_sidecar(path) if path else None
    if sidecar is not None:
        side = _read_sidecar(sidecar)
        model_cfg = dict(side["model_cfg"])
        preprocess_cfg = dict(side.get("preprocess_cfg") or {})
        notes.append(f"config from {sidecar.name}")
    else:
        model_cfg = infer_model_cfg(sd, where)
        preprocess_cfg = {}
        if hf_cfg is not None:
            vh = hf_cfg["vision_config"].get("num_attention_heads")
            th = hf_cfg.get("text_config", {}).get("num_attention_heads")
            if vh:
                model_cfg["vision_cfg"]["head_width"] = model_cfg["vision_cfg"]["width"] // int(vh)
            if th:
                model_cfg["text_cfg"]["heads"] = int(th)
    image_size = model_cfg["vision_cfg"].get("image_size", 224)
    image_size = image_size if isinstance(image_size, int) else image_size[0]
    preprocess_cfg = {**default_preprocess_cfg(int(image_size)), **preprocess_cfg}

    if quick_gelu is not None:
        model_cfg["quick_gelu"] = bool(quick_gelu)
        notes.append(f"activation {'QuickGELU' if quick_gelu else 'GELU'} (explicit option)")
    elif "quick_gelu" in model_cfg and sidecar is not None:
        pass
    elif hf_cfg is not None and "hidden_act" in hf_cfg.get("vision_config", {}):
        model_cfg["quick_gelu"] = hf_cfg["vision_config"]["hidden_act"] == "quick_gelu"
        notes.append("activation from config.json")
    else:
        model_cfg["quick_gelu"] = fmt in ("openai", "hf")
        act = "QuickGELU" if model_cfg["quick_gelu"] else "GELU"
        msg = (f"{where}: activation not recorded in the checkpoint; assuming {act} for a {fmt}-format "
               "file. Pass quick_gelu=True/False (CLI: --quick-gelu/--gelu) or add a sidecar "
               "open_clip_config.json if embeddings look wrong.")
        logger.warning(msg)
        notes.append(msg)
    return ClipSpec(model_cfg, preprocess_cfg, fmt, notes), sd


def build_model(spec: ClipSpec) -> Any:
    """Instantiate an ``open_clip.model.CLIP`` from ``spec`` (random weights)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = dict(spec.model_cfg)
    vision = cfg.pop("vision_cfg")
    text = cfg.pop("text_cfg")
    if vision.get("timm_model_name") or text.get("hf_model_name"):
        raise CheckpointError("timm/HF tower configs are not supported; use a standard CLIP ViT.")
    if isinstance(vision.get("layers"), (list, tuple)):
        raise CheckpointError("ResNet image towers are not supported; use a ViT CLIP.")
    kwargs = {k: cfg[k] for k in ("embed_dim", "quick_gelu", "init_logit_bias") if k in cfg}
    return CLIP(vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text), **kwargs)


def load_clip(
    path: str | Path,
    *,
    quick_gelu: bool | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedClip:
    """Load a CLIP ViT checkpoint from ``path``; the model is in eval mode with frozen weights."""
    path = Path(path)
    if path.is_dir():
        path = _checkpoint_in_folder(path)
    sd = read_state_dict(path)
    spec, sd = resolve_spec(sd, path, quick_gelu)
    return _instantiate(spec, sd, path, device, dtype)


def load_clip_from_state_dict(
    sd: dict[str, torch.Tensor], *, quick_gelu: bool | None = None,
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
) -> LoadedClip:
    """Like :func:`load_clip` for an in-memory state dict (no sidecar lookup)."""
    spec, sd = resolve_spec(dict(sd), None, quick_gelu)
    return _instantiate(spec, sd, None, device, dtype)


def _checkpoint_in_folder(folder: Path) -> Path:
    for name in ("open_clip_model.safetensors", "model.safetensors", "open_clip_pytorch_model.bin",
                 "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: folder holds no open_clip_model.safetensors / model.safetensors.")


def _instantiate(spec: ClipSpec, sd: dict[str, torch.Tensor], path: Path | None,
                 device: str | torch.device, dtype: torch.dtype) -> LoadedClip:
    where = path or "<state dict>"
    try:
        model = build_model(spec)
    except (TypeError, ValueError, AssertionError) as exc:
        raise CheckpointError(f"{where}: invalid model config ({exc}).") from exc
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None:
        model.logit_bias = None
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} tensors missing (e.g. {', '.join(missing[:4])}); the file is "
            "incomplete or not a matching CLIP checkpoint."
        )
    if unexpected:
        raise CheckpointError(
            f"{where}: {len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:4])}); the "
            "config does not match the weights (check the sidecar config)."
        )
    bad = [k for k in expected if expected[k].shape != sd[k].shape and expected[k].numel() == sd[k].numel()]
    for k in bad:  # scalar vs [1] logit_scale and similar harmless reshapes
        sd[k] = sd[k].reshape(expected[k].shape)
    wrong = [f"{k} {tuple(sd[k].shape)}≠{tuple(expected[k].shape)}" for k in expected
             if expected[k].shape != sd[k].shape]
    if wrong:
        raise CheckpointError(f"{where}: tensor shapes do not match the config: {'; '.join(wrong[:3])}.")
    model.load_state_dict(sd, strict=True)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LoadedClip(model=model, spec=spec, path=path)


def default_model_path() -> Path:
    """The project's shipped default model (the tiny CLIP trained on the shapes world)."""
    return Path(__file__).resolve().parent.parent / "models" / "shapes"
