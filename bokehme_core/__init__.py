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

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it, in pipeline order
_PUBLIC = {
    # disparity estimation and preparation
    "load_depth_model": "depth",
    "load_disparity": "disparity",
    "prepare_disparity": "disparity",
    "normalize_disparity": "disparity",
    "depth_to_disparity": "disparity",
    "repair_nonfinite": "disparity",
    "deband": "disparity",
    "refine_disparity": "disparity",
    # focus, defocus, highlights
    "focus_from_point": "focus",
    "focus_from_mask": "focus",
    "signed_defocus": "defocus",
    "apply_highlight": "defocus",
    "render_inputs": "defocus",
    "lift_highlights": "defocus",
    "recover_highlights": "defocus",
    # classical renderer
    "Aperture": "aperture",
    "LensShape": "aperture",
    "Lens": "lens",
    "render_classical": "scatter",
    "ClassicalResult": "scatter",
    # neural renderer
    "ARNet": "neural",
    "IUNet": "neural",
    "render_neural": "neural",
    # weights
    "load_arnet": "weights",
    "load_iunet": "weights",
    "load_bundled_models": "weights",
    "CheckpointError": "weights",
    # error map, fusion, the whole pipeline
    "analytic_error_map": "error_map",
    "fuse": "fusion",
    "render_bokehme": "pipeline",
    "BokehMeResult": "pipeline",
    # files
    "read_image": "image_io",
    "write_image": "image_io",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _PUBLIC)
__all__ = [*__all__, "__version__"]
