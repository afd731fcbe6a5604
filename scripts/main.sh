#!/usr/bin/env bash
# Set everything up, then run the main job headless:
#  1. the CLI explains the bundled sample image with the shipped shapes model → out/demo/
#  2. a real ComfyUI (127.0.0.1, CPU) runs every example workflow with the pack → out/examples/
# To use the nodes interactively afterwards: .venv/bin/python scripts/comfyui.py start
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/python -m relevancy explain --image assets/sample_shapes.png \
    --text "a yellow circle and a blue cross|a yellow circle|a blue cross" --out out/demo
.venv/bin/python scripts/run_examples.py --out out/examples
echo "[main] CLI heatmaps + report.json: out/demo/   example workflow outputs: out/examples/"
echo "[main] open the nodes in ComfyUI: .venv/bin/python scripts/comfyui.py start   (prints the URL)"
