"""Test harness around a real ComfyUI (no mocks): a server in a subprocess and in-process imports.

Server: :class:`ComfyServer` (from ``scripts/comfyui.py``) runs ``main.py --cpu`` on 127.0.0.1 with
this pack symlinked into ``custom_nodes/ComfyUI-NoTokenLeftBehind``; see the ``comfy_server`` fixture.

In-process: :func:`import_comfy` imports ComfyUI's own ``nodes``, ``folder_paths``, ``execution``,
``comfy.model_management`` into the test process with ``args.cpu = True``.

**The ``nodes`` name clash.** This repo has a ``nodes/`` package and ComfyUI has a top-level
``nodes.py``. pytest puts the repo root on ``sys.path`` (``pythonpath = ["."]``), so a plain
``import nodes`` would find *our* package. :func:`import_comfy` therefore inserts the ComfyUI dir at
``sys.path[0]`` and evicts any cached module (``nodes``, ``nodes.*``, ``utils``, ``app``, …) that
shadows a ComfyUI top-level module but does not live in the ComfyUI dir. Consequences:

* After :func:`import_comfy`, ``import nodes`` is ComfyUI's. Pack code must import its own
  submodules relatively (``from .nodes.x import Y``), exactly as when ComfyUI loads it.
* Tests reach pack classes through :meth:`ComfyModules.load_pack` (ComfyUI's own loader; node ids
  land in ``nodes.NODE_CLASS_MAPPINGS``) or via the engine package ``relevancy`` (no clash).
* ComfyUI's ``nodes.py`` itself prepends ``ComfyUI/comfy`` to ``sys.path``, so bare names such as
  ``utils``, ``ops``, ``hooks``, ``sample``, ``float`` resolve into ComfyUI afterwards: do not give
  test helper modules such names.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from scripts.comfyui import (
    PACK_FOLDER,
    REPO_ROOT,
    ComfyError,
    ComfyServer,
    PromptFailed,
    PromptRejected,
    make_base,
    provide,
)

__all__ = [
    "PACK_FOLDER",
    "REPO_ROOT",
    "ComfyError",
    "ComfyModules",
    "ComfyServer",
    "PromptFailed",
    "PromptRejected",
    "import_comfy",
]

#: ComfyUI top-level entries that are not importable runtime modules (never evicted).
_NOT_MODULES = {
    "tests",
    "tests-unit",
    "script_examples",
    "custom_nodes",
    "models",
    "input",
    "output",
}


@dataclass
class NodeResult:
    """What one node execution produced: its outputs (one entry per output socket) and ui dict."""

    outputs: tuple[Any, ...]
    ui: dict[str, Any]


@dataclass
class ComfyModules:
    """ComfyUI imported into this process."""

    comfy_dir: Path
    base_dir: Path
    nodes: ModuleType
    folder_paths: ModuleType
    execution: ModuleType
    model_management: ModuleType
    args: Any
    _pack: ModuleType | None = field(default=None, repr=False)

    def node_class(self, node_id: str) -> type:
        """The class registered under ``node_id`` (core, extras or loaded pack)."""
        try:
            return self.nodes.NODE_CLASS_MAPPINGS[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} registered in ComfyUI") from None

    def load_pack(self) -> ModuleType:
        """Load this pack through ComfyUI's ``load_custom_node`` (as the server does) and return the
        module; raise :class:`ComfyError` with ComfyUI's logged reason if it fails."""
        if self._pack is not None:
            return self._pack
        path = self.base_dir / "custom_nodes" / PACK_FOLDER
        records: list[str] = []

        class _Grab(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record.getMessage())

        handler = _Grab(logging.WARNING)
        logging.getLogger().addHandler(handler)
        try:
            ok = asyncio.run(self.nodes.load_custom_node(str(path), module_parent="custom_nodes"))
        finally:
            logging.getLogger().removeHandler(handler)
        if not ok:
            raise ComfyError(f"ComfyUI could not load the pack from {path}:\n" + "\n".join(records))
        self._pack = sys.modules[str(path).replace(".", "_x_")]
        return self._pack

    def run_node(self, node: str | type, unique_id: str = "1", **inputs: Any) -> NodeResult:
        """Execute one node with literal ``inputs`` through ComfyUI's own execution code (V1 and V3),
        under ``torch.inference_mode()`` like a real prompt; hidden inputs get ``unique_id``/empty
        prompt. Exceptions propagate unchanged."""
        import torch

        ex = self.execution
        cls = self.node_class(node) if isinstance(node, str) else node
        data, _, hidden = ex.get_input_data(inputs, cls, unique_id)
        obj = cls()

        async def _run() -> tuple[list[Any], dict[str, Any]]:
            out, ui, _, pending = await ex.get_output_data(
                "in-process", unique_id, obj, data, hidden_inputs=hidden
            )
            if pending:  # an async node still running: ``out`` holds its tasks
                results = await ex.resolve_map_node_over_list_results(out)
                out, ui, _ = ex.get_output_from_returns(results, obj)
            return out, ui

        with torch.inference_mode():
            out, ui = asyncio.run(_run())
        is_list = getattr(cls, "OUTPUT_IS_LIST", None) or [False] * len(out)
        return NodeResult(
            tuple(v if lst or len(v) != 1 else v[0] for v, lst in zip(out, is_list, strict=False)),
            ui,
        )


