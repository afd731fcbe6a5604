#!/usr/bin/env python3
"""Run every example workflow headless in a real ComfyUI and collect its outputs.

``python scripts/run_examples.py [--out out/examples]`` starts ComfyUI (127.0.0.1, CPU) with this
pack, converts each ``example_workflows/*.json`` (UI format) to API format, runs it, and copies the
images it saved or previewed to ``OUT/<workflow>/``. Text outputs (e.g. the token-coverage report)
are written next to them as ``<node>_<key>.json``. Exit code 1 if any workflow fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.comfyui import ComfyError, ComfyServer, PromptFailed  # noqa: E402
from scripts.workflows import example_names, load_example, to_api  # noqa: E402


def save_outputs(server: ComfyServer, entry: dict, dest: Path) -> list[Path]:
    """Copy the files and texts a finished prompt produced into ``dest`` (emptied first)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for node_id, ui in entry.get("outputs", {}).items():
        for key, items in ui.items():
            if key == "images":
                for item in items:
                    path = dest / f"{node_id}_{item['filename']}"
                    path.write_bytes(server.view(item["filename"], item.get("subfolder", ""), item["type"]))
                    written.append(path)
            else:
                path = dest / f"{node_id}_{key}.json"
                path.write_text(json.dumps(items, indent=2))
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/examples"))
    args = ap.parse_args(argv)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="ntlb_examples_") as base:
        server = ComfyServer(base_dir=Path(base))
        try:
            server.start()
        except ComfyError as exc:
            print(f"error: ComfyUI did not start: {exc}", file=sys.stderr)
            return 1
        try:
            object_info = server.get_json("/object_info")
            for name in example_names():
                try:
                    entry = server.run(to_api(load_example(name), object_info), timeout=600)
                except PromptFailed as exc:
                    failures += 1
                    print(f"[examples] {name}: FAILED {exc}", file=sys.stderr)
                    continue
                files = save_outputs(server, entry, args.out / name)
                print(f"[examples] {name}: ok, {len(files)} outputs in {args.out / name}/")
        finally:
            server.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
