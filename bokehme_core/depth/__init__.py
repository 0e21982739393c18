"""Monocular disparity estimation: Depth Anything V2 and MiDaS v3 DPT, loaded from the official checkpoints.

* Depth Anything V2 (Yang et al., NeurIPS 2024, https://github.com/DepthAnything/Depth-Anything-V2):
  ``depth_anything_v2_vit{s,b,l}.pth``; Small weights Apache-2.0, Base/Large CC-BY-NC-4.0.
* MiDaS v3 DPT (Ranftl et al., ICCV 2021 / TPAMI 2022, https://github.com/isl-org/MiDaS, MIT):
  ``dpt_hybrid_384.pt``, ``dpt_large_384.pt``.

Backbones come from timm, the DPT heads are written here; a prefix-table converter maps the official key
names onto these modules so the official files load strictly. Both families output relative inverse depth
(larger = nearer), which :meth:`DepthModel.estimate` normalises to disparity in [0, 1] (1 = near).

Checkpoints are read and checked by the pack's one weights reader (:mod:`bokehme_core.weights`), which also
gathers their provenance (declared beside the class: ``PRETRAINED`` of :mod:`.depth_anything_v2`) and downloads
them (:func:`download_depth_model` passes the depth loader that verifies a download).

Imports are lazy: ``import bokehme_core.depth`` does not import timm.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "load_depth_model": "loading",
    "download_depth_model": "loading",
    "model_from_state_dict": "loading",
    "read_state_dict": "loading",
    "detect_architecture": "loading",
    "build_model": "loading",
    "official_key_table": "loading",
    "to_official_state_dict": "loading",
    "DepthCheckpointError": "loading",
    "DepthDownloadError": "loading",
    "DepthModel": "base",
    "network_input_size": "base",
    "resize_like_opencv_cubic": "base",
    "DepthAnythingV2": "depth_anything_v2",
    "MiDaSDPT": "midas_dpt",
    "rename_keys": "dpt_blocks",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _PUBLIC)