_IMPORTED: ComfyModules | None = None


def _evict_shadowing_modules(comfy_dir: Path) -> list[str]:
    """Drop cached modules whose top-level name is a ComfyUI module but which live elsewhere."""
    names = {p.stem for p in comfy_dir.glob("*.py")}
    names |= {p.name for p in comfy_dir.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names -= _NOT_MODULES
    evicted = []
    for mod_name in list(sys.modules):
        top = mod_name.partition(".")[0]
        if top not in names:
            continue
        mod = sys.modules[mod_name]
        files = [getattr(mod, "__file__", None) or "", *list(getattr(mod, "__path__", []) or [])]
        if not any(f and Path(f).resolve().is_relative_to(comfy_dir) for f in files):
            del sys.modules[mod_name]
            evicted.append(mod_name)
    return evicted


def import_comfy(
    base_dir: Path | None = None, *, extras: bool = True, cpu: bool = True
) -> ComfyModules:
    """Import the real ComfyUI into this process (once; later calls return the same modules).

    ``base_dir`` becomes ComfyUI's ``--base-directory`` (models/input/output/temp/custom_nodes; it is
    made with :func:`make_base`, so the pack is linked there); default ``.cache/comfy_base``.
    ``extras`` also registers the ``comfy_extras`` nodes (``MaskToImage``, ...), as the server does.
    """
    global _IMPORTED
    if _IMPORTED is not None:
        return _IMPORTED
    comfy_dir = provide().resolve()
    base = make_base(base_dir) if base_dir is not None else make_base()
    if str(comfy_dir) in sys.path:
        sys.path.remove(str(comfy_dir))
    sys.path.insert(0, str(comfy_dir))
    _evict_shadowing_modules(comfy_dir)

    from comfy.cli_args import args  # parses no argv: comfy.options.args_parsing is False

    if "comfy.model_management" in sys.modules and args.cpu != cpu:
        raise ComfyError(
            "comfy.model_management was imported before import_comfy(); args.cpu is fixed"
        )
    args.cpu = cpu
    args.base_directory = str(base)  # read by folder_paths at import
    args.disable_api_nodes = True

    # order matters: model_management reads args.cpu, folder_paths reads args.base_directory
    model_management = importlib.import_module("comfy.model_management")
    folder_paths = importlib.import_module("folder_paths")
    nodes = importlib.import_module("nodes")
    execution = importlib.import_module("execution")

    if Path(nodes.__file__).resolve() != comfy_dir / "nodes.py":
        raise ComfyError(f"`import nodes` resolved to {nodes.__file__}, not ComfyUI's nodes.py")
    if extras:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    _IMPORTED = ComfyModules(
        comfy_dir, base, nodes, folder_paths, execution, model_management, args
    )
    return _IMPORTED
