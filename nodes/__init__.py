"""BokehMe ComfyUI nodes (V1 node classes: they load in every ComfyUI and are testable without it).

Each module of this package defines ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``; they are
merged here. Node ids are stable forever: saved workflows store them.
"""

from __future__ import annotations

import importlib

_NODE_MODULES = ("disparity", "focus", "render", "lens", "neural", "depth")

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

for _name in _NODE_MODULES:
    _module = importlib.import_module(f".{_name}", __name__)
    for _key in _module.NODE_CLASS_MAPPINGS:
        if _key in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"BokehMe: node id {_key!r} is defined twice")
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
