"""Shared pytest fixtures. Keep each fixture small; put helpers in their own modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from comfy_harness import ComfyError, ComfyModules, ComfyServer, import_comfy


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A real ComfyUI server (127.0.0.1, ``--cpu``) with this pack linked in; one per session.

    Fails (never skips) when ComfyUI cannot be provided or started. The base directory (models,
    input, output, the server log) is a fresh temp dir: ``comfy_server.base_dir``.
    """
    server = ComfyServer(base_dir=tmp_path_factory.mktemp("comfy_base"))
    try:
        server.start()
    except ComfyError as e:
        pytest.fail(f"could not start ComfyUI: {e}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def comfy_inprocess(tmp_path_factory: pytest.TempPathFactory) -> ComfyModules:
    """The real ComfyUI imported into the test process (``args.cpu = True``, extras registered).

    ``import nodes`` is ComfyUI's afterwards (see ``comfy_harness``); use ``.load_pack()`` to load
    this pack the way ComfyUI does and ``.run_node(...)`` to execute a node under inference mode.
    """
    try:
        return import_comfy(tmp_path_factory.mktemp("comfy_inprocess_base"))
    except ComfyError as e:
        pytest.fail(f"could not import ComfyUI: {e}", pytrace=False)
