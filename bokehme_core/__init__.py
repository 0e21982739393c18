"""BokehMe for ComfyUI: the pure core library.

Peng et al., "BokehMe: When Neural Rendering Meets Classical Rendering", CVPR 2022
(official code: https://github.com/JuewenPeng/BokehMe). This package re-implements it from the paper and
the documented official behaviour; it never imports ComfyUI.

Conventions (the same in every docstring of this package):

* image: float tensor (B, 3, H, W), sRGB values in [0, 1];
* disparity: float tensor (B, 1, H, W) in [0, 1], 1 = near;
* K: blur radius in pixels per unit of disparity (blur radius = K * |disparity - focus|);
* focus: the in-focus disparity in [0, 1];
* signed defocus: pixels, positive = nearer than the focus plane.

The public names below are imported lazily on first use, so ``import bokehme_core`` is cheap and has no
side effects.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    # classical renderer
    "Aperture": "aperture",
    "render_classical": "scatter",
    "ClassicalResult": "scatter",
    # defocus, focus, disparity
    "signed_defocus": "defocus",
    "focus_from_point": "focus",
    "focus_from_mask": "focus",
    "load_disparity": "disparity",
    "normalize_disparity": "disparity",
    "depth_to_disparity": "disparity",
    "repair_nonfinite": "disparity",
    "deband": "disparity",
    "read_image": "image_io",
    "write_image": "image_io",
    "apply_highlight": "defocus",
    # error map and fusion
    "analytic_error_map": "error_map",
    "fuse": "fusion",
    # neural renderer and pipeline
    "ARNet": "models.arnet",
    "IUNet": "models.iunet",
    "load_arnet": "models.checkpoints",
    "load_iunet": "models.checkpoints",
    "render_bokehme": "pipeline",
    "BokehMeResult": "pipeline",
    # disparity estimation
    "load_depth_model": "models.depth",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'bokehme_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
