#!/usr/bin/env python3
"""Re-make the example workflows' template thumbnails from a real run in the real frontend.

``python scripts/thumbnails.py [--only NAME]`` starts ComfyUI (127.0.0.1, CPU) with this pack, opens
its page in headless Chromium, and for each ``example_workflows/<name>.json`` loads the workflow,
runs it from the page (as the Run button does), fits the view to its nodes and saves a screenshot as
``example_workflows/<name>.jpg`` (800 px wide; the template browser shows it). Run it after changing
the shipped model or the node UI. Needs Chromium (``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cdp_browser import Browser, find_chromium  # noqa: E402

from scripts.comfyui import ComfyServer  # noqa: E402
from scripts.workflows import example_names, load_example  # noqa: E402

WIDTH = 800

# Scale and move the canvas so that every node fits the viewport; return the nodes' screen rect.
FIT_VIEW = """
(() => {
  const nodes = app.graph._nodes;
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of nodes) {
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  const rect = app.canvas.canvas.getBoundingClientRect();
  const pad = 16;
  const scale = Math.min((rect.width - 2 * pad) / (x1 - x0), (rect.height - 2 * pad) / (y1 - y0), 1.25);
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [pad / scale - x0, pad / scale - y0];
  app.graph.setDirtyCanvas(true, true);
  return {x: rect.x, y: rect.y, width: Math.min(rect.width, (x1 - x0) * scale + 2 * pad),
          height: Math.min(rect.height, (y1 - y0) * scale + 2 * pad)};
})()
"""


HIDE_UI = """
(async () => {
  await app.extensionManager.setting.set("Comfy.Minimap.Visible", false);
  await app.extensionManager.setting.set("Comfy.Graph.CanvasMenu", false);
  await app.extensionManager.setting.set("Comfy.Graph.CanvasInfo", false);
  await app.extensionManager.command.execute("Workspace.ToggleFocusMode");
  return true;
})()
"""


def open_clean_page(browser: Browser, server: ComfyServer) -> None:
    """Open the app and hide menus, side bar, tabs, banner, minimap and canvas overlays (focus mode)."""
    browser.navigate(server.url + "/")
    browser.wait_for("!!(window.app && app.graph && app.canvas && window.LiteGraph)", timeout=60,
                     what="the ComfyUI app")
    browser.evaluate(HIDE_UI, timeout=30)


def run_from_page(browser: Browser, server: ComfyServer, timeout: float = 120.0) -> dict:
    """Queue the page's graph (as the Run button does); return its finished history entry."""
    before = server.history_ids()
    browser.evaluate("app.queuePrompt(0).then(() => true)", timeout=30)
    return server.wait_new(before, timeout)


def thumbnail(browser: Browser, server: ComfyServer, name: str, out_dir: Path = ROOT / "example_workflows") -> Path:
    """Load, run and screenshot one example workflow; write ``<out_dir>/<name>.jpg``."""
    from PIL import Image

    browser.evaluate(f"app.loadGraphData({json.dumps(load_example(name))}).then(() => true)", timeout=30)
    run_from_page(browser, server)
    time.sleep(1.0)  # previews and the report widget draw after the run finishes
    rect = browser.evaluate(FIT_VIEW)
    time.sleep(0.5)
    with tempfile.TemporaryDirectory() as tmp:
        shot = browser.screenshot(Path(tmp) / "shot.png", clip=rect)
        img = Image.open(shot).convert("RGB")
    img = img.resize((WIDTH, round(img.height * WIDTH / img.width)), Image.LANCZOS)
    out = Path(out_dir) / f"{name}.jpg"
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, optimize=True)
    out.write_bytes(buf.getvalue())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", help="example name (repeatable; default: all)")
    args = p.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("Chromium not found: run scripts/setup.sh (installs Debian's chromium)", file=sys.stderr)
        return 1
    names = args.only or example_names()
    with tempfile.TemporaryDirectory(prefix="ntlb-thumbs-") as base, \
            ComfyServer(base_dir=Path(base)) as server, Browser(chromium, 1600, 1000) as browser:
        open_clean_page(browser, server)
        for name in names:
            print(f"{name}: {thumbnail(browser, server, name)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
