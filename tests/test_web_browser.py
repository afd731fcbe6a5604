"""The web extension in a real browser: headless Chromium + the real ComfyUI frontend + this pack.

Builds a graph in the page (Load Relevancy CLIP with a tiny random checkpoint → CLIP Relevancy and
Token Coverage), queues it from the page, and checks that ``web/ntlb_report.js`` rendered the token
report on both nodes: one chip per word, with the semantic / left-behind / stopword classes the
server's report says. A screenshot goes to the test's tmp dir and to ``/tmp/ntlb_widget.png``.

Needs Debian's ``chromium`` (``scripts/setup.sh`` installs it) and ``websocket-client``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from cdp_browser import Browser, find_chromium
from clip_factory import CONFIGS, make_clip, save_open_clip_safetensors, write_sidecar
from comfy_harness import PACK_FOLDER

from scripts.thumbnails import open_clean_page, run_from_page, thumbnail

MODEL = "tiny/open_clip_model.safetensors"
JS_URL = f"/extensions/{PACK_FOLDER}/ntlb_report.js"
DOC_NODES = (
    "NTLB_LoadRelevancyCLIP",
    "NTLB_CLIPRelevancy",
    "NTLB_TokenCoverage",
    "NTLB_HeatmapToMask",
)
RELEVANCY_PROMPT = "a red circle | a [blue] square"
COVERAGE_PROMPT = "a red circle and a [blue] square"
COVERAGE_PROMPT_2 = "a red circle and a [blue] square\nthe big green tree"
LATEST_SCREENSHOT = Path("/tmp/ntlb_widget.png")
LATEST_SCREENSHOT_LIGHT = Path("/tmp/ntlb_widget_light.png")
OURS = ("ntlb", "notokenleftbehind", "no token left behind")

# Builds the graph with LiteGraph (as a user would), returns the node ids.
BUILD_GRAPH = """
(() => {
  const g = app.graph;
  g.clear();
  const add = (type, pos, size) => {
    const n = LiteGraph.createNode(type);
    if (!n) throw new Error("no node type " + type);
    n.pos = pos;
    g.add(n);
    if (size) n.setSize(size);
    return n;
  };
  const setW = (n, name, v) => {
    const w = n.widgets.find((w) => w.name === name);
    if (!w) throw new Error(n.type + " has no widget " + name);
    w.value = v;
  };
  const image = add("LoadImage", [20, 40], [300, 330]);
  setW(image, "image", "sample_shapes.png");
  const clip = add("NTLB_LoadRelevancyCLIP", [20, 460], [300, 130]);
  setW(clip, "model", %(model)s);
  const rel = add("NTLB_CLIPRelevancy", [360, 40], [470, 330]);
  setW(rel, "prompt", %(rel_prompt)s);
  const cov = add("NTLB_TokenCoverage", [360, 560], [470, 260]);
  setW(cov, "prompt", %(cov_prompt)s);
  const prev = add("PreviewImage", [870, 40], [260, 300]);
  const any = add("PreviewAny", [870, 560], [260, 160]);
  clip.connect(0, rel, "relevancy_clip");
  clip.connect(0, cov, "relevancy_clip");
  image.connect(0, rel, "image");
  image.connect(0, cov, "image");
  rel.connect(0, prev, "images");
  cov.connect(0, any, "source");
  app.canvas.ds.scale = 1;
  app.canvas.ds.offset = [80, 100];
  g.setDirtyCanvas(true, true);
  return {rel: rel.id, cov: cov.id};
})()
"""

# Per rendered node: its rows (phrase text, stats, chips with classes) and widget count.
READ_WIDGET = """
((id) => {
  const node = app.graph.getNodeById(id);
  const box = document.querySelector('.ntlb-report[data-node-id="' + id + '"]');
  if (!node || !box) return null;
  const rect = box.getBoundingClientRect();
  return {
    widgets: node.widgets.filter((w) => w.name === "ntlb_report").length,
    visible: rect.width > 50 && rect.height > 20 && getComputedStyle(box).display !== "none",
    rect: {x: rect.x, y: rect.y, width: rect.width, height: rect.height},
    overflow: box.scrollHeight - box.clientHeight,
    rows: [...box.querySelectorAll(".ntlb-row")].map((row) => ({
      phrase: row.querySelector(".ntlb-phrase").textContent,
      stats: row.querySelector(".ntlb-stats").textContent,
      chips: [...row.querySelectorAll(".ntlb-chip")].map((c) => ({
        word: c.dataset.word,
        text: c.firstChild.textContent,
        semantic: c.classList.contains("ntlb-semantic"),
        left_behind: c.classList.contains("ntlb-left-behind"),
        stop: c.classList.contains("ntlb-stop"),
        title: c.title,
        background: c.style.background,
      })),
    })),
  };
})(%s)
"""

# Screen rectangle (CSS px) around the given nodes, title bars included.
NODES_RECT = """
((ids) => {
  const canvasRect = app.canvas.canvas.getBoundingClientRect();
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const id of ids) {
    const n = app.graph.getNodeById(id);
    const [ax, ay] = app.canvas.ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT]);
    const [bx, by] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
    x0 = Math.min(x0, ax); y0 = Math.min(y0, ay); x1 = Math.max(x1, bx); y1 = Math.max(y1, by);
  }
  const pad = 12;
  return {x: Math.max(0, canvasRect.x + x0 - pad), y: Math.max(0, canvasRect.y + y0 - pad),
          width: x1 - x0 + 2 * pad, height: y1 - y0 + 2 * pad};
})(%s)
"""


# What the node saves into a workflow (the display-only widget must not add to it).
SAVED_WIDGETS = "JSON.stringify(app.graph.getNodeById(%s).serialize().widgets_values)"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.fail(
            "Chromium not found: run scripts/setup.sh (installs Debian's chromium)", pytrace=False
        )
    return path


@pytest.fixture(scope="module")
def server(comfy_server):
    """The session server with a tiny random CLIP in models/relevancy_clip/ and no first-run dialog."""
    folder = comfy_server.base_dir / "models" / "relevancy_clip" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "open_clip_model.safetensors"
    if not target.exists():
        clip = make_clip(CONFIGS["deeper"], seed=21)
        write_sidecar(save_open_clip_safetensors(clip, target), clip)
    status, _ = comfy_server.request("POST", "/api/settings/Comfy.TutorialCompleted", b"true")
    assert status == 200
    return comfy_server


def _check_widget(widget: dict, report: list[dict]) -> None:
    """The rendered rows/chips agree with the server's ``ntlb_report``."""
    results = [r for rep in report for r in rep["results"]]
    assert widget is not None, "the report widget was not rendered"
    assert widget["widgets"] == 1, "the report widget must be created once per node"
    assert widget["visible"], f"the report widget is not visible: {widget['rect']}"
    assert len(widget["rows"]) == len(results)
    for row, res in zip(widget["rows"], results, strict=True):
        assert res["phrase"] in row["phrase"]
        assert f"coverage {round(res['coverage'] * 100)}%" in row["stats"]
        if res.get("similarity") is not None:
            assert f"cos {res['similarity']:.2f}" in row["stats"]
        assert len(row["chips"]) == len(res["words"]), (row, res)
        for chip, word in zip(row["chips"], res["words"], strict=True):
            assert chip["word"] == word["word"] and chip["text"] == word["word"]
            assert chip["semantic"] == word["semantic"] and chip["stop"] == (not word["semantic"])
            assert chip["left_behind"] == word["left_behind"]
            if word["semantic"]:
                assert f"relevance {word['relevance']:.2f}" in chip["title"]
                assert chip["background"].startswith("rgb("), chip
        assert [c["word"] for c in row["chips"] if c["left_behind"]] == res["left_behind"]


