"""ComfyUI entry point of the BokehMe node pack.

ComfyUI imports this file from ``custom_nodes/<pack>/``; it only collects the node classes. The pure
library lives in ``bokehme_core`` and never imports ComfyUI.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
