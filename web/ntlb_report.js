// No Token Left Behind: renders the per-word report of CLIP Relevancy / Token Coverage on the node.
//
// The nodes return ui = {ntlb_report: [{kind, results: [{image_index, phrase, similarity, coverage,
// left_behind, words: [{word, semantic, relevance, left_behind}]}]}]}; ComfyUI hands that dict to
// node.onExecuted(message). We draw it into one DOM widget per node (created once, refreshed on every
// run). All text goes through textContent: prompts are user strings.
import { app } from "../../scripts/app.js";

const NODE_TYPES = new Set(["NTLB_CLIPRelevancy", "NTLB_TokenCoverage"]);
const WIDGET_NAME = "ntlb_report";
const MAX_HEIGHT = 260; // px; longer reports scroll inside the widget
const STYLE_ID = "ntlb-report-style";

const CSS = `
.ntlb-report {
  box-sizing: border-box; width: 100%; height: 100%; overflow-y: auto; overflow-x: hidden;
  font: 11px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg-color, #ddd);
  background: var(--comfy-input-bg, rgba(0, 0, 0, 0.25)); border-radius: 6px;
  border: 1px solid var(--border-color, rgba(128, 128, 128, 0.35)); padding: 2px 6px 4px;
}
.ntlb-report .ntlb-legend {
  display: flex; align-items: center; gap: 8px; flex-wrap: wrap; padding: 2px 0 3px;
  color: var(--descrip-text, #999); font-size: 10px;
  border-bottom: 1px solid var(--border-color, rgba(128, 128, 128, 0.35));
}
.ntlb-report .ntlb-scale {
  display: inline-block; width: 48px; height: 8px; border-radius: 2px; vertical-align: middle;
  margin: 0 3px; background: linear-gradient(90deg, #fff4c2 0%, #ffca70 35%, #f88c34 65%, #c82c12 100%);
}
.ntlb-report .ntlb-row { padding: 4px 0; }
.ntlb-report .ntlb-row + .ntlb-row {
  border-top: 1px dashed var(--border-color, rgba(128, 128, 128, 0.35));
}
.ntlb-report .ntlb-head {
  display: flex; justify-content: space-between; align-items: baseline; gap: 8px; margin-bottom: 3px;
}
.ntlb-report .ntlb-phrase {
  font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; min-width: 0;
}
.ntlb-report .ntlb-image { color: var(--descrip-text, #999); font-weight: 400; margin-right: 4px; }
.ntlb-report .ntlb-stats { color: var(--descrip-text, #999); white-space: nowrap; flex: none; }
.ntlb-report .ntlb-stats .ntlb-bad { color: #ff5a4f; font-weight: 600; }
.ntlb-report .ntlb-stats .ntlb-good { color: #2ea043; font-weight: 600; }
.ntlb-report .ntlb-chips { display: flex; flex-wrap: wrap; gap: 3px; align-items: center; }
.ntlb-report .ntlb-chip {
  display: inline-block; padding: 0 4px; border-radius: 4px; line-height: 16px;
  border: 1px solid transparent; white-space: nowrap; cursor: default;
}
.ntlb-report .ntlb-chip.ntlb-stop { color: var(--descrip-text, #999); opacity: 0.75; padding: 0 1px; }
.ntlb-report .ntlb-chip.ntlb-left-behind {
  border: 1.5px solid #ff3b30; text-decoration: line-through; text-decoration-color: #d70015;
  text-decoration-thickness: 1.5px;
}
.ntlb-report .ntlb-chip .ntlb-badge {
  display: inline-block; margin-left: 3px; padding: 0 3px; border-radius: 3px; font-size: 9px;
  line-height: 12px; vertical-align: 1px; background: #ff3b30; color: #fff; text-decoration: none;
}
.ntlb-report .ntlb-empty { color: var(--descrip-text, #999); padding: 3px 0; font-style: italic; }
`;

function ensureStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  document.head.appendChild(style);
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

