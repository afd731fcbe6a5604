"""The pack's nodes through a real ComfyUI server (the session ``comfy_server``): registration in
``/object_info``, API workflows chained into core mask nodes, errors users will meet, cancel, and
every example workflow (converted from UI format) executed end to end.

Models: a tiny random CLIP in ``models/relevancy_clip/tiny/`` (written here) for most tests; the
example workflows run with their own model choice, "shapes (built-in)", when ``models/shapes/`` is
in the repository, and with the tiny model substituted otherwise.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clip_factory import CONFIGS, make_clip, save_open_clip_safetensors, write_sidecar
from comfy_harness import PACK_FOLDER, REPO_ROOT, ComfyServer, PromptFailed, PromptRejected
from PIL import Image

from scripts.workflows import example_names, load_example, replace_widget, to_api

NODE_IDS = ("NTLB_LoadRelevancyCLIP", "NTLB_CLIPRelevancy", "NTLB_TokenCoverage", "NTLB_HeatmapToMask")
TINY = "tiny/open_clip_model.safetensors"
BUILTIN = "shapes (built-in)"
BUILTIN_DIR = REPO_ROOT / "models" / "shapes"
SAMPLE = "ntlb_sample_shapes.png"
EXAMPLES = ("ntlb_heatmap_to_mask", "ntlb_relevancy_heatmaps", "ntlb_token_coverage")

RELEVANCY = dict(score="logit", start_layer_image=0, start_layer_text=0, left_behind_threshold=0.7,
                 normalization="min-max", fit="crop", overlay_opacity=0.5)
MASK = dict(threshold_mode="otsu", threshold=0.5, area=0.2, blur=2.0, grow=0, fill_holes=True,
            keep="largest", feather=0.0, invert=False)


def builtin_model_available() -> bool:
    return (BUILTIN_DIR / "open_clip_model.safetensors").is_file()


# --------------------------------------------------------------------------------------- helpers


class Graph:
    """A tiny API-prompt builder: ``g.add("Node", **inputs)`` returns the id; ``g.out(id, i)``."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, **inputs: Any) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    @staticmethod
    def out(node_id: str, index: int = 0) -> list[Any]:
        return [node_id, index]


def _clip(g: Graph, model: str = TINY) -> str:
    return g.add("NTLB_LoadRelevancyCLIP", model=model, device="auto", dtype="auto", activation="auto")


def _relevancy(g: Graph, clip: str, image: list[Any], prompt: str, **kw: Any) -> str:
    return g.add("NTLB_CLIPRelevancy", relevancy_clip=g.out(clip), image=image, prompt=prompt,
                 **{**RELEVANCY, **kw})


