"""The ComfyUI harness itself: a real server and a real in-process ComfyUI, core nodes only."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch
from comfy_harness import (
    PACK_FOLDER,
    REPO_ROOT,
    ComfyError,
    ComfyModules,
    ComfyServer,
    PromptFailed,
    PromptRejected,
)
from PIL import Image

from scripts import comfyui

#: Core modules that fail to import here because torchaudio is not installed (harmless).
CORE_OPTIONAL = ("nodes_audio.py", "nodes_audio_encoder.py")
HAS_PACK_INIT = (REPO_ROOT / "__init__.py").exists()


def _empty_image_graph(
    width: int = 64, height: int = 48, batch: int = 2, color: int = 0xFF8000
) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": batch, "color": color},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "harness/empty"},
        },
    }


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# --------------------------------------------------------------------------------- provide/install


def test_provide_is_cached_and_complete() -> None:
    t0 = time.monotonic()
    comfy = comfyui.provide()
    assert time.monotonic() - t0 < 1.0
    assert (comfy / "main.py").is_file() and (comfy / "nodes.py").is_file()
    if "COMFYUI_PATH" not in os.environ:
        assert comfyui.comfy_version(comfy) == "0.3.75"
        assert not (comfy / "extra_model_paths.yaml").exists()


def test_comfyui_path_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    with pytest.raises(ComfyError, match="not a ComfyUI checkout"):
        comfyui.provide()
    monkeypatch.delenv("COMFYUI_PATH")
    real = comfyui.provide()
    monkeypatch.setenv("COMFYUI_PATH", str(real))
    assert comfyui.provide() == real.resolve()


def test_requirements_are_comfyuis_without_torch() -> None:
    reqs = comfyui.comfy_requirements(comfyui.provide())
    names = {r.split("=")[0].split(">")[0].split("~")[0].lower() for r in reqs}
    assert not names & {"torch", "torchvision", "torchaudio"}
    assert "requests" in names
    if "COMFYUI_PATH" not in os.environ:  # the vendored 0.3.75: exactly COMFYUI.md 1.2 (+numpy)
        assert sorted(reqs) == sorted(comfyui.COMFY_REQUIREMENTS)


def test_make_base_links_the_pack(tmp_path: Path) -> None:
    base = comfyui.make_base(tmp_path / "b")
    assert comfyui.make_base(tmp_path / "b") == base  # idempotent
    link = base / "custom_nodes" / PACK_FOLDER
    assert link.is_symlink() and link.resolve() == REPO_ROOT
    for sub in ("models", "input", "output", "temp", "user"):
        assert (base / sub).is_dir()
    for asset in (REPO_ROOT / "assets").glob("*"):
        assert (base / "input" / asset.name).is_file(), asset


# ---------------------------------------------------------------------------------------- server


@pytest.mark.server
def test_server_lists_core_nodes(comfy_server: ComfyServer) -> None:
    info = comfy_server.get_json("/object_info")
    for node in (
        "EmptyImage",
        "SaveImage",
        "KSampler",
        "MaskToImage",
        "SetLatentNoiseMask",
        "ImageCompositeMasked",
    ):
        assert node in info, node
    assert info["SaveImage"]["output_node"] is True
    assert comfy_server.get_json("/settings/Comfy.TutorialCompleted") is True


@pytest.mark.server
def test_server_listens_on_loopback_only(comfy_server: ComfyServer) -> None:
    assert comfy_server.proc is not None
    listening = [
        c.laddr
        for c in psutil.Process(comfy_server.proc.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "server listens nowhere?"
    assert {a.ip for a in listening} == {"127.0.0.1"}, listening
    assert comfy_server.port in {a.port for a in listening}


@pytest.mark.server
def test_core_import_failures_are_only_torchaudio(comfy_server: ComfyServer) -> None:
    core = [ln for ln in comfy_server.import_failed_lines() if PACK_FOLDER not in ln]
    unexpected = [ln for ln in core if not ln.rstrip().endswith(CORE_OPTIONAL)]
    assert not unexpected, "\n".join(unexpected)


@pytest.mark.server
@pytest.mark.skipif(not HAS_PACK_INIT, reason="the pack has no __init__.py yet")
def test_pack_imports_without_failure(comfy_server: ComfyServer) -> None:
    assert comfy_server.import_failed_lines(pack_only=True) == [], comfy_server.log_tail()


@pytest.mark.server
def test_core_workflow_runs_and_outputs_come_through_view(comfy_server: ComfyServer) -> None:
    entry = comfy_server.run(_empty_image_graph(), timeout=120)
    assert entry["status"]["status_str"] == "success"
    images = entry["outputs"]["2"]["images"]
    assert len(images) == 2
    for im in images:
        assert im["type"] == "output" and im["subfolder"] == "harness"
        png = Image.open(io.BytesIO(comfy_server.view(im["filename"], im["subfolder"], im["type"])))
        assert png.size == (64, 48)
        assert png.convert("RGB").getpixel((10, 10)) == (255, 128, 0)
        assert (comfy_server.base_dir / "output" / im["subfolder"] / im["filename"]).is_file()


@pytest.mark.server
def test_bad_prompts_are_rejected_and_server_keeps_serving(comfy_server: ComfyServer) -> None:
    with pytest.raises(PromptRejected) as bad:
        comfy_server.post_prompt(_empty_image_graph(width=-8))
    assert bad.value.status == 400
    assert [e["type"] for e in bad.value.node_errors["1"]["errors"]] == ["value_smaller_than_min"]

    with pytest.raises(PromptRejected) as no_out:
        comfy_server.post_prompt({"1": _empty_image_graph()["1"]})
    assert no_out.value.status == 400 and no_out.value.body["error"]["type"] == "prompt_no_outputs"

    with pytest.raises(PromptRejected) as unknown:
        comfy_server.post_prompt({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert unknown.value.status == 400

    assert (
        comfy_server.run(_empty_image_graph(batch=1), timeout=120)["status"]["status_str"]
        == "success"
    )


@pytest.mark.server
def test_execution_error_is_reported_and_server_keeps_serving(comfy_server: ComfyServer) -> None:
    (comfy_server.base_dir / "input" / "harness_corrupt.png").write_bytes(b"not a png")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "harness_corrupt.png"}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "harness/bad"},
        },
    }
    with pytest.raises(PromptFailed) as failed:
        comfy_server.run(graph, timeout=120)
    assert [e["node_type"] for e in failed.value.errors] == ["LoadImage"]
    assert "UnidentifiedImageError" in failed.value.errors[0]["exception_type"]
    comfy_server.interrupt()  # nothing running: still answers 200
    assert (
        comfy_server.run(_empty_image_graph(batch=1), timeout=120)["status"]["status_str"]
        == "success"
    )


@pytest.mark.server
def test_stop_ends_the_server_process(tmp_path: Path) -> None:
    with ComfyServer(base_dir=tmp_path) as server:
        assert server.proc is not None and server.alive()
        pid = server.proc.pid
    assert not server.alive() and _wait_gone(pid, 1.0), "server still running after stop()"
    with pytest.raises(OSError):
        server.request("GET", "/object_info", timeout=2)


@pytest.mark.server
def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    holder_code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from scripts.comfyui import ComfyServer
        s = ComfyServer(base_dir={str(tmp_path)!r}).start()
        print(s.proc.pid, flush=True)
        time.sleep(600)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.strip().isdigit(), f"holder did not start a server: {line!r}"
        pid = int(line)
        assert not _gone(pid)
    finally:
        holder.kill()
        holder.wait()
    assert _wait_gone(pid), f"server {pid} survived its parent"


# ------------------------------------------------------------------------------------ in-process


def test_inprocess_imports_comfyui_not_our_nodes_package(comfy_inprocess: ComfyModules) -> None:
    import nodes

    assert nodes is comfy_inprocess.nodes
    assert Path(nodes.__file__).resolve() == comfy_inprocess.comfy_dir / "nodes.py"
    assert comfy_inprocess.args.cpu is True
    assert comfy_inprocess.model_management.get_torch_device().type == "cpu"
    out_dir = Path(comfy_inprocess.folder_paths.get_output_directory()).resolve()
    assert out_dir == comfy_inprocess.base_dir / "output"
    assert "MaskToImage" in nodes.NODE_CLASS_MAPPINGS  # comfy_extras registered


def test_inprocess_run_node_v1_and_v3(comfy_inprocess: ComfyModules) -> None:
    (img,) = comfy_inprocess.run_node(
        "EmptyImage", width=32, height=16, batch_size=2, color=0x00FF00
    ).outputs
    assert img.shape == (2, 16, 32, 3) and img.is_inference()
    assert torch.equal(img[0, 0, 0], torch.tensor([0.0, 1.0, 0.0]))

    rgba = torch.rand(1, 8, 8, 4)
    rgb, mask = comfy_inprocess.run_node("SplitImageWithAlpha", image=rgba).outputs  # a V3 node
    assert rgb.shape == (1, 8, 8, 3) and mask.shape == (1, 8, 8)
    assert torch.allclose(mask, 1.0 - rgba[..., 3])

    res = comfy_inprocess.run_node("SaveImage", images=img, filename_prefix="inproc/x")
    files = [
        Path(comfy_inprocess.folder_paths.get_output_directory(), i["subfolder"], i["filename"])
        for i in res.ui["images"]
    ]
    assert len(files) == 2 and all(f.is_file() for f in files)


def test_inprocess_load_pack(comfy_inprocess: ComfyModules) -> None:
    if not HAS_PACK_INIT:
        with pytest.raises(ComfyError, match="__init__.py"):
            comfy_inprocess.load_pack()
        return
    pack = comfy_inprocess.load_pack()
    assert hasattr(pack, "NODE_CLASS_MAPPINGS") or hasattr(pack, "comfy_entrypoint")


def test_inprocess_import_evicts_our_nodes_package(tmp_path: Path) -> None:
    """Even when the repo's ``nodes`` package was imported first, ComfyUI's ``nodes`` wins."""
    code = textwrap.dedent(
        f"""
        import sys
        import types
        sys.path[:0] = [{str(REPO_ROOT)!r}, {str(REPO_ROOT / "tests")!r}]
        # what `import nodes.x` of the repo's package leaves behind (without running its code)
        for name in ("nodes", "nodes.x"):
            fake = types.ModuleType(name)
            fake.__file__ = {str(REPO_ROOT / "nodes" / "__init__.py")!r}
            fake.__path__ = [{str(REPO_ROOT / "nodes")!r}]
            sys.modules[name] = fake
        from comfy_harness import import_comfy
        m = import_comfy({str(tmp_path)!r}, extras=False)
        import nodes
        assert nodes is m.nodes and hasattr(nodes, "NODE_CLASS_MAPPINGS"), nodes
        assert "nodes.x" not in sys.modules
        assert sys.path.index(str(m.comfy_dir)) < sys.path.index({str(REPO_ROOT)!r})
        print("OK", nodes.__file__)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
