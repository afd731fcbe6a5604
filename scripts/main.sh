#!/usr/bin/env bash
# Set everything up, then run the main job: explain the bundled sample image with the shipped
# shapes model and write heatmaps + report to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-out/demo}
.venv/bin/python -m relevancy explain --image assets/sample_shapes.png \
    --text "a yellow circle and a blue cross|a yellow circle|a blue cross" --out "$OUT"
echo "[main] heatmaps and report.json are in $OUT/"