def _png(server: ComfyServer, item: dict[str, str]) -> np.ndarray:
    """An output image fetched through ``/view`` as uint8 (H, W, C)."""
    data = server.view(item["filename"], item["subfolder"], item["type"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _sample(server: ComfyServer) -> np.ndarray:
    return np.asarray(Image.open(server.base_dir / "input" / SAMPLE).convert("RGB"))


def _unique(text: str) -> str:
    """Defeats ComfyUI's output cache so a node really runs again."""
    return f"{text} {uuid.uuid4().hex[:6]}"


def _still_serving(server: ComfyServer) -> None:
    """A fresh (uncached) relevancy prompt after an error still succeeds."""
    g = Graph()
    clip = _clip(g)
    img = g.add("EmptyImage", width=32, height=32, batch_size=1, color=0x2040F0)
    rel = _relevancy(g, clip, g.out(img), _unique("a blue square"))
    g.add("PreviewImage", images=g.out(rel))
    entry = server.run(g.nodes, timeout=120)
    assert entry["status"]["status_str"] == "success"


def _failure(server: ComfyServer, graph: dict[str, Any]) -> dict[str, Any]:
    """Run a graph that must fail while executing; return its one execution error."""
    with pytest.raises(PromptFailed) as failed:
        server.run(graph, timeout=120)
    assert not failed.value.interrupted
    assert len(failed.value.errors) == 1, failed.value.errors
    return failed.value.errors[0]


def _rejection(server: ComfyServer, graph: dict[str, Any]) -> str:
    """Post a graph that validation must reject (HTTP 400); return its node errors as text."""
    with pytest.raises(PromptRejected) as rejected:
        server.run(graph, timeout=120)
    return json.dumps(rejected.value.node_errors)


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(comfy_server: ComfyServer) -> ComfyServer:
    """The session server with the tiny random CLIP in models/relevancy_clip/tiny/."""
    folder = comfy_server.base_dir / "models" / "relevancy_clip" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "open_clip_model.safetensors"
    if not target.exists():  # the same model (config, seed) as the other server tests write
        clip = make_clip(CONFIGS["deeper"], seed=21)
        write_sidecar(save_open_clip_safetensors(clip, target), clip)
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server: ComfyServer) -> dict[str, Any]:
    return server.get_json("/object_info")


# ----------------------------------------------------------------------------------- registration


@pytest.mark.server
def test_pack_imports_and_lists_every_node_with_tooltips(server, object_info):
    assert server.import_failed_lines(pack_only=True) == [], server.log_tail()
    for node_id in NODE_IDS:
        info = object_info[node_id]
        assert info["python_module"] == f"custom_nodes.{PACK_FOLDER}", info["python_module"]
        assert info["description"], node_id
        assert info["category"].startswith("No Token Left Behind/"), node_id
        assert info["output"] and len(info["output_tooltips"]) == len(info["output"]), node_id
        assert all(info["output_tooltips"]), f"{node_id}: output without tooltip"
        assert len(info["output_name"]) == len(info["output"])
        sections = {s: v for s, v in info["input"].items() if s in ("required", "optional")}
        assert sections["required"], node_id
        for section, inputs in sections.items():
            assert list(inputs) == info["input_order"][section], node_id
            for name, spec in inputs.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"

    rel = object_info["NTLB_CLIPRelevancy"]
    assert rel["output"] == ["IMAGE", "MASK", "STRING"]
    assert rel["input"]["required"]["relevancy_clip"][0] == "NTLB_CLIP"
    assert object_info["NTLB_HeatmapToMask"]["output"] == ["MASK"]
    assert "image" in object_info["NTLB_HeatmapToMask"]["input"]["optional"]
    assert object_info["NTLB_TokenCoverage"]["output"] == ["FLOAT", "STRING", "STRING"]
    models = object_info["NTLB_LoadRelevancyCLIP"]["input"]["required"]["model"][1]["options"]
    assert models[0] == BUILTIN and TINY in models


@pytest.mark.server
def test_sample_image_is_installed_and_examples_are_served_as_templates(server, object_info):
    installed = server.base_dir / "input" / SAMPLE
    assert installed.read_bytes() == (REPO_ROOT / "assets" / "sample_shapes.png").read_bytes()
    assert SAMPLE in object_info["LoadImage"]["input"]["required"]["image"][0]

    templates = server.get_json("/workflow_templates")
    assert sorted(templates.get(PACK_FOLDER, [])) == sorted(example_names())
    assert set(EXAMPLES) <= set(example_names())
    for name in example_names():
        served = server.get_json(f"/api/workflow_templates/{PACK_FOLDER}/{name}.json")
        assert served == load_example(name)
        # the template browser (frontend 1.32.9) shows <name>.jpg as the thumbnail
        status, jpg = server.request("GET", f"/api/workflow_templates/{PACK_FOLDER}/{name}.jpg")
        assert status == 200 and Image.open(io.BytesIO(jpg)).format == "JPEG", name


# ------------------------------------------------------------------------------------- workflows


@pytest.mark.server
def test_relevancy_to_mask_to_core_mask_nodes(server):
    """Load → CLIP Relevancy → Heatmap to Mask → MaskToImage/ImageCompositeMasked/SetLatentNoiseMask."""
    sample = _sample(server)
    h, w = sample.shape[:2]
    g = Graph()
    clip = _clip(g)
    img = g.add("LoadImage", image=SAMPLE)
    rel = _relevancy(g, clip, g.out(img), _unique("a yellow circle | a blue cross"))
    mask = g.add("NTLB_HeatmapToMask", heatmap=g.out(rel, 1), image=g.out(img), **MASK)
    save_overlay = g.add("SaveImage", images=g.out(rel, 0), filename_prefix="ntlb_test/overlay")
    save_heat = g.add("SaveImage", images=g.out(g.add("MaskToImage", mask=g.out(rel, 1))),
                      filename_prefix="ntlb_test/heat")
    save_mask = g.add("SaveImage", images=g.out(g.add("MaskToImage", mask=g.out(mask))),
                      filename_prefix="ntlb_test/mask")
    inverted = g.add("ImageInvert", image=g.out(img))
    comp = g.add("ImageCompositeMasked", destination=g.out(img), source=g.out(inverted), x=0, y=0,
                 resize_source=False, mask=g.out(mask))
    save_comp = g.add("SaveImage", images=g.out(comp), filename_prefix="ntlb_test/composite")
    vae = g.add("VAELoader", vae_name="pixel_space")
    latent = g.add("SetLatentNoiseMask", samples=g.out(g.add("VAEEncode", pixels=g.out(img), vae=g.out(vae))),
                   mask=g.out(mask))
    save_latent = g.add("SaveImage", images=g.out(g.add("VAEDecode", samples=g.out(latent), vae=g.out(vae))),
                        filename_prefix="ntlb_test/latent")

    entry = server.run(g.nodes, timeout=180)
    outs = entry["outputs"]
    report = outs[rel]["ntlb_report"][0]
    assert report["kind"] == "relevancy" and len(report["results"]) == 2

    overlays = [_png(server, it) for it in outs[save_overlay]["images"]]
    heats = [_png(server, it) for it in outs[save_heat]["images"]]
    masks = [_png(server, it) for it in outs[save_mask]["images"]]
    comps = [_png(server, it) for it in outs[save_comp]["images"]]
    assert len(overlays) == len(heats) == len(masks) == 2  # phrase-major: 2 phrases × 1 image
    for ov, heat, m in zip(overlays, heats, masks, strict=True):
        for arr in (ov, heat, m):
            assert arr.shape == (h, w, 3)
        assert np.abs(ov.astype(int) - sample).mean() > 5, "overlay equals the input"
        assert heat.min() == 0 and heat.max() == 255  # min-max normalised heatmap
        values = set(np.unique(m))
        assert values == {0, 255}, f"mask is not binary 0/255 with both present: {sorted(values)[:8]}"
    # ImageCompositeMasked takes as many masks as destination images: the first phrase's mask
    (cp,) = comps
    assert cp.shape == (h, w, 3)
    inside = masks[0][..., 0] == 255
    assert np.abs(cp[inside].astype(int) - (255 - sample[inside])).max() <= 1
    assert np.abs(cp[~inside].astype(int) - sample[~inside]).max() <= 1
    (latent_img,) = [_png(server, it) for it in outs[save_latent]["images"]]
    assert latent_img.shape == (h, w, 3)


@pytest.mark.server
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_workflow_runs(server, object_info, name):
    """Each example workflow, converted UI → API, runs; its outputs come back through /view."""
    workflow = load_example(name)
    api = to_api(workflow, object_info)
    loaders = [n for n in api.values() if n["class_type"] == "NTLB_LoadRelevancyCLIP"]
    assert loaders and all(n["inputs"]["model"] == BUILTIN for n in loaders)
    if not builtin_model_available():  # the built-in model is not in the repository yet
        assert replace_widget(api, "NTLB_LoadRelevancyCLIP", "model", TINY) == len(loaders)
    images = [n for n in api.values() if n["class_type"] == "LoadImage"]
    assert images and all(n["inputs"]["image"] == SAMPLE for n in images)
    for node in api.values():  # defeat the cache: every run really executes our nodes
        if node["class_type"] in ("NTLB_CLIPRelevancy", "NTLB_TokenCoverage"):
            node["inputs"]["prompt"] += "\n"

    pnginfo = {"extra_pnginfo": {"workflow": workflow}}  # as the frontend sends it
    entry = server.wait(server.post_prompt(api, extra_data=pnginfo), timeout=300)
    assert entry["status"]["status_str"] == "success"
    outputs = entry["outputs"]
    output_nodes = {i for i, n in api.items() if n["class_type"] in ("SaveImage", "PreviewImage", "PreviewAny")}
    assert output_nodes and output_nodes <= set(outputs), (output_nodes, set(outputs))
    h, w = _sample(server).shape[:2]
    for node_id in output_nodes:
        out = outputs[node_id]
        if api[node_id]["class_type"] == "PreviewAny":
            assert out["text"] and out["text"][0].strip(), node_id
            continue
        for item in out["images"]:
            assert _png(server, item).shape == (h, w, 3)
            if item["type"] == "output":  # saved PNGs embed the UI workflow
                meta = Image.open(io.BytesIO(server.view(item["filename"], item["subfolder"], "output")))
                assert json.loads(meta.info["workflow"])["nodes"] == workflow["nodes"]
    reports = [r for n in outputs.values() for r in n.get("ntlb_report", [])]
    assert reports and all(r["results"] for r in reports)
    if name == "ntlb_heatmap_to_mask" and builtin_model_available():
        # the shipped model finds the yellow circle (and not the blue cross) in the sample image
        rel = next(n for n in api.values() if n["class_type"] == "NTLB_CLIPRelevancy")
        assert rel["inputs"]["prompt"].strip() == "a yellow circle"
        save = next(i for i, n in api.items() if n["class_type"] == "SaveImage")
        (item,) = outputs[save]["images"]
        mask = _png(server, item)[..., 0] > 127
        sample = _sample(server).astype(int)
        yellow = (sample[..., 0] > 180) & (sample[..., 1] > 180) & (sample[..., 2] < 100)
        blue = (sample[..., 2] > 180) & (sample[..., 0] < 100)
        assert yellow.sum() > 1000 and blue.sum() > 1000
        assert (mask & yellow).sum() / yellow.sum() > 0.5, "the mask misses the yellow circle"
        assert (mask & blue).sum() / blue.sum() < 0.1, "the mask covers the blue cross"
    if name == "ntlb_token_coverage":
        cov_node = next(i for i, n in api.items() if n["class_type"] == "NTLB_TokenCoverage")
        texts = {api[i]["_meta"]["title"]: outputs[i]["text"][0] for i in output_nodes}
        coverage = float(texts["coverage"])
        assert 0.0 <= coverage <= 1.0
        json.loads(texts["report (JSON)"])
        assert outputs[cov_node]["ntlb_report"][0]["kind"] == "coverage"


# Loads a UI workflow the way the frontend opens a file / template, then reports what it made of it.
LOAD_IN_FRONTEND = """
(async (wf) => {
  await app.loadGraphData(wf, true, true, null);
  const nodes = app.graph._nodes.map((n) => ({
    id: n.id, type: n.type, known: !!LiteGraph.registered_node_types[n.type],
    widgets: (n.widgets || []).filter((w) => w.serialize !== false).map((w) => [w.name, w.value]),
  }));
  const p = await app.graphToPrompt();
  return {nodes, output: p.output, workflow: p.workflow};
})
"""


@pytest.mark.server
def test_example_workflows_load_in_the_real_frontend(server, object_info):
    """The frontend (1.32.9) opens each example with every node known and every widget value as
    saved, and its own UI → API conversion (``graphToPrompt``) equals ``workflows.to_api``."""
    from cdp_browser import Browser, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.fail("Chromium not found: run scripts/setup.sh (installs Debian's chromium)", pytrace=False)
    status, _ = server.request("POST", "/api/settings/Comfy.TutorialCompleted", b"true")
    assert status == 200
    with Browser(chromium) as browser:
        browser.navigate(server.url + "/")
        browser.wait_for("!!(window.app && app.graph && app.canvas && window.LiteGraph)", timeout=60)
        ready = len(browser.console_errors())
        for name in example_names():
            workflow = load_example(name)
            got = browser.evaluate(f"{LOAD_IN_FRONTEND}({json.dumps(workflow)})", timeout=60)
            assert [n["id"] for n in got["nodes"]] == [n["id"] for n in workflow["nodes"]], name
            assert all(n["known"] for n in got["nodes"]), (name, [n["type"] for n in got["nodes"]])
            saved = {n["id"]: n.get("widgets_values") or [] for n in workflow["nodes"]}
            for node in got["nodes"]:
                values = [v for _, v in node["widgets"]]
                if isinstance(saved[node["id"]], list) and node["type"] != "PreviewAny":
                    assert values == saved[node["id"]], (name, node)
            for api_node in got["output"].values():  # PreviewAny's display widget: frontend only
                api_node["inputs"].pop("preview", None)
            assert got["output"] == to_api(workflow, object_info), name
            assert got["workflow"]["links"] == workflow["links"], name
        # page errors while loading the examples (network/CSP "log:" lines are the offline frontend
        # trying api.comfy.org, e.g. to look up which registry pack a node comes from)
        errors = [e for e in browser.console_errors()[ready:] if not e.startswith("log:")]
        assert not errors, "\n".join(errors)


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.server
def test_empty_prompt_is_an_execution_error_with_our_message(server):
    g = Graph()
    rel = _relevancy(g, _clip(g), g.out(g.add("LoadImage", image=SAMPLE)), "  |  \n ")
    g.add("PreviewImage", images=g.out(rel))
    err = _failure(server, g.nodes)
    assert err["node_type"] == "NTLB_CLIPRelevancy" and err["node_id"] == rel
    assert err["exception_type"].endswith("ValueError")
    assert "prompt is empty" in err["exception_message"]
    _still_serving(server)


@pytest.mark.server
def test_prompt_without_semantic_words_is_an_error(server):
    g = Graph()
    cov = g.add("NTLB_TokenCoverage", relevancy_clip=g.out(_clip(g)), prompt="the and of a",
                score="logit", start_layer_image=0, start_layer_text=0, left_behind_threshold=0.7)
    g.add("PreviewAny", source=g.out(cov, 1))
    err = _failure(server, g.nodes)
    assert err["node_type"] == "NTLB_TokenCoverage"
    assert "no semantic words" in err["exception_message"] and "the and of a" in err["exception_message"]
    _still_serving(server)


@pytest.mark.server
def test_corrupt_and_missing_model_files(server):
    folder = server.base_dir / "models" / "relevancy_clip"
    broken = folder / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)  # after startup: ComfyUI lists the folder again on demand
    g = Graph()
    rel = _relevancy(g, _clip(g, "broken.safetensors"), g.out(g.add("LoadImage", image=SAMPLE)), "a cat")
    g.add("PreviewImage", images=g.out(rel))
    try:
        err = _failure(server, g.nodes)
    finally:
        broken.unlink()
    assert err["node_type"] == "NTLB_LoadRelevancyCLIP"
    assert "broken.safetensors" in err["exception_message"]
    assert "truncated or corrupt" in err["exception_message"]
    _still_serving(server)

    # a model that is not (or no longer) in the folder (a shared workflow, a deleted file): ComfyUI
    # 0.3.75 does not check V3 combo values, the loader's validate_inputs does (a 400 before running)
    g = Graph()
    rel = _relevancy(g, _clip(g, "gone.safetensors"), g.out(g.add("LoadImage", image=SAMPLE)), "a cat")
    g.add("PreviewImage", images=g.out(rel))
    message = _rejection(server, g.nodes)
    assert "model: 'gone.safetensors' is not one of" in message, message
    _still_serving(server)


