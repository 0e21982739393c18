"""The numba kernel of :func:`bokehme_core.synth.lens.render_layers` (imported only when numba is available).

A module-level function on purpose (numba's on-disk cache, ``cache=True``, keys a function by its code and its
closure; see :mod:`bokehme_core.scatter._numba_kernels`).

Same physics and the same sampling as the torch reference (:func:`bokehme_core.synth.lens.render_layers_torch`):
for every output pixel ``(x, y)`` and aperture point ``u``, the ray lands on layer ``L`` at
``p = (x, y) + u * r_L(x, y)``; on a slanted layer (non-constant radius) once more at
``(x, y) + u * r_L(p)`` with ``r_L(p)`` sampled bilinearly (border padding); the premultiplied linear colour
and alpha of the layer are sampled bilinearly there, as ``torch.nn.functional.grid_sample`` does with
``align_corners=True`` (zeros padding for the layers in front, reflection or border padding for layer 0), and
composited "over". The reference composites back to front; here it is front to back (the same sum), which
lets a ray stop once the layers in front of it are opaque (transmittance below :data:`OPAQUE_T`, a change
below 1e-9 of the linear value) and skip, per pixel, the layers whose alpha footprint its rays cannot reach.
Float64 arithmetic, float64 output.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: transmittance below which a ray stops (the layers behind it could change its colour by less than this)
OPAQUE_T = 1e-9


@njit(cache=True, inline="always")
def _reflect(coord, size):
    """grid_sample's ``reflection`` padding with ``align_corners=True``: reflect about 0 and ``size - 1``, then
    clip."""
    if size <= 1:
        return 0.0
    span = size - 1.0
    c = abs(coord)
    flips = math.floor(c / span)
    extra = c - flips * span  # fmod(c, span) for c >= 0
    if flips % 2 == 0:
        c = extra
    else:
        c = span - extra
    return min(span, max(c, 0.0))


@njit(cache=True, inline="always")
def _clip(coord, size):
    """grid_sample's ``border`` padding: clip to ``[0, size - 1]``."""
    return min(size - 1.0, max(coord, 0.0))


@njit(cache=True, inline="always")
def _bilinear_scalar(plane, cx, cy):
    """Bilinear value of the (H, W) ``plane`` at in-range coordinates (border padding already applied)."""
    h, w = plane.shape
    x0 = int(math.floor(cx))
    y0 = int(math.floor(cy))
    fx = cx - x0
    fy = cy - y0
    x1 = min(x0 + 1, w - 1)
    y1 = min(y0 + 1, h - 1)
    top = plane[y0, x0] * (1.0 - fx) + plane[y0, x1] * fx
    bottom = plane[y1, x0] * (1.0 - fx) + plane[y1, x1] * fx
    return top * (1.0 - fy) + bottom * fy


