"""The numba kernel of :func:`bokehme_core.analytic_error_map` (imported only when numba is available).

A module-level function on purpose (numba's on-disk cache, ``cache=True``, keys a function by its code and its
closure; see :mod:`bokehme_core.scatter._numba_kernels`).
"""

from __future__ import annotations

import math

from numba import njit, prange


@njit(cache=True, parallel=True)
def error_rows(radius, row0, row1, search, eq2, delta1, delta2, tanh_slope, front_only, out):
    """``out[y, x] = max over offsets (dy, dx) of pairwise_error(dist, radius[y, x], radius[y + dy, x + dx])``
    for the rows ``row0 <= y < row1``: the same disk of offsets (``0 < dy^2 + dx^2 < (search + 1)^2``), the same
    formula and the same special cases as the torch loop of :func:`bokehme_core.error_map.analytic_error_map`
    (neighbours outside the image contribute nothing). Pairs with ``dist >= max(|r_p|, |r_q|)`` are skipped
    (their Eq. 5 falloff and their Eq. 2 indicator are 0). Float64 arithmetic, float32 output.

    radius: (h, w) float32 signed radii (px); out: (h, w) float32; ``front_only``: count a pair only when its
    nearer pixel (larger signed radius) is the more blurred one.
    """
    h, w = radius.shape
    reach = (search + 1) * (search + 1)
    for y in prange(row0, row1):
        for x in range(w):
            rp = float(radius[y, x])
            ap = abs(rp)
            best = 0.0
            for dy in range(-search, search + 1):
                yy = y + dy
                if yy < 0 or yy >= h:
                    continue
                for dx in range(-search, search + 1):
                    d2 = dy * dy + dx * dx
                    if d2 == 0 or d2 >= reach:
                        continue
                    xx = x + dx
                    if xx < 0 or xx >= w:
                        continue
                    rq = float(radius[yy, xx])
                    aq = abs(rq)
                    if ap == aq:
                        continue  # no edge (also: both sharp)
                    largest = max(ap, aq)
                    dist = math.sqrt(d2)
                    if dist >= largest:
                        continue
                    if front_only:
                        front = rp if rp >= rq else rq
                        back = rq if rp >= rq else rp
                        if abs(front) <= abs(back):
                            continue
                    beta = min(ap, aq) / largest
                    alpha = dist / largest
                    if eq2:
                        e = 1.0 if beta < delta2 else 0.0
                    else:
                        e = (1.0 - alpha**delta1) * (0.5 + 0.5 * math.tanh(tanh_slope * (delta2 - beta)))
                    if e > best:
                        best = e
            out[y, x] = best