@pytest.mark.server
def test_unknown_combo_value_is_a_clear_error(server):
    g = Graph()
    rel = _relevancy(g, g.add("NTLB_LoadRelevancyCLIP", model=TINY, device="auto", dtype="fp8",
                              activation="auto"), g.out(g.add("LoadImage", image=SAMPLE)), "a cat")
    g.add("PreviewImage", images=g.out(rel))
    message = _rejection(server, g.nodes)
    assert "dtype: 'fp8' is not one of" in message and "fp32" in message, message
    g = Graph()
    rel = g.add("NTLB_CLIPRelevancy", relevancy_clip=g.out(_clip(g)), image=g.out(g.add("LoadImage", image=SAMPLE)),
                prompt="a cat", **{**RELEVANCY, "fit": "pad"})
    g.add("PreviewImage", images=g.out(rel))
    assert "fit: 'pad' is not one of" in _rejection(server, g.nodes)
    _still_serving(server)


@pytest.mark.server
def test_heatmap_image_mismatches_are_errors(server):
    def graph(image_node: tuple[str, dict[str, Any]], prompt: str) -> tuple[dict[str, Any], str]:
        g = Graph()
        rel = _relevancy(g, _clip(g), g.out(g.add("LoadImage", image=SAMPLE)), _unique(prompt))
        other = g.add(image_node[0], **image_node[1])
        mask = g.add("NTLB_HeatmapToMask", heatmap=g.out(rel, 1), image=g.out(other), **MASK)
        g.add("PreviewImage", images=g.out(g.add("MaskToImage", mask=g.out(mask))))
        return g.nodes, mask

    wide = ("EmptyImage", dict(width=128, height=64, batch_size=1, color=0))
    nodes, mask = graph(wide, "a cat")
    err = _failure(server, nodes)
    assert err["node_type"] == "NTLB_HeatmapToMask" and err["node_id"] == mask
    assert "aspect ratios differ" in err["exception_message"] and "128×64" in err["exception_message"]

    two = ("EmptyImage", dict(width=256, height=256, batch_size=2, color=0))
    nodes, mask = graph(two, "a cat | a dog | a bird")  # 3 heatmaps for a batch of 2 images
    err = _failure(server, nodes)
    assert err["node_type"] == "NTLB_HeatmapToMask"
    assert "not a multiple of the image batch" in err["exception_message"]
    _still_serving(server)


