"""A slow, obviously-correct loop implementation of the official scatter kernel: the tests' oracle.

It follows docs/official-behaviour.md, section 4 literally: for every source pixel, every target pixel in the window
``[-floor(r)-1, floor(r)+1]^2`` (anamorphic: ``(floor(r*ax)+1, floor(r*ay)+1)``) inside the image gets
``w = profile / (r^2 + 0.2)``; the output is the weighted colour sum divided by the weight sum. Circle and
polygon profiles are written out here independently of :mod:`bokehme_core.aperture` (mask profiles are taken
from the aperture). The dilated defocus is the signed max of ``int(d)`` over sources with ``r >= dist``.
Cost is O(H*W*r^2) Python-level work: only for tiny images.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bokehme_core.aperture import Aperture, LensShape

__all__ = ["render_reference"]


def render_reference(image: torch.Tensor, defocus_px: torch.Tensor, aperture: Aperture | None = None,
                     lens: LensShape | None = None):
    """Reference scatter of one batch. image (B,3,H,W), defocus_px (B,1,H,W) -> (bokeh, dilated), float64 numpy.

    With a ``lens`` (cat's eye, swirl, ring) every source takes ``LensShape.profile * norm`` of its own lens state
    (:meth:`LensShape.fields`) instead of the aperture's profile.
    """
    aperture = aperture or Aperture.circle()
    img = image.detach().cpu().double().numpy()
    dfc = defocus_px.detach().cpu().float().numpy()
    B, _, H, W = img.shape
    out = np.zeros_like(img)
    dil = np.zeros((B, 1, H, W), dtype=np.float64)
    ax, ay = aperture.axis_scale
    for b in range(B):
        acc = np.zeros((4, H, W))
        dmax = np.trunc(dfc[b, 0]).astype(np.float64)
        fields = None
        if lens is not None and not lens.shapes_neutral:
            fields = [t.numpy() for t in lens.fields(aperture, torch.from_numpy(np.abs(dfc[b, 0])))]
        for y in range(H):
            for x in range(W):
                d = float(dfc[b, 0, y, x])
                r = abs(d)
                wx, wy = math.floor(r * ax) + 1, math.floor(r * ay) + 1
                y0, y1 = max(y - wy, 0), min(y + wy, H - 1)
                x0, x1 = max(x - wx, 0), min(x + wx, W - 1)
                ty, tx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
                dy = (ty - y).astype(np.float32)
                dx = (tx - x).astype(np.float32)
                if fields is not None:
                    sx, sy, ring, norm = (float(f[y, x]) for f in fields)
                    prof = lens.profile(aperture, torch.from_numpy(dx), torch.from_numpy(dy),
                                        torch.tensor(r, dtype=torch.float32), sx, sy, ring).double().numpy() * norm
                elif aperture.kind == "circle" and aperture.anamorphic == 1.0:
                    dist = np.sqrt(dx * dx + dy * dy)
                    prof = 0.5 + 0.5 * np.tanh(4.0 * (np.float32(r) - dist))
                elif aperture.kind == "polygon" and aperture.anamorphic == 1.0:
                    n = aperture.blades
                    a1 = 2 * math.pi / n
                    a2 = math.pi / 2 - math.pi / n
                    dist = np.sqrt(dx * dx + dy * dy)
                    phi = np.fmod(np.abs(np.arctan2(dy, dx) + aperture.rotation), a1)
                    edge = r * math.sin(a2) / np.sin(phi + a2)
                    prof = 0.5 + 0.5 * np.tanh(4.0 * (edge - dist))
                else:
                    prof = aperture.profile(torch.from_numpy(dx), torch.from_numpy(dy),
                                            torch.tensor(r, dtype=torch.float32)).double().numpy()
                w = prof / (r * r + 0.2)
                acc[:3, y0:y1 + 1, x0:x1 + 1] += w * img[b, :, y, x][:, None, None]
                acc[3, y0:y1 + 1, x0:x1 + 1] += w
                # dilation (always circular, unscaled window)
                cy0, cy1 = max(y - math.floor(r) - 1, 0), min(y + math.floor(r) + 1, H - 1)
                cx0, cx1 = max(x - math.floor(r) - 1, 0), min(x + math.floor(r) + 1, W - 1)
                cty, ctx = np.mgrid[cy0:cy1 + 1, cx0:cx1 + 1]
                cdist = np.sqrt(((ctx - x) ** 2 + (cty - y) ** 2).astype(np.float32))
                reach = np.float32(r) >= cdist
                region = dmax[cy0:cy1 + 1, cx0:cx1 + 1]
                region[reach] = np.maximum(region[reach], math.trunc(d))
        out[b] = acc[:3] / acc[3:4]
        dil[b, 0] = dmax
    return out, dil