def _wait_rows(browser: Browser, read_js: str, condition: str, what: str) -> None:
    """Wait until the widget read by ``read_js`` exists and ``w.<condition>`` holds."""
    browser.wait_for(
        f"(() => {{ const w = {read_js}; return !!w && w.{condition.replace('rows', 'rows.length')}; }})()",
        timeout=20,
        what=what,
    )


def _fake_row(image_index, phrase, similarity, words) -> dict:
    """A report row as the nodes send it; ``words`` = (word, semantic, relevance, left_behind)."""
    ws = [
        dict(zip(("word", "semantic", "relevance", "left_behind"), w, strict=True)) for w in words
    ]
    sem = [w for w in ws if w["semantic"]]
    behind = [w["word"] for w in sem if w["left_behind"]]
    return {
        "image_index": image_index,
        "phrase": phrase,
        "similarity": similarity,
        "words": ws,
        "coverage": 1.0 if not sem else 1 - len(behind) / len(sem),
        "left_behind": behind,
    }


def _our_errors(browser: Browser) -> list[str]:
    return [e for e in browser.console_errors() if any(k in e.lower() for k in OURS)]


def _open_app(browser: Browser, server) -> None:
    """Load the ComfyUI page and wait until the app and our extension are ready."""
    browser.navigate(server.url + "/")
    browser.wait_for(
        "!!(window.app && app.graph && app.canvas && window.LiteGraph)",
        timeout=60,
        what="the ComfyUI app",
    )
    # registered only if the page imported and ran ntlb_report.js
    browser.wait_for(
        "(app.extensions || []).some((e) => e.name === 'ntlb.TokenReport')",
        timeout=30,
        what="extension ntlb.TokenReport to register",
    )


