"""No Token Left Behind — ComfyUI entry point (V3 schema): the node list and the web extension.

Outside ComfyUI (pytest collecting the repository, ``python -m relevancy``) there is no
``comfy_api``; the module then defines nothing but ``WEB_DIRECTORY``.
"""

import logging

WEB_DIRECTORY = "./web"

try:
    from comfy_api.latest import ComfyExtension, io
except ImportError:  # not running inside ComfyUI ≥ 0.3.75
    logging.getLogger(__name__).warning(
        "No Token Left Behind nodes need ComfyUI >= 0.3.75 (the V3 node API, comfy_api.latest); "
        "update ComfyUI to use them."
    )
else:
    from .nodes import NODES, install_sample_images, register_model_folder

    register_model_folder()
    install_sample_images()  # the example workflows' sample image, into ComfyUI's input folder

    class NoTokenLeftBehind(ComfyExtension):
        """Registers the pack's nodes."""

        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return list(NODES)

    async def comfy_entrypoint() -> NoTokenLeftBehind:
        """Called by ComfyUI when it loads the pack."""
        return NoTokenLeftBehind()
