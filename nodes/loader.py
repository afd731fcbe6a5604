"""Load Relevancy CLIP: a CLIP ViT from our model folder (or the built-in shapes model)."""

from __future__ import annotations

from comfy_api.latest import io

from .common import CATEGORY, PREFIX, RelevancyClip, check_combos, load_managed, model_choices


class LoadRelevancyCLIP(io.ComfyNode):
    """Loads a CLIP ViT checkpoint for relevancy maps; loaded once and cached."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "LoadRelevancyCLIP",
            display_name="Load Relevancy CLIP",
            category=CATEGORY + "/loaders",
            description=(
                "Loads a CLIP ViT (open_clip, OpenAI or Hugging Face checkpoint) from "
                "models/relevancy_clip/ for relevancy heatmaps and token coverage. Works offline; "
                "'shapes (built-in)' is the tiny model that ships with the pack."
            ),
            inputs=[
                io.Combo.Input("model", options=model_choices(),
                               tooltip="Checkpoint in models/relevancy_clip/ (extra_model_paths.yaml key "
                                       "'relevancy_clip'). A sidecar open_clip_config.json next to it wins "
                                       "over the architecture inferred from the weights."),
                io.Combo.Input("device", options=["auto", "cpu"], default="auto",
                               tooltip="'auto' uses ComfyUI's compute device and lets ComfyUI offload the "
                                       "model when memory is needed; 'cpu' keeps it on the CPU."),
                io.Combo.Input("dtype", options=["auto", "fp32", "fp16", "bf16"], default="auto",
                               tooltip="Weight precision. 'auto' = fp32 on CPU, fp16 on a GPU."),
                io.Combo.Input("activation", options=["auto", "quick_gelu", "gelu"], default="auto",
                               tooltip="The MLP activation cannot be read from the weights. 'auto' takes it "
                                       "from a sidecar/config.json, else QuickGELU for OpenAI/HF files and "
                                       "GELU for open_clip files. OpenAI CLIP weights need quick_gelu."),
            ],
            outputs=[RelevancyClip.Output(display_name="relevancy_clip",
                                          tooltip="The loaded CLIP, for the relevancy nodes.")],
        )

    @classmethod
    def validate_inputs(cls, model: str, device: str, dtype: str, activation: str) -> bool | str:
        return check_combos(cls, model=model, device=device, dtype=dtype, activation=activation)

    @classmethod
    def execute(cls, model: str, device: str, dtype: str, activation: str) -> io.NodeOutput:
        return io.NodeOutput(load_managed(model, device, dtype, activation))