def _build_graph(browser: Browser) -> dict[str, int]:
    return browser.evaluate(
        BUILD_GRAPH
        % {
            "model": json.dumps(MODEL),
            "rel_prompt": json.dumps(RELEVANCY_PROMPT),
            "cov_prompt": json.dumps(COVERAGE_PROMPT),
        }
    )


def _queue_from_page(browser: Browser, server) -> dict:
    """Queue the page's graph (as the Run button does); return the finished history entry."""
    return run_from_page(browser, server, timeout=60.0)


def _screenshot_nodes(browser: Browser, ids: list[int], path: Path, copy_to: Path | None) -> None:
    rect = browser.evaluate(NODES_RECT % json.dumps(ids))
    browser.screenshot(path, clip=rect)
    if copy_to is not None:
        shutil.copyfile(path, copy_to)


@pytest.mark.server
def test_token_report_widget_renders_in_the_browser(server, chromium, tmp_path):
    t0 = time.monotonic()
    extensions = server.get_json("/extensions")
    assert JS_URL in extensions
    ours = [e for e in extensions if f"/{PACK_FOLDER}/" in e]
    assert all(e.endswith(".js") for e in ours), f"only .js files are loaded as modules: {ours}"
    info = server.get_json("/object_info")
    for node_id in DOC_NODES:  # help-panel docs are served (not loaded as modules)
        # the frontend looks for /extensions/<python_module's pack folder>/docs/<node id>.md
        assert info[node_id]["python_module"].split(".")[1].split("@")[0] == PACK_FOLDER
        status, body = server.request("GET", f"/extensions/{PACK_FOLDER}/docs/{node_id}.md")
        assert status == 200 and body.lstrip().startswith(b"#"), node_id

    with Browser(chromium, width=1400, height=1100) as browser:
        _open_app(browser, server)
        ids = _build_graph(browser)
        pair = [ids["rel"], ids["cov"]]
        read = {k: READ_WIDGET % json.dumps(ids[k]) for k in ids}
        # before any run: one widget per node, with a hint and no rows
        browser.evaluate("new Promise((r) => requestAnimationFrame(() => r(true)))")
        _screenshot_nodes(browser, pair, tmp_path / "ntlb_before_run.png", None)
        saved_before = browser.evaluate(SAVED_WIDGETS % json.dumps(ids["rel"]))

        entry = _queue_from_page(browser, server)
        reports = {k: entry["outputs"][str(ids[k])]["ntlb_report"] for k in ("rel", "cov")}
        assert [r["kind"] for r in reports["rel"]] == ["relevancy"]
        assert [r["kind"] for r in reports["cov"]] == ["coverage"]

        _wait_rows(browser, read["rel"], "rows > 0", "the CLIP Relevancy report widget")
        _wait_rows(browser, read["cov"], "rows > 0", "the Token Coverage report widget")
        time.sleep(0.5)  # let the node resize settle before measuring / screenshotting
        # screenshots first, so that a failing check below still leaves a picture
        _screenshot_nodes(browser, pair, tmp_path / "ntlb_widget.png", LATEST_SCREENSHOT)
        browser.screenshot(tmp_path / "ntlb_page.png")
        widgets = {k: browser.evaluate(read[k]) for k in ids}
        _check_widget(widgets["rel"], reports["rel"])
        _check_widget(widgets["cov"], reports["cov"])
        assert len(widgets["rel"]["rows"]) == 2 and len(widgets["cov"]["rows"]) == 1
        assert [c["word"] for c in widgets["cov"]["rows"][0]["chips"] if c["semantic"]] == ["blue"]
        assert widgets["cov"]["overflow"] <= 2, "the node should grow to fit a one-row report"

        # the widget is display-only: nothing of it reaches the prompt or the saved workflow
        api = browser.evaluate("app.graphToPrompt().then((p) => p.output)")
        assert "ntlb_report" not in api[str(ids["rel"])]["inputs"]
        assert browser.evaluate(SAVED_WIDGETS % json.dumps(ids["rel"])) == saved_before

        # a second run updates the same widget in place
        browser.evaluate(f"""(() => {{
            const n = app.graph.getNodeById({ids["cov"]});
            n.widgets.find((w) => w.name === "prompt").value = {json.dumps(COVERAGE_PROMPT_2)};
        }})()""")
        entry = _queue_from_page(browser, server)
        report2 = entry["outputs"][str(ids["cov"])]["ntlb_report"]
        _wait_rows(browser, read["cov"], "rows === 2", "the Token Coverage widget to update")
        _check_widget(browser.evaluate(read["cov"]), report2)

        # the light theme, for a look (the widget uses the palette's CSS variables)
        set_palette = "app.extensionManager.setting.set('Comfy.ColorPalette', %s).then(() => true)"
        browser.evaluate(set_palette % "'light'")
        try:
            time.sleep(0.5)
            _screenshot_nodes(
                browser, pair, tmp_path / "ntlb_widget_light.png", LATEST_SCREENSHOT_LIGHT
            )
        finally:
            browser.evaluate(set_palette % "'dark'")

        # user text is escaped; several images get an image label; missing numbers don't break it
        hostile = '<img src=x onerror="window.__ntlbXss=1">'
        message = {
            "ntlb_report": [
                {
                    "kind": "relevancy",
                    "results": [
                        _fake_row(0, hostile, 0.31, [("<b>x</b>", True, 1.0, False)]),
                        _fake_row(1, hostile, None, [("&amp;", False, None, False)]),
                    ],
                }
            ]
        }
        browser.evaluate(f"app.graph.getNodeById({ids['rel']}).onExecuted({json.dumps(message)})")
        fake = browser.evaluate(read["rel"])
        _check_widget(fake, message["ntlb_report"])
        assert [r["phrase"] for r in fake["rows"]] == [f"img 1{hostile}", f"img 2{hostile}"]
        assert "prompt only" in fake["rows"][1]["stats"]
        assert browser.evaluate(
            f"""(() => {{
                const box = document.querySelector('.ntlb-report[data-node-id="{ids["rel"]}"]');
                return box.querySelectorAll("img, b").length === 0 && !window.__ntlbXss;
            }})()"""
        ), "report text must not be parsed as HTML"

        errors = _our_errors(browser)
        assert not errors, "console errors from the pack's frontend:\n" + "\n".join(errors)
    assert time.monotonic() - t0 < 90


