"""A whole lens character, as the BokehMe Lens node, the CLI and :func:`bokehme_core.render_bokehme` carry it.

:class:`Lens` holds two parts that act at different stages of a render:

* the **shape** (cat's eye, swirl, soap-bubble ring, colour fringe): :attr:`Lens.shape`, a
  :class:`bokehme_core.aperture.LensShape`, the only lens argument of :func:`bokehme_core.render_classical`;
* the **pre-render** options (highlight lift, focus range, near / far scales): :attr:`Lens.pre_render`, keyword
  arguments of :func:`bokehme_core.render_inputs` (their defaults: :data:`bokehme_core.defocus.PRE_RENDER_DEFAULTS`).

So a render with a lens reads::

    image, defocus = render_inputs(image, disparity, K, focus, **lens.pre_render)
    bokeh = render_classical(image, defocus, lens=lens.shape).bokeh
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import check_range
from .aperture import LENS_SHAPE_RANGES, LensShape
from .defocus import PRE_RENDER_DEFAULTS, PRE_RENDER_RANGES, lift_highlights, signed_defocus

__all__ = ["Lens", "LENS_RANGES"]

#: option -> (lowest, highest) accepted value, every option of :class:`Lens` (the node's widgets and CLI flags)
LENS_RANGES = {**LENS_SHAPE_RANGES, **PRE_RENDER_RANGES}

_DEFOCUS_OPTIONS = ("focus_range", "near_scale", "far_scale")


@dataclass(frozen=True)
class Lens:
    """Lens character: the lens shape and the pre-render options in one value (every field at its default = the
    plain aperture and the plain inputs, exactly).

    Immutable, comparable and hashable (ComfyUI caches on it). Out-of-range values raise ValueError naming the
    option and its range (:data:`LENS_RANGES`).

    Fields (shape): ``cat_eye``, ``swirl``, ``ring``, ``fringe``, as documented on
        :class:`bokehme_core.aperture.LensShape` (:attr:`shape` builds one).
    Fields (pre-render, :func:`bokehme_core.render_inputs`):
        highlight_threshold: 0..1, sRGB level above which lights are lifted (:func:`bokehme_core.lift_highlights`).
        highlight_gain: 1..50, linear-light gain of the brightest lights (1 = off).
        focus_range: 0..1, width in disparity units of the band around the focus that stays fully sharp.
        near_scale, far_scale: 0..10, blur growth in front of / behind the focus band, relative to K.
    """

    cat_eye: float = 0.0
    swirl: float = 0.0
    ring: float = 0.0
    fringe: float = 0.0
    highlight_threshold: float = PRE_RENDER_DEFAULTS["highlight_threshold"]
    highlight_gain: float = PRE_RENDER_DEFAULTS["highlight_gain"]
    focus_range: float = PRE_RENDER_DEFAULTS["focus_range"]
    near_scale: float = PRE_RENDER_DEFAULTS["near_scale"]
    far_scale: float = PRE_RENDER_DEFAULTS["far_scale"]

    def __post_init__(self):
        for name, (lo, hi) in LENS_RANGES.items():
            object.__setattr__(self, name, check_range(getattr(self, name), name, lo, hi))

    @property
    def shape(self) -> LensShape:
        """The shape part: the ``lens`` argument of :func:`bokehme_core.render_classical`."""
        return LensShape(**{name: getattr(self, name) for name in LENS_SHAPE_RANGES})

    @property
    def pre_render(self) -> dict:
        """The pre-render part: keyword arguments of :func:`bokehme_core.render_inputs`."""
        return {name: getattr(self, name) for name in PRE_RENDER_RANGES}

    @property
    def is_neutral(self) -> bool:
        """True when every option is at its no-effect value (the renderers give the output without a lens)."""
        return self.shape.is_neutral and self.highlight_gain == 1.0 and all(
            getattr(self, name) == PRE_RENDER_DEFAULTS[name] for name in _DEFOCUS_OPTIONS)

    def signed_defocus(self, disparity: torch.Tensor, K: float, focus) -> torch.Tensor:
        """:func:`bokehme_core.signed_defocus` with this lens's focus range and near / far scales (pixels)."""
        return signed_defocus(disparity, K, focus, **{name: getattr(self, name) for name in _DEFOCUS_OPTIONS})

    def lift_highlights(self, image: torch.Tensor) -> torch.Tensor:
        """:func:`bokehme_core.lift_highlights` with this lens's threshold and gain (``image`` itself at gain 1)."""
        return lift_highlights(image, self.highlight_threshold, self.highlight_gain)
