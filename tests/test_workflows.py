"""The UI → API workflow converter (``tests/workflows.py``) on hand-made graphs (no server).

The server tests check it against the real frontend's ``graphToPrompt`` on the example workflows;
these cover what the examples do not use: seeds' ``control_after_generate`` values, reroutes, muted
nodes, widgets turned into inputs, dict ``widgets_values`` and malformed graphs.
"""

from __future__ import annotations

import pytest

from scripts.workflows import WorkflowError, example_names, load_example, to_api, widget_slots

OBJECT_INFO = {
    "KSampler": {
        "input": {"required": {
            "model": ["MODEL", {}],
            "seed": ["INT", {"default": 0, "control_after_generate": True}],
            "steps": ["INT", {"default": 20}],
            "sampler_name": [["euler", "ddim"], {}],
            "latent_image": ["LATENT", {}],
        }},
        "input_order": {"required": ["model", "seed", "steps", "sampler_name", "latent_image"]},
        "display_name": "KSampler",
    },
    "LoadImage": {
        "input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
        "input_order": {"required": ["image"]},
        "display_name": "Load Image",
    },
    "Legacy": {  # no input_order (old servers), a seed without the flag, an optional forceInput
        "input": {"required": {"noise_seed": ["INT", {}], "text": ["STRING", {"multiline": True}]},
                  "optional": {"strength": ["FLOAT", {"forceInput": True}], "mode": ["COMBO", {"options": ["x"]}]}},
        "display_name": "Legacy",
    },
    "Model": {"input": {"required": {}}, "input_order": {"required": []}, "display_name": "Model"},
    "Latent": {"input": {"required": {}}, "input_order": {"required": []}, "display_name": "Latent"},
}


def _node(node_id, kind, widgets=None, inputs=(), order=0, mode=0, title=None):
    node = {"id": node_id, "type": kind, "order": order, "mode": mode,
            "inputs": [{"name": n, "type": "*", "link": link} for n, link in inputs], "outputs": []}
    if widgets is not None:
        node["widgets_values"] = widgets
    if title:
        node["title"] = title
    return node


def test_widget_slots_follow_the_frontend():
    assert widget_slots(OBJECT_INFO["KSampler"]) == [("seed", 2), ("steps", 1), ("sampler_name", 1)]
    assert widget_slots(OBJECT_INFO["LoadImage"]) == [("image", 2)]
    assert widget_slots(OBJECT_INFO["Legacy"]) == [("noise_seed", 2), ("text", 1), ("mode", 1)]


def test_seed_control_values_links_reroutes_and_titles():
    wf = {
        "nodes": [
            _node(1, "Model", [], order=0),
            _node(2, "Latent", [], order=1),
            _node(3, "Reroute", None, inputs=[("", 2)], order=2),
            _node(4, "KSampler", [42, "randomize", 7, "ddim"], inputs=[("model", 1), ("latent_image", 3)],
                  order=3, title="my sampler"),
            _node(5, "Note", ["just text"], order=4),
        ],
        "links": [[1, 1, 0, 4, 0, "MODEL"], [2, 2, 0, 3, 0, "LATENT"], [3, 3, 0, 4, 1, "LATENT"]],
    }
    api = to_api(wf, OBJECT_INFO)
    assert set(api) == {"1", "2", "4"}  # reroute and note are frontend-only
    assert api["4"] == {
        "class_type": "KSampler",
        "inputs": {"seed": 42, "steps": 7, "sampler_name": "ddim", "model": ["1", 0], "latent_image": ["2", 0]},
        "_meta": {"title": "my sampler"},
    }


def test_linked_widget_wins_and_muted_nodes_are_dropped():
    wf = {
        "nodes": [
            _node(1, "Legacy", [5, "fixed", "hello", "x"], order=0),
            _node(2, "Legacy", [6, "fixed", "ignored", "x"], inputs=[("text", 9), ("strength", 10)], order=1),
            _node(3, "Legacy", [7, "fixed", "muted", "x"], order=2, mode=2),
        ],
        "links": [[9, 1, 0, 2, 1, "STRING"], [10, 3, 0, 2, 2, "FLOAT"]],
    }
    api = to_api(wf, OBJECT_INFO)
    assert set(api) == {"1", "2"}
    assert api["2"]["inputs"] == {"noise_seed": 6, "text": ["1", 0], "mode": "x"}  # muted source: no input
    assert api["1"]["_meta"]["title"] == "Legacy"


def test_upload_widget_value_and_dict_widgets_values():
    api = to_api({"nodes": [_node(1, "LoadImage", ["b.png", "image"])], "links": []}, OBJECT_INFO)
    assert api["1"]["inputs"] == {"image": "b.png"}
    api = to_api({"nodes": [_node(1, "KSampler", {"seed": 3, "steps": 4, "sampler_name": "euler"})],
                  "links": []}, OBJECT_INFO)
    assert api["1"]["inputs"] == {"seed": 3, "steps": 4, "sampler_name": "euler"}


def test_malformed_workflows_are_clear_errors():
    with pytest.raises(WorkflowError, match="take 4"):
        to_api({"nodes": [_node(1, "KSampler", [1, 2])], "links": []}, OBJECT_INFO)
    with pytest.raises(WorkflowError, match="not known"):
        to_api({"nodes": [_node(1, "Nope", [])], "links": []}, OBJECT_INFO)
    with pytest.raises(WorkflowError, match="bypassed"):
        to_api({"nodes": [_node(1, "Model", [], mode=4)], "links": []}, OBJECT_INFO)


def test_examples_are_ui_format_version_0_4():
    names = example_names()
    assert {"ntlb_relevancy_heatmaps", "ntlb_token_coverage", "ntlb_heatmap_to_mask"} <= set(names)
    for name in names:
        wf = load_example(name)
        assert wf["version"] == 0.4 and wf["extra"]["frontendVersion"]
        for key in ("id", "revision", "last_node_id", "last_link_id", "nodes", "links", "groups", "config"):
            assert key in wf, (name, key)
        ids = [n["id"] for n in wf["nodes"]]
        assert len(set(ids)) == len(ids) and max(ids) == wf["last_node_id"]
        assert max(link[0] for link in wf["links"]) == wf["last_link_id"]
        by_id = {n["id"]: n for n in wf["nodes"]}
        for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
            assert link_id in by_id[src]["outputs"][src_slot]["links"]
            assert by_id[dst]["inputs"][dst_slot]["link"] == link_id
            assert by_id[src]["outputs"][src_slot]["type"] in (kind, "*") or kind == "*"
        loads = [n for n in wf["nodes"] if n["type"] == "LoadImage"]
        assert loads and all(n["widgets_values"][0] == "ntlb_sample_shapes.png" for n in loads)
        clips = [n for n in wf["nodes"] if n["type"] == "NTLB_LoadRelevancyCLIP"]
        assert clips and all(n["widgets_values"][0] == "shapes (built-in)" for n in clips)
