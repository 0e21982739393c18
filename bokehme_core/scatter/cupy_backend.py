"""The CuPy backend of the classical renderer (CUDA tensors, optional ``cupy``): one cell, exact mode without a
lens shape for circle and polygon apertures; one thread per source pixel, the official O(r^2) loop.

The backend's declaration (read by :mod:`.table`): :data:`NAME`, :func:`available`, :data:`CELLS`. Every other
cell on CUDA (fast, layered, mask apertures, lens shapes) is the torch backend's, which runs on CUDA tensors; so
is the dilation. ``cupy`` is imported lazily. The kernel is the official one written out (soft circle / polygon
/ anamorphic window, float atomics), accumulating in float32 like upstream.
"""

from __future__ import annotations

import functools
import logging
import math

import torch

from ..aperture import Aperture
from .common import Cell, per_image

__all__ = ["NAME", "available", "CELLS", "DILATE", "scatter_exact_cupy"]

NAME = "cupy"
#: what :func:`available` needs, for the table's error message
NEEDS = "CUDA tensors and the optional cupy package with a CUDA device"

logger = logging.getLogger(__name__)

#: most window cells one kernel launch visits (progress is reported between launches)
LAUNCH_CELLS = 1 << 32

_SOURCE = r"""
extern "C" __global__
void bokeh_scatter(const float* image, const float* defocus, float* acc, const int H, const int W,
                   const int shape, const int blades, const float rotation, const float ax, const float ay,
                   const int p_lo, const int p_hi)
{
    const int p = p_lo + blockDim.x * blockIdx.x + threadIdx.x;
    if (p >= p_hi) return;
    const int y = p / W;
    const int x = p - y * W;
    const float r = fabsf(defocus[p]);
    const float w0 = 1.0f / (r * r + 0.2f);
    const float cr = image[p], cg = image[H * W + p], cb = image[2 * H * W + p];
    const int wx = (int)floorf(r * ax) + 1;
    const int wy = (int)floorf(r * ay) + 1;
    const float a1 = 2.0f * 3.14159265358979f / (float)(blades > 0 ? blades : 1);
    const float a2 = 1.57079632679490f - 3.14159265358979f / (float)(blades > 0 ? blades : 1);
    for (int dy = -wy; dy <= wy; ++dy) {
        const int ty = y + dy;
        if (ty < 0 || ty >= H) continue;
        for (int dx = -wx; dx <= wx; ++dx) {
            const int tx = x + dx;
            if (tx < 0 || tx >= W) continue;
            const float sx = (float)dx / ax, sy = (float)dy / ay;
            const float dist = sqrtf(sx * sx + sy * sy);
            float edge = r;
            if (shape == 1) {
                const float phi = fmodf(fabsf(atan2f(sy, sx) + rotation), a1);
                edge = r * sinf(a2) / sinf(phi + a2);
            }
            const float w = (0.5f + 0.5f * tanhf(4.0f * (edge - dist))) * w0;
            const int t = ty * W + tx;
            atomicAdd(acc + t, w * cr);
            atomicAdd(acc + H * W + t, w * cg);
            atomicAdd(acc + 2 * H * W + t, w * cb);
            atomicAdd(acc + 3 * H * W + t, w);
        }
    }
}
"""


def available(device: torch.device | str | None = None) -> bool:
    """True when CuPy imports and sees a CUDA device, and ``device`` (None: any) is a CUDA device."""
    if device is not None and torch.device(device).type != "cuda":
        return False
    return _cupy_imports()


@functools.lru_cache(maxsize=1)
def _cupy_imports() -> bool:
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception as err:  # ImportError, or CUDA driver errors raised by cupy
        logger.debug("CuPy backend unavailable: %s", err)
        return False


@functools.lru_cache(maxsize=1)
def _kernel():
    import cupy

    return cupy.RawKernel(_SOURCE, "bokeh_scatter")


def scatter_exact_cupy(image: torch.Tensor, defocus_px: torch.Tensor, aperture: Aperture, progress=None):
    """Same contract as :func:`bokehme_core.scatter.exact.scatter_exact`, for CUDA tensors and circle/polygon."""
    import cupy

    ax, ay = aperture.axis_scale
    shape = 1 if aperture.kind == "polygon" else 0

    def one(image_b, defocus_b, sub):
        _, H, W = image_b.shape
        with cupy.cuda.Device(image_b.device.index or 0):
            img = cupy.from_dlpack(image_b.contiguous().to(torch.float32).detach())
            dfc = cupy.from_dlpack(defocus_b.contiguous().to(torch.float32).detach())
            acc = cupy.zeros((4, H, W), dtype=cupy.float32)
            threads = 256
            # bands of source rows, each launch visiting at most LAUNCH_CELLS window cells; progress after each
            rmax = float(defocus_b.abs().max())
            window = (2 * math.floor(rmax * ax) + 3) * (2 * math.floor(rmax * ay) + 3)
            band = max(1, LAUNCH_CELLS // max(1, W * window))
            for row_lo in range(0, H, band):
                row_hi = min(row_lo + band, H)
                blocks = math.ceil((row_hi - row_lo) * W / threads)
                _kernel()(
                    (blocks,), (threads,),
                    (img, dfc, acc, cupy.int32(H), cupy.int32(W), cupy.int32(shape), cupy.int32(aperture.blades),
                     cupy.float32(aperture.rotation), cupy.float32(ax), cupy.float32(ay), cupy.int32(row_lo * W),
                     cupy.int32(row_hi * W)),
                )
                if sub is not None:
                    cupy.cuda.get_current_stream().synchronize()
                    sub(row_hi, H)
            acc_t = torch.from_dlpack(acc)
            return acc_t[:3] / acc_t[3:4]

    return per_image(image, defocus_px, one, progress)


# ------------------------------------------------------------------------------------------ the declaration
#: the cells this backend runs (mode, lens shape, apertures): see :mod:`.table`
CELLS = (Cell(NAME, "exact", "plain", scatter_exact_cupy, ("circle", "polygon")),)
#: no dilation of its own: the table uses the torch one (on CUDA tensors)
DILATE = None