// Warm scale for relevance 0..1: pale yellow → orange → deep red-orange. Chip text is dark on the
// light half and white on the dark half, so chips read the same in dark and light themes.
const STOPS = [
  [0.0, [255, 244, 194]],
  [0.35, [255, 202, 112]],
  [0.65, [248, 140, 52]],
  [1.0, [200, 44, 18]],
];
const DARK_TEXT_BELOW = 0.62;

export function relevanceColor(r) {
  const v = finite(r) ? Math.min(1, Math.max(0, r)) : 0;
  for (let i = 1; i < STOPS.length; i++) {
    const [t1, c1] = STOPS[i];
    const [t0, c0] = STOPS[i - 1];
    if (v <= t1) {
      const f = (v - t0) / (t1 - t0);
      const c = c0.map((a, k) => Math.round(a + (c1[k] - a) * f));
      return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
    }
  }
  const last = STOPS[STOPS.length - 1][1];
  return `rgb(${last[0]}, ${last[1]}, ${last[2]})`;
}

function paintChip(chip, rel) {
  const v = rel ?? 0;
  chip.style.background = relevanceColor(v);
  chip.style.color = v < DARK_TEXT_BELOW ? "#1b1205" : "#fff";
}

function renderChip(w) {
  const chip = el("span", "ntlb-chip", w.word);
  chip.dataset.word = String(w.word ?? "");
  const rel = finite(w.relevance) ? w.relevance : null;
  if (rel !== null) chip.dataset.relevance = rel.toFixed(3);
  if (w.semantic) {
    chip.classList.add("ntlb-semantic");
    paintChip(chip, rel);
    chip.title = `relevance ${rel === null ? "n/a" : rel.toFixed(2)}`;
    if (w.left_behind) {
      chip.classList.add("ntlb-left-behind");
      chip.title += " · left behind (CLIP barely used this word)";
      chip.appendChild(el("span", "ntlb-badge", "left behind"));
    }
  } else {
    chip.classList.add("ntlb-stop");
    chip.title = `not checked (stopword or punctuation)${rel === null ? "" : ` · relevance ${rel.toFixed(2)}`}`;
  }
  return chip;
}

function renderRow(r, showImage) {
  const row = el("div", "ntlb-row");
  const head = el("div", "ntlb-head");
  const phrase = el("div", "ntlb-phrase");
  if (showImage && r.image_index !== null && r.image_index !== undefined) {
    phrase.appendChild(el("span", "ntlb-image", `img ${Number(r.image_index) + 1}`));
  }
  phrase.appendChild(document.createTextNode(String(r.phrase ?? "")));
  phrase.title = String(r.phrase ?? "");
  head.appendChild(phrase);

  const stats = el("div", "ntlb-stats");
  if (finite(r.similarity)) {
    stats.appendChild(document.createTextNode(`cos ${r.similarity.toFixed(2)} · `));
  } else {
    stats.appendChild(document.createTextNode("prompt only · "));
  }
  stats.appendChild(document.createTextNode("coverage "));
  const cov = finite(r.coverage) ? r.coverage : 0;
  stats.appendChild(el("span", cov >= 0.999 ? "ntlb-good" : "ntlb-bad", `${Math.round(cov * 100)}%`));
  head.appendChild(stats);
  row.appendChild(head);

  const chips = el("div", "ntlb-chips");
  for (const w of r.words ?? []) chips.appendChild(renderChip(w));
  row.appendChild(chips);
  return row;
}

function renderLegend() {
  const legend = el("div", "ntlb-legend");
  const scale = el("span");
  scale.appendChild(document.createTextNode("relevance 0"));
  scale.appendChild(el("span", "ntlb-scale"));
  scale.appendChild(document.createTextNode("1"));
  legend.appendChild(scale);
  const lb = el("span", "ntlb-chip ntlb-semantic ntlb-left-behind ntlb-legend-chip", "word");
  paintChip(lb, 0.2);
  legend.append(lb, el("span", null, "= left behind"));
  legend.appendChild(el("span", null, "grey = not checked"));
  return legend;
}

