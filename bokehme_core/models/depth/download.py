"""Download of the official Depth Anything V2 checkpoints from Hugging Face, on explicit request only.

Downloads go to a temporary file in the destination folder and are moved into place with ``os.replace``
after a strict load succeeded, so a partial or wrong file never sits under the final name.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Callable

from ..._download import download_verified

logger = logging.getLogger(__name__)

__all__ = ["OFFICIAL_DEPTH_MODELS", "DepthDownloadError", "official_depth_url", "download_depth_model"]

#: short name -> (display name, Hugging Face repository, file name, weights licence)
OFFICIAL_DEPTH_MODELS = {
    "depth_anything_v2_vits": (
        "Depth Anything V2 Small", "depth-anything/Depth-Anything-V2-Small", "depth_anything_v2_vits.pth",
        "Apache-2.0",
    ),
    "depth_anything_v2_vitb": (
        "Depth Anything V2 Base", "depth-anything/Depth-Anything-V2-Base", "depth_anything_v2_vitb.pth",
        "CC-BY-NC-4.0 (non-commercial use only)",
    ),
    "depth_anything_v2_vitl": (
        "Depth Anything V2 Large", "depth-anything/Depth-Anything-V2-Large", "depth_anything_v2_vitl.pth",
        "CC-BY-NC-4.0 (non-commercial use only)",
    ),
}



class DepthDownloadError(RuntimeError):
    """The download failed or produced a file that is not the expected network (the message says how to
    get the file by hand)."""


def official_depth_url(name: str) -> str:
    """``https://huggingface.co/<repo>/resolve/main/<file>`` of an :data:`OFFICIAL_DEPTH_MODELS` entry."""
    if name not in OFFICIAL_DEPTH_MODELS:
        raise ValueError(f"name must be one of {sorted(OFFICIAL_DEPTH_MODELS)}, got {name!r}")
    _, repo, filename, _ = OFFICIAL_DEPTH_MODELS[name]
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"


def download_depth_model(
    name: str,
    dest_dir,
    *,
    url: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Download an official checkpoint into ``dest_dir`` (created if needed) and return its path.

    Args:
        name: a key of :data:`OFFICIAL_DEPTH_MODELS` (e.g. "depth_anything_v2_vits").
        dest_dir: destination folder; the file keeps its official name.
        url: source (default: the official Hugging Face URL); ``file://`` and ``http://`` URLs work too.
        progress: ``progress(bytes_done, bytes_total)``; ``bytes_total`` is 0 when the server does not say.
        timeout: network timeout in seconds.
    Raises:
        DepthDownloadError: offline / HTTP error / incomplete / not the expected network; the message gives the
            URL and the path where to save the file by hand.
    """
    from .loading import DepthCheckpointError, load_depth_model

    source = url or official_depth_url(name)
    display, _, filename, licence = OFFICIAL_DEPTH_MODELS[name]
    dest_dir = pathlib.Path(os.fspath(dest_dir)).expanduser()
    target = dest_dir / filename
    by_hand = (
        f"Without internet, download {official_depth_url(name)} on another machine and save it as {target} "
        f"(weights licence: {licence})"
    )
    def verify(path: pathlib.Path, sha: str) -> None:
        # it must load strictly as the expected network before it gets its final name
        try:
            model = load_depth_model(path)
        except (DepthCheckpointError, FileNotFoundError) as exc:
            raise DepthDownloadError(f"the downloaded file is not {display}: {exc}. {by_hand}") from exc
        expected_variant = name.rsplit("_", 1)[-1]
        if model.variant != expected_variant:
            raise DepthDownloadError(f"the downloaded file is {model.variant}, expected {expected_variant}. {by_hand}")

    logger.info("downloading %s (%s) from %s", display, licence, source)
    sha = download_verified(source, target, verify=verify, by_hand=by_hand, error=DepthDownloadError,
                            label=display, progress=progress, timeout=timeout)
    logger.debug("%s sha256 %s", target.name, sha)
    logger.info("saved %s to %s", display, target)
    return target