@pytest.mark.server
def test_token_report_widget_renders_with_vue_nodes(server, chromium, tmp_path):
    """The opt-in "Nodes 2.0" mode renders nodes with Vue; the DOM widget must show there too."""
    key = "/api/settings/Comfy.VueNodes.Enabled"
    assert server.request("POST", key, b"true")[0] == 200
    try:
        with Browser(chromium, width=1400, height=1100) as browser:
            _open_app(browser, server)
            assert browser.evaluate("app.extensionManager.setting.get('Comfy.VueNodes.Enabled')")
            ids = _build_graph(browser)
            entry = _queue_from_page(browser, server)
            read = READ_WIDGET % json.dumps(ids["cov"])
            _wait_rows(browser, read, "rows > 0", "the report widget in Vue nodes mode")
            time.sleep(0.3)
            browser.screenshot(tmp_path / "ntlb_vue_nodes.png")
            _check_widget(browser.evaluate(read), entry["outputs"][str(ids["cov"])]["ntlb_report"])
            errors = _our_errors(browser)
            assert not errors, "console errors from the pack's frontend:\n" + "\n".join(errors)
    finally:
        server.request("POST", key, b"false")


@pytest.mark.server
def test_thumbnail_script_screenshots_an_example_run(server, chromium, tmp_path):
    """scripts/thumbnails.py runs an example in the page and saves an 800-px JPEG of its nodes."""
    import numpy as np
    from PIL import Image

    keys = ("Comfy.Minimap.Visible", "Comfy.Graph.CanvasMenu", "Comfy.Graph.CanvasInfo")
    try:
        with Browser(chromium, width=1600, height=1000) as browser:
            open_clean_page(browser, server)
            before = server.history_ids()
            out = thumbnail(browser, server, "ntlb_heatmap_to_mask", out_dir=tmp_path)
            assert len(server.history_ids() - before) == 1  # it really ran the workflow
        img = Image.open(out)
        assert img.format == "JPEG" and img.width == 800 and 300 < img.height < 800
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
        assert pixels.std() > 20  # nodes, previews and wires, not an empty canvas
    finally:
        for key in keys:
            server.request("POST", f"/api/settings/{key}", b"true")
