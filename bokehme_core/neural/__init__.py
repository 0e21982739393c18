"""The neural renderer of BokehMe: ARNet, IUNet, their shared blocks and the two stages that run them.

Peng et al., "BokehMe: When Neural Rendering Meets Classical Rendering", CVPR 2022,
https://github.com/JuewenPeng/BokehMe.

* :mod:`.blocks`: the body both networks share (space-to-depth, residual 3x3 conv stack, tiled evaluation);
* :mod:`.arnet`, :mod:`.iunet`: the two networks (official key layout);
* :mod:`.stages`: adaptive resizing + ARNet, iterative IUNet upsampling, :func:`render_neural`.

Weights (reading, strict loading, downloads, the bundled files) live in :mod:`bokehme_core.weights`.
Imports are lazy so that ``import bokehme_core.neural`` costs nothing.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "ARNet": "arnet",
    "IUNet": "iunet",
    "arnet_stage": "stages",
    "iunet_stage": "stages",
    "render_neural": "stages",
    "adaptive_scale": "stages",
    "lowres_size": "stages",
    "num_iunet_passes": "stages",
    "DEFOCUS_SCALE": "stages",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _PUBLIC)