@njit(cache=True, parallel=True)
def render_rows(premult, radius, constant, boxes, reach, samples, pad0, row0, row1, out):
    """Sum over the aperture samples of the linear colour seen through every pixel of the rows
    ``row0 <= y < row1``.

    premult: (L, H, W, 4) float32, premultiplied linear colour and alpha of each layer, back to front.
    radius: (L, H, W) float32 signed blur radius of each layer (px).
    constant: (L,) bool, the layer's radius is one value (no landing-point resampling needed).
    boxes: (L, 4) int64 ``(y_min, y_max, x_min, x_max)`` of the pixels with alpha > 0 (empty: y_min > y_max).
    reach: (L,) float64 largest ``|radius|`` of each layer (px).
    samples: (N, 2) float64 aperture points (x, y) in the unit disk.
    pad0: padding of layer 0 outside the frame: 0 = reflection, 1 = border.
    out: (3, H, W) float64, written for the given rows.
    """
    n_layers, h, w, _ = premult.shape
    n_samples = samples.shape[0]
    # A layer of one radius: every ray of sample s lands at the same offset from its pixel, so the integer
    # offset and the bilinear weights are computed once (x + floor(d) == floor(x + d) for integer x).
    offset_x = np.zeros((n_layers, n_samples), np.int64)
    offset_y = np.zeros((n_layers, n_samples), np.int64)
    weights = np.zeros((n_layers, n_samples, 4), np.float64)
    for layer in range(n_layers):
        if not constant[layer]:
            continue
        r = float(radius[layer, 0, 0])
        for s in range(n_samples):
            dx = samples[s, 0] * r
            dy = samples[s, 1] * r
            ix = math.floor(dx)
            iy = math.floor(dy)
            fx = dx - ix
            fy = dy - iy
            offset_x[layer, s] = int(ix)
            offset_y[layer, s] = int(iy)
            weights[layer, s, 0] = (1.0 - fx) * (1.0 - fy)
            weights[layer, s, 1] = fx * (1.0 - fy)
            weights[layer, s, 2] = (1.0 - fx) * fy
            weights[layer, s, 3] = fx * fy
    for y in prange(row0, row1):
        active = np.empty(n_layers, np.int64)
        for x in range(w):
            # layers whose rays from this pixel can reach a pixel with alpha > 0 (bilinear footprint: +1 px),
            # front to back; layer 0 (the padded background) always
            n_active = 0
            for layer in range(n_layers - 1, -1, -1):
                if layer > 0:
                    r = reach[layer] + 1.0
                    if (boxes[layer, 0] > boxes[layer, 1] or y + r < boxes[layer, 0] or y - r > boxes[layer, 1]
                            or x + r < boxes[layer, 2] or x - r > boxes[layer, 3]):
                        continue
                active[n_active] = layer
                n_active += 1
            sum0 = 0.0
            sum1 = 0.0
            sum2 = 0.0
            for s in range(n_samples):
                ux = samples[s, 0]
                uy = samples[s, 1]
                transmit = 1.0
                for k in range(n_active):
                    layer = active[k]
                    if constant[layer]:
                        x0 = x + offset_x[layer, s]
                        y0 = y + offset_y[layer, s]
                        if 0 <= x0 < w - 1 and 0 <= y0 < h - 1:  # fast path: precomputed weights
                            w00 = weights[layer, s, 0]
                            w01 = weights[layer, s, 1]
                            w10 = weights[layer, s, 2]
                            w11 = weights[layer, s, 3]
                            p00 = premult[layer, y0, x0]
                            p01 = premult[layer, y0, x0 + 1]
                            p10 = premult[layer, y0 + 1, x0]
                            p11 = premult[layer, y0 + 1, x0 + 1]
                            va = w00 * p00[3] + w01 * p01[3] + w10 * p10[3] + w11 * p11[3]
                            if va == 0.0:
                                continue
                            sum0 += transmit * (w00 * p00[0] + w01 * p01[0] + w10 * p10[0] + w11 * p11[0])
                            sum1 += transmit * (w00 * p00[1] + w01 * p01[1] + w10 * p10[1] + w11 * p11[1])
                            sum2 += transmit * (w00 * p00[2] + w01 * p01[2] + w10 * p10[2] + w11 * p11[2])
                            transmit *= 1.0 - va
                            if transmit < OPAQUE_T:
                                break
                            continue
                    r = float(radius[layer, y, x])
                    cx = x + ux * r
                    cy = y + uy * r
                    if not constant[layer]:
                        r = _bilinear_scalar(radius[layer], _clip(cx, w), _clip(cy, h))
                        cx = x + ux * r
                        cy = y + uy * r
                    if layer == 0 and not (0.0 <= cx <= w - 1.0 and 0.0 <= cy <= h - 1.0):
                        if pad0 == 0:
                            cx = _reflect(cx, w)
                            cy = _reflect(cy, h)
                        else:
                            cx = _clip(cx, w)
                            cy = _clip(cy, h)
                    x0 = int(math.floor(cx))
                    y0 = int(math.floor(cy))
                    fx = cx - x0
                    fy = cy - y0
                    if 0 <= x0 < w - 1 and 0 <= y0 < h - 1:  # all four neighbours inside (most rays)
                        w00 = (1.0 - fx) * (1.0 - fy)
                        w01 = fx * (1.0 - fy)
                        w10 = (1.0 - fx) * fy
                        w11 = fx * fy
                        p00 = premult[layer, y0, x0]
                        p01 = premult[layer, y0, x0 + 1]
                        p10 = premult[layer, y0 + 1, x0]
                        p11 = premult[layer, y0 + 1, x0 + 1]
                        va = w00 * p00[3] + w01 * p01[3] + w10 * p10[3] + w11 * p11[3]
                        if va == 0.0:
                            continue  # transparent here (premultiplied colour is 0 too)
                        v0 = w00 * p00[0] + w01 * p01[0] + w10 * p10[0] + w11 * p11[0]
                        v1 = w00 * p00[1] + w01 * p01[1] + w10 * p10[1] + w11 * p11[1]
                        v2 = w00 * p00[2] + w01 * p01[2] + w10 * p10[2] + w11 * p11[2]
                    else:
                        if x0 < -1 or x0 >= w or y0 < -1 or y0 >= h:
                            continue  # all four neighbours outside the frame: zeros padding
                        v0 = 0.0
                        v1 = 0.0
                        v2 = 0.0
                        va = 0.0
                        for dy in range(2):
                            yy = y0 + dy
                            if yy < 0 or yy >= h:
                                continue
                            wy = fy if dy == 1 else 1.0 - fy
                            for dx in range(2):
                                xx = x0 + dx
                                if xx < 0 or xx >= w:
                                    continue
                                wgt = wy * (fx if dx == 1 else 1.0 - fx)
                                v0 += wgt * premult[layer, yy, xx, 0]
                                v1 += wgt * premult[layer, yy, xx, 1]
                                v2 += wgt * premult[layer, yy, xx, 2]
                                va += wgt * premult[layer, yy, xx, 3]
                    sum0 += transmit * v0
                    sum1 += transmit * v1
                    sum2 += transmit * v2
                    transmit *= 1.0 - va
                    if transmit < OPAQUE_T:
                        break
            out[0, y, x] = sum0
            out[1, y, x] = sum1
            out[2, y, x] = sum2
