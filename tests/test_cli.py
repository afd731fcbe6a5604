"""The CLI contract: ``python -m relevancy explain`` writes report.json and heatmap overlays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from clip_factory import CONFIGS, make_clip, save_open_clip_safetensors, write_sidecar
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "relevancy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_explain_writes_documented_report(tmp_path):
    clip = make_clip(CONFIGS["deeper"], seed=1)
    model = save_open_clip_safetensors(clip, tmp_path / "open_clip_model.safetensors")
    write_sidecar(model, clip)
    rng = np.random.default_rng(0)
    images = []
    for k, (h, w) in enumerate([(60, 80), (48, 48)]):
        p = tmp_path / f"img{k}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        images.append(p)
    out = tmp_path / "out"
    res = _run("explain", "--model", str(model), "--image", str(images[0]), "--image", str(images[1]),
               "--text", "a red circle|a [blue] square and a tree", "--score", "cos",
               "--start-layer-image", "1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    results = report["results"]
    assert len(results) == 4
    assert [(Path(r["image"]).name, r["phrase"]) for r in results] == [
        ("img0.png", "a red circle"), ("img1.png", "a red circle"),
        ("img0.png", "a [blue] square and a tree"), ("img1.png", "a [blue] square and a tree")]
    for r in results:
        assert -1.0 <= r["similarity"] <= 1.0
        assert len(r["tokens"]) == len(r["text_relevance"]) > 0
        assert r["tokens"][0] == "a"
        grid = np.asarray(r["image_relevance"])
        assert grid.shape == (3, 3)  # 48 px / patch 16
        words = r["words"]
        assert {"word", "semantic", "relevance", "left_behind"} <= set(words[0])
        assert all(0.0 <= w["relevance"] <= 1.0 + 1e-6 for w in words)
        assert any(w["relevance"] > 0.999 for w in words)  # /sum,/max: strongest word is 1
        assert all(not w["left_behind"] or w["semantic"] for w in words)
        png = Image.open(out / r["heatmap"])
        name = Path(r["image"]).name
        assert png.size == ((80, 60) if name == "img0.png" else (48, 48))
    emphasised = [w["word"] for w in results[2]["words"] if w["semantic"]]
    assert emphasised == ["blue"]
    assert "a red circle" in res.stdout and "report.json" in res.stdout


def test_bad_model_file_gives_a_clear_error(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 100)
    img = tmp_path / "i.png"
    Image.new("RGB", (32, 32)).save(img)
    res = _run("explain", "--model", str(bad), "--image", str(img), "--text", "a cat", "--out",
               str(tmp_path / "o"))
    assert res.returncode == 2
    assert "broken.safetensors" in res.stderr and "Traceback" not in res.stderr


def test_empty_text_is_rejected(tmp_path):
    img = tmp_path / "i.png"
    Image.new("RGB", (32, 32)).save(img)
    res = _run("explain", "--image", str(img), "--text", " | ", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "no phrases" in res.stderr
