"""CLIP Relevancy and Token Coverage nodes."""

from __future__ import annotations

import json

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..relevancy.explain import Explanation, explain
from ..relevancy.images import display_heatmaps, overlay, preprocess_tensor
from ..relevancy.report import LEFT_BEHIND_THRESHOLD, explanation_results
from ..relevancy.tokens import TokenizedPrompt, split_phrases, tokenize
from .common import (
    CATEGORY,
    PREFIX,
    ManagedClip,
    RelevancyClip,
    check_combos,
    image_to_bchw,
    progress_callback,
)

PAIRS_PER_STEP = 4


def _prompts(prompt: str, clip: ManagedClip) -> list[TokenizedPrompt]:
    phrases = split_phrases(prompt)
    if not phrases:
        raise ValueError("prompt is empty: write one or more phrases separated by '|' or new lines, "
                         "e.g. 'a red car | a green tree'.")
    return [tokenize(p, clip.clip.context_length) for p in phrases]


def _run(clip: ManagedClip, images: torch.Tensor | None, prompts: list[TokenizedPrompt], score: str,
         start_layer_image: int, start_layer_text: int, fit: str = "crop") -> Explanation:
    """Explain under the autograd context ComfyUI turns off, with progress and cancel."""
    loaded = clip.ready()
    n_pairs = len(prompts) * (1 if images is None else images.shape[0])
    with torch.inference_mode(False):
        pix = None
        if images is not None:
            pix = preprocess_tensor(loaded, images.to(loaded.device), fit).to(loaded.dtype)
        return explain(loaded, pix, prompts, score=score, start_layer_image=start_layer_image,
                       start_layer_text=start_layer_text, batch_size=PAIRS_PER_STEP,
                       want_image=images is not None, progress=progress_callback(n_pairs))


def _common_inputs() -> list:
    return [
        io.Combo.Input("score", options=["logit", "cos"], default="logit",
                       tooltip="Score the maps explain: 'logit' = e^τ·cosine (the paper's visualisations), "
                               "'cos' = plain cosine (its losses). The choice changes the maps."),
        io.Int.Input("start_layer_image", default=0, min=-48, max=47,
                     tooltip="First vision layer to aggregate (0 = all layers, -1 = last layer only). "
                             "Later start layers reduce noise on ViT-B/16 and larger models."),
        io.Int.Input("start_layer_text", default=0, min=-48, max=47,
                     tooltip="First text layer to aggregate (0 = all layers, -1 = last layer only)."),
        io.Float.Input("left_behind_threshold", default=LEFT_BEHIND_THRESHOLD, min=0.0, max=1.0, step=0.01,
                       tooltip="A semantic word whose relevance (max = 1 within its phrase) is below this "
                               "is reported as left behind. The paper uses 0.7."),
    ]