@pytest.mark.server
def test_out_of_range_widget_is_a_validation_error(server):
    g = Graph()
    rel = _relevancy(g, _clip(g), g.out(g.add("LoadImage", image=SAMPLE)), "a cat")
    mask = g.add("NTLB_HeatmapToMask", heatmap=g.out(rel, 1), **{**MASK, "threshold": 1.5})
    g.add("PreviewImage", images=g.out(g.add("MaskToImage", mask=g.out(mask))))
    with pytest.raises(PromptRejected) as rejected:
        server.post_prompt(g.nodes)
    assert rejected.value.status == 400
    errors = rejected.value.node_errors[mask]["errors"]
    assert [e["type"] for e in errors] == ["value_bigger_than_max"]
    assert "threshold" in errors[0]["details"]
    _still_serving(server)


# ---------------------------------------------------------------------------------------- cancel


@pytest.mark.server
def test_interrupt_stops_a_long_relevancy_job_promptly(server):
    import websocket  # websocket-client (requirements-dev)

    phrases, images = 200, 8
    g = Graph()
    img = g.add("EmptyImage", width=32, height=32, batch_size=images, color=0xFFD000)
    rel = _relevancy(g, _clip(g), g.out(img), " | ".join(_unique(f"shape {i}") for i in range(phrases)))
    g.add("PreviewImage", images=g.out(rel))

    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={server.client_id}",
                                     timeout=60)
    try:
        prompt_id = server.post_prompt(g.nodes)
        progress: list[tuple[int, int]] = []
        interrupted_at = None
        ended = None
        deadline = time.monotonic() + 120
        while ended is None:
            assert time.monotonic() < deadline, f"no end of {prompt_id}; progress {progress[-3:]}"
            msg = ws.recv()
            if isinstance(msg, bytes):
                continue
            msg = json.loads(msg)
            data = msg.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if msg["type"] == "progress" and data.get("node") == rel:
                progress.append((data["value"], data["max"]))
                if interrupted_at is None:
                    server.interrupt()
                    interrupted_at = time.monotonic()
            elif msg["type"] in ("execution_interrupted", "execution_success", "execution_error"):
                ended = msg["type"], time.monotonic()
    finally:
        ws.close()

    assert progress and progress[0][1] == phrases * images, "progress max is pairs (phrases × images)"
    assert ended[0] == "execution_interrupted", f"{ended[0]}: the job was not interrupted ({progress[-1]})"
    assert interrupted_at is not None and ended[1] - interrupted_at < 3.0, ended[1] - interrupted_at
    assert progress[-1][0] < progress[-1][1], "it ran to the end"
    entry = server.wait(prompt_id, timeout=30, check=False)
    msgs = {m[0]: m[1] for m in entry["status"]["messages"]}
    assert msgs["execution_interrupted"]["node_type"] == "NTLB_CLIPRelevancy"
    assert rel not in entry.get("outputs", {})
    _still_serving(server)


# ------------------------------------------------------------------------------------ in-process


def test_install_sample_images_never_overwrites_nor_fails(comfy_inprocess, tmp_path, caplog):
    pack = comfy_inprocess.load_pack()
    common = pack.nodes.common
    fp = comfy_inprocess.folder_paths
    original = fp.get_input_directory()
    try:
        fp.set_input_directory(str(tmp_path / "input"))  # does not exist yet
        written = common.install_sample_images()
        target = tmp_path / "input" / SAMPLE
        assert written == [target]
        assert target.read_bytes() == (REPO_ROOT / "assets" / "sample_shapes.png").read_bytes()
        target.write_bytes(b"the user's own file")
        assert common.install_sample_images() == []
        assert target.read_bytes() == b"the user's own file"
        assert [p.name for p in (tmp_path / "input").iterdir()] == [SAMPLE]  # no temp files left

        blocked = tmp_path / "not_a_dir"
        blocked.write_bytes(b"")
        fp.set_input_directory(str(blocked))
        with caplog.at_level(logging.WARNING):
            assert common.install_sample_images() == []
        assert "could not copy sample image" in caplog.text
    finally:
        fp.set_input_directory(original)
    assert Path(fp.get_input_directory()) == Path(original)
