"""Networks of the neural renderer (ARNet, IUNet), their checkpoint loading and the official download.

Peng et al., "BokehMe: When Neural Rendering Meets Classical Rendering", CVPR 2022,
https://github.com/JuewenPeng/BokehMe. Depth models live in :mod:`bokehme_core.models.depth`.
Imports are lazy so that ``import bokehme_core.models`` costs nothing.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "ARNet": "arnet",
    "IUNet": "iunet",
    "load_arnet": "checkpoints",
    "load_iunet": "checkpoints",
    "load_state_dict_file": "checkpoints",
    "save_safetensors": "checkpoints",
    "CheckpointError": "checkpoints",
    "download_official": "download",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'bokehme_core.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