class CLIPRelevancy(io.ComfyNode):
    """Heatmaps of where CLIP looks for each phrase, and how much each word counted."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "CLIPRelevancy",
            display_name="CLIP Relevancy",
            category=CATEGORY + "/explain",
            description=(
                "Explains CLIP's image–text score (Chefer et al. relevancy, as used by No Token Left "
                "Behind): one heatmap per (image, phrase) and the relevance of every word. Outputs are "
                "phrase-major: all images for phrase 1, then all images for phrase 2, ..."
            ),
            inputs=[
                RelevancyClip.Input("relevancy_clip", tooltip="A CLIP from Load Relevancy CLIP."),
                io.Image.Input("image", tooltip="Image batch to explain."),
                io.String.Input("prompt", multiline=True, default="a yellow circle | a blue cross",
                                tooltip="Phrases separated by '|' or new lines; each gets its own heatmap. "
                                        "Square brackets choose the words to check, e.g. 'a [red car]'."),
                *_common_inputs(),
                io.Combo.Input("normalization", options=["min-max", "sum-max"], default="min-max",
                               tooltip="Heatmap scaling: 'min-max' stretches each map to 0..1; 'sum-max' "
                                       "divides by the sum then the max (the paper's), keeping zero at zero."),
                io.Combo.Input("fit", options=["crop", "squash"], default="crop",
                               tooltip="How a non-square image reaches CLIP: 'crop' keeps the centred square "
                                       "(open_clip's default; the rest gets zero heat), 'squash' resizes "
                                       "the whole image."),
                io.Float.Input("overlay_opacity", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Opacity of the colour heatmap on the overlay images."),
            ],
            outputs=[
                io.Image.Output(display_name="overlays",
                                tooltip="Heatmaps blended over the images, phrase-major (phrases × images)."),
                io.Mask.Output(display_name="heatmaps",
                               tooltip="Raw heatmaps as a MASK batch at the image's size, 0..1, phrase-major; "
                                       "feed Heatmap to Mask for a hard mask."),
                io.String.Output(display_name="report",
                                 tooltip="JSON: per (image, phrase) similarity, token relevance, per-word "
                                         "coverage and left-behind words."),
            ],
        )

    @classmethod
    def validate_inputs(cls, score: str, normalization: str, fit: str) -> bool | str:
        return check_combos(cls, score=score, normalization=normalization, fit=fit)

    @classmethod
    def execute(cls, relevancy_clip: ManagedClip, image: torch.Tensor, prompt: str, score: str,
                start_layer_image: int, start_layer_text: int, left_behind_threshold: float,
                normalization: str, fit: str, overlay_opacity: float) -> io.NodeOutput:
        prompts = _prompts(prompt, relevancy_clip)
        images = image_to_bchw(image)
        exp = _run(relevancy_clip, images, prompts, score, start_layer_image, start_layer_text, fit)
        h, w = images.shape[-2:]
        rgb = image[..., :3].float().cpu()
        heats, overlays = [], []
        for j in range(len(prompts)):  # per phrase, so a cancel is honoured on large images too
            mm.throw_exception_if_processing_interrupted()
            maps = exp.image_relevance[j * exp.n_images:(j + 1) * exp.n_images]
            heat = display_heatmaps(maps, h, w, fit, normalization)
            heats.append(heat)
            overlays.append(overlay(rgb, heat, overlay_opacity).clamp(0, 1))
        heat, overlays = torch.cat(heats), torch.cat(overlays)
        results = explanation_results(exp, left_behind_threshold)
        report = json.dumps({"score": score, "results": results})
        out_dev = mm.intermediate_device()
        return io.NodeOutput(overlays.to(out_dev), heat.contiguous().to(out_dev), report,
                             ui={"ntlb_report": [{"kind": "relevancy", "results": _ui_rows(results)}]})


def _ui_rows(results: list[dict]) -> list[dict]:
    """The small part of the report the web widget renders (no patch grids)."""
    keys = ("image_index", "phrase", "similarity", "words", "coverage", "left_behind")
    return [{k: r[k] for k in keys if k in r} for r in results]


class TokenCoverage(io.ComfyNode):
    """Which words of a prompt CLIP's score ignores ("left behind")."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "TokenCoverage",
            display_name="Token Coverage",
            category=CATEGORY + "/explain",
            is_output_node=True,  # its report shows on the node even with nothing connected
            description=(
                "Reports which semantic words of a prompt CLIP left behind when scoring an image (or, "
                "without an image, which words the prompt's embedding is built from), with each word's "
                "relevance and an overall coverage score."
            ),
            inputs=[
                RelevancyClip.Input("relevancy_clip", tooltip="A CLIP from Load Relevancy CLIP."),
                io.String.Input("prompt", multiline=True, default="a yellow circle and a blue cross",
                                tooltip="One or more phrases ('|' or new lines). Stopwords and punctuation "
                                        "are ignored; square brackets choose the words to check, e.g. "
                                        "'a [red car] by a [tree]'."),
                *_common_inputs(),
                io.Image.Input("image", optional=True,
                               tooltip="Image(s) to score the prompt against (e.g. a generated image). "
                                       "Without one, a prompt-only estimate is given."),
            ],
            outputs=[
                io.Float.Output(display_name="coverage",
                                tooltip="Fraction of semantic words not left behind, averaged over "
                                        "(image, phrase) pairs; 1.0 = every word counted."),
                io.String.Output(display_name="left_behind",
                                 tooltip="Comma-separated words left behind in any pair (empty if none)."),
                io.String.Output(display_name="report",
                                 tooltip="JSON: per (image, phrase) word relevance and flags."),
            ],
        )

    @classmethod
    def validate_inputs(cls, score: str) -> bool | str:
        return check_combos(cls, score=score)

    @classmethod
    def execute(cls, relevancy_clip: ManagedClip, prompt: str, score: str, start_layer_image: int,
                start_layer_text: int, left_behind_threshold: float,
                image: torch.Tensor | None = None) -> io.NodeOutput:
        prompts = _prompts(prompt, relevancy_clip)
        for p in prompts:
            if not any(w.semantic for w in p.words):
                raise ValueError(
                    f"phrase {p.prompt!r} has no semantic words (only stopwords/punctuation); add content "
                    "words or mark the words to check with [brackets]."
                )
        images = None if image is None else image_to_bchw(image)
        exp = _run(relevancy_clip, images, prompts, score, start_layer_image, start_layer_text)
        results = explanation_results(exp, left_behind_threshold)
        for r in results:
            r.pop("image_relevance", None)
            if images is None:
                r["image_index"] = None
                r["similarity"] = None
        coverage = sum(r["coverage"] for r in results) / len(results)
        behind = list(dict.fromkeys(w for r in results for w in r["left_behind"]))
        report = json.dumps({"score": score, "prompt_only": images is None, "results": results})
        return io.NodeOutput(float(coverage), ", ".join(behind), report,
                             ui={"ntlb_report": [{"kind": "coverage", "results": _ui_rows(results)}]})