/** Fill ``content`` with the report (a list of {kind, results}). */
export function renderReport(content, reports) {
  const results = [];
  for (const rep of reports ?? []) {
    if (rep && Array.isArray(rep.results)) results.push(...rep.results);
  }
  const nImages = new Set(results.map((r) => r.image_index).filter((i) => i !== null && i !== undefined)).size;
  const children = [];
  if (results.length) {
    children.push(renderLegend());
    for (const r of results) children.push(renderRow(r, nImages > 1));
  } else {
    children.push(el("div", "ntlb-empty", "No words to report."));
  }
  content.replaceChildren(...children);
  content.dataset.rows = String(results.length);
}

// Height the widget needs: the content, the box's padding/border, and the margin the frontend
// takes off on each side when it places a DOM widget (element height = computedHeight - 2 * margin).
function contentHeight(node) {
  const st = node.__ntlbReport;
  if (!st) return 0;
  const h = st.content.offsetHeight; // 0 while the element is not laid out yet
  const margin = Number.isFinite(st.widget?.margin) ? st.widget.margin : 10;
  return (h > 0 ? h + 8 : st.estimate) + 2 * margin;
}

function getOrCreateWidget(node) {
  if (node.__ntlbReport) return node.__ntlbReport;
  ensureStyle();
  const box = el("div", "ntlb-report");
  const content = el("div", "ntlb-content");
  box.appendChild(content);
  // the canvas keeps wheel-zoom unless the report itself scrolls, and middle-button panning
  box.addEventListener("wheel", (e) => {
    if (box.scrollHeight <= box.clientHeight) return;
    e.stopPropagation();
  }, { passive: true });
  box.addEventListener("pointerdown", (e) => {
    if (e.button === 1) app.canvas?.processMouseDown?.(e);
  });
  box.addEventListener("pointermove", (e) => {
    if ((e.buttons & 4) === 4) app.canvas?.processMouseMove?.(e);
  });
  box.addEventListener("pointerup", (e) => {
    if (e.button === 1) app.canvas?.processMouseUp?.(e);
  });
  content.appendChild(el("div", "ntlb-empty", "Run the workflow to see how much each word counted."));
  const st = { box, content, estimate: 22, widget: null };
  node.__ntlbReport = st;
  st.widget = node.addDOMWidget(WIDGET_NAME, WIDGET_NAME, box, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => Math.min(contentHeight(node), MAX_HEIGHT),
    getMaxHeight: () => Math.max(contentHeight(node), 40),
  });
  st.widget.serialize = false;
  return st;
}

function fitNode(node) {
  const needed = node.computeSize();
  node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

function showReport(node, reports) {
  const st = getOrCreateWidget(node);
  st.box.dataset.nodeId = String(node.id); // the id is final once the node is in a graph
  renderReport(st.content, reports);
  const rows = st.content.querySelectorAll(".ntlb-row").length;
  const chips = st.content.querySelectorAll(".ntlb-chip").length;
  st.estimate = 26 + rows * 46 + Math.ceil(chips / 8) * 6; // until the browser has laid it out
  fitNode(node);
  // measure the real height once the frontend has placed the element, then fit again
  requestAnimationFrame(() => requestAnimationFrame(() => fitNode(node)));
}

app.registerExtension({
  name: "ntlb.TokenReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODE_TYPES.has(nodeData?.name)) return;
    // The widget exists from the start (with a hint), so that it is part of the node when the
    // frontend first lays it out (also in the Vue-based "Nodes 2.0" mode).
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const ret = onNodeCreated?.apply(this, arguments);
      try {
        getOrCreateWidget(this);
      } catch (err) {
        console.error("[No Token Left Behind] could not add the token report widget", err);
      }
      return ret;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const ret = onExecuted?.apply(this, arguments);
      const reports = message?.ntlb_report;
      if (reports) {
        try {
          showReport(this, reports);
        } catch (err) {
          console.error("[No Token Left Behind] could not render the token report", err);
        }
      }
      return ret;
    };
  },
});
