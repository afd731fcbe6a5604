"""UI-format workflows (what the frontend saves, ``example_workflows/*.json``) → API format (what
``POST /prompt`` takes), using the server's ``/object_info`` for each node's widget order.

The frontend (1.32.9) stores a node's widget values positionally in ``widgets_values``, in the
order of the node's inputs (``input_order``: required, then optional) that are widgets, plus
frontend-only extra values: a ``control_after_generate`` value after an INT/COMBO that has that
option (or an INT named ``seed``/``noise_seed``), and the value of the ``upload`` button that an
``image_upload`` combo gets (LoadImage: ``["file.png", "image"]``). A widget turned into a linked
input keeps its slot in ``widgets_values``, but the link wins. Frontend-only nodes (notes,
reroutes) produce nothing; links through reroutes are followed to their source.

This mirrors ``app.graphToPrompt()`` for the graphs the pack ships; the tests check it against what
the real frontend produced for the example workflows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "example_workflows"

#: Types the frontend draws as widgets (anything else is a socket; a list of strings is a combo).
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
#: Node types that exist only in the frontend and are never sent to the server.
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
#: Input options after which the frontend adds an upload button that serializes one more value.
UPLOAD_FLAGS = ("image_upload", "animated_image_upload", "video_upload", "audio_upload")
SEED_NAMES = ("seed", "noise_seed")
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    """The UI workflow cannot be converted (unknown node, wrong number of widget values, ...)."""


def load_example(name: str) -> dict[str, Any]:
    """An example workflow by file stem (``ntlb_relevancy_heatmaps``) or path."""
    path = Path(name)
    if not path.suffix:
        path = EXAMPLES_DIR / f"{name}.json"
    return json.loads(path.read_text())


def example_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.json"))


def widget_slots(node_info: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(input name, number of widgets_values entries it takes)`` in the frontend's order."""
    slots = []
    order = node_info.get("input_order") or {
        section: list(node_info["input"].get(section, {})) for section in ("required", "optional")
    }
    for section in ("required", "optional"):
        specs = node_info["input"].get(section, {})
        for name in order.get(section, []):
            spec = specs[name]
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            is_combo = isinstance(kind, list) or kind == "COMBO"
            if not (is_combo or kind in WIDGET_TYPES) or opts.get("forceInput"):
                continue
            width = 1
            if opts.get("control_after_generate") or (kind == "INT" and name in SEED_NAMES):
                width += 1
            if is_combo and any(opts.get(flag) for flag in UPLOAD_FLAGS):
                width += 1
            slots.append((name, width))
    return slots


def _widget_values(node: Mapping[str, Any], node_info: Mapping[str, Any]) -> dict[str, Any]:
    slots = widget_slots(node_info)
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):  # some nodes save {name: value}
        return {name: values[name] for name, _ in slots if name in values}
    need = sum(width for _, width in slots)
    if len(values) != need:
        raise WorkflowError(
            f"node {node['id']} ({node['type']}): {len(values)} widget values {values!r}, but its "
            f"widgets {[n for n, _ in slots]} take {need}"
        )
    out, i = {}, 0
    for name, width in slots:
        out[name] = values[i]
        i += width
    return out


def to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Convert a UI-format workflow to an API-format prompt (``{"<id>": {class_type, inputs, _meta}}``)."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):  # the object form some exports use
            link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                    link["target_slot"], link.get("type")]
        links[link[0]] = (link[1], link[2])

    def source(link_id: int) -> tuple[int, int] | None:
        """The real (non-reroute) origin of a link, or None if it leads nowhere."""
        seen = set()
        while link_id is not None and link_id in links and link_id not in seen:
            seen.add(link_id)
            node_id, slot = links[link_id]
            node = nodes.get(node_id)
            if node is None:
                return None
            if node["type"] != "Reroute":
                return node_id, slot
            link_id = (node.get("inputs") or [{}])[0].get("link")
        return None

    api: dict[str, dict[str, Any]] = {}
    for node in sorted(workflow["nodes"], key=lambda n: n.get("order", 0)):
        kind = node["type"]
        mode = node.get("mode", MODE_ALWAYS)
        if kind in FRONTEND_ONLY or mode == MODE_NEVER:
            continue
        if mode == MODE_BYPASS:
            raise WorkflowError(f"node {node['id']} ({kind}) is bypassed; not supported here")
        info = object_info.get(kind)
        if info is None:
            raise WorkflowError(f"node {node['id']}: type {kind!r} is not known to this server")
        inputs = _widget_values(node, info)
        for inp in node.get("inputs") or []:
            if inp.get("link") is None:
                continue
            src = source(inp["link"])
            if src is None:
                continue
            src_node = nodes[src[0]]
            if src_node.get("mode", MODE_ALWAYS) == MODE_NEVER:
                continue
            inputs[inp["name"]] = [str(src[0]), src[1]]
        api[str(node["id"])] = {
            "class_type": kind,
            "inputs": inputs,
            "_meta": {"title": node.get("title") or info.get("display_name") or kind},
        }
    return api


def replace_widget(api: dict[str, dict[str, Any]], class_type: str, name: str, value: Any) -> int:
    """Set input ``name`` of every ``class_type`` node in an API prompt; return how many changed."""
    changed = 0
    for node in api.values():
        if node["class_type"] == class_type and name in node["inputs"]:
            node["inputs"][name] = value
            changed += 1
    return changed
